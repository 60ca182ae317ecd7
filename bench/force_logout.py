"""Another process that force-logs-out sessions as ``sessionmon logout`` does:
``python -m bench.force_logout`` with the ``SESSIONMON_*`` environment of the app.

It opens the runtime from the same settings as the CLI, prints ``ready``, then for each session id
read from stdin prints ``<time.time() just before force_logout> <outcome>`` after calling
``Auth.force_logout`` (blacklist first, then delete, audited). An empty line ends it.
"""

from __future__ import annotations

import sys
import time

from sessionmon.core.runtime import open_runtime
from sessionmon.core.settings import load_settings


def main() -> None:
    with open_runtime(load_settings({}), create_db=False) as runtime:
        auth = runtime.auth
        runtime.blacklist.ping()
        print("ready", flush=True)
        for line in sys.stdin:
            sid = line.strip()
            if not sid:
                break
            start = time.time()
            result = auth.force_logout(sid, "bench", "bench")
            print(f"{start:.6f} {result.outcome.value}", flush=True)


if __name__ == "__main__":
    main()
