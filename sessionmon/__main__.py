from sessionmon.cli import main

raise SystemExit(main())
