"""The monitor: a Textual app over the core. Textual is imported only when the monitor runs.

The monitor opens whatever is wrong at startup, says so in a banner and recovers by itself:

- Database missing. The default path (``$XDG_DATA_HOME/sessionmon/sessions.db``) is created
  empty on first run: that is what a new user expects. A path given with ``--db``,
  ``SESSIONMON_DB`` or the config file is never created: a missing file there is most likely a
  typo or a database not deployed yet, and an empty file at a wrong path would hide that. The
  banner says "Database not found: <path> — waiting for it to appear" and the monitor picks the
  database up as soon as it exists. ``--read-only`` never creates a file; ``--demo`` always does.
- Database corrupt, not a SQLite file, unreadable or locked: the banner says which, and the
  monitor retries with backoff (at once on ``r``).
- Redis unreachable, or the embedded server fails to start: the banner says so, the sessions are
  still shown, and the monitor reconnects (restarting the embedded server) with backoff.

Errors that make running pointless are still one line and exit code 2 before the app opens: bad
settings, for ``--demo`` a database the demo refuses (``DemoRefused``) or cannot write, and a
stderr that is not a terminal (the monitor draws there). With stdout piped (``sessionmon --demo |
tee log``) the monitor is sized from the terminal it draws on (``terminal.driver_class``), not
80x24.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sessionmon.core.clock import Clock
    from sessionmon.core.settings import Settings
    from sessionmon.demo import TrafficGenerator
    from sessionmon.tui.app import SessionmonApp
    from sessionmon.tui.backend import MonitorBackend


def may_create_database(settings: Settings, *, demo: bool = False) -> bool:
    """Whether a missing database file is created: for ``--demo``, and for the default path on
    first run (unless ``--read-only``); never for a path the operator named (a likely typo)."""
    from sessionmon.core.settings import may_create_db

    return demo or may_create_db(settings)


@dataclass
class Monitor:
    """The app and what it runs on; ``close()`` stops the demo and releases the embedded Redis."""

    app: SessionmonApp
    backend: MonitorBackend
    generator: TrafficGenerator | None = None
    _thread: threading.Thread | None = None

    def start_generator(self) -> None:
        """Run the demo's traffic generator in a daemon thread (a crash is logged, not printed)."""
        if self.generator is not None and self._thread is None:
            self._thread = threading.Thread(
                target=self._run_generator, name="sessionmon-demo", daemon=True
            )
            self._thread.start()

    def _run_generator(self) -> None:
        from sessionmon.tui.failures import report_failure

        assert self.generator is not None
        try:
            self.generator.run()
        except Exception as exc:
            report_failure("the demo's traffic generator stopped", exc)

    def close(self) -> None:
        if self.generator is not None:
            self.generator.stop()
        if self._thread is not None:
            self._thread.join(timeout=5)  # let its last step finish before Redis goes away
        self.backend.close()


def build_monitor(
    settings: Settings,
    *,
    demo: bool = False,
    force: bool = False,
    clock: Clock | None = None,
    handle_signals: bool = False,
    backoff: tuple[float, float] = (0.5, 10.0),
) -> Monitor:
    """Everything ``run_monitor`` runs, not started yet (Pilot tests use it with ``run_test``).

    Never raises for a missing or broken database or Redis (the app shows them); raises
    ``SessionmonError`` for the demo's refusal or a database the demo cannot open.
    """
    from sessionmon.core.clock import SYSTEM_CLOCK
    from sessionmon.core.embedded import EmbeddedRedis
    from sessionmon.core.embedded_keeper import EmbeddedKeeper
    from sessionmon.core.errors import DatabaseError, RedisUnavailable
    from sessionmon.core.pending_blacklist import PendingBlacklist
    from sessionmon.core.runtime import connect_for, make_blacklist
    from sessionmon.tui.app import SessionmonApp
    from sessionmon.tui.backend import MonitorBackend
    from sessionmon.tui.poller import Poller

    clock = clock or SYSTEM_CLOCK
    if demo:
        from sessionmon.demo import demo_ttls

        settings = demo_ttls(settings)
    create = may_create_database(settings, demo=demo)
    keeper = None
    start_error = None
    if settings.redis_url:
        url = settings.redis_url
    else:
        # Beside a SQLite file only once it exists; a server database's lives in the data dir.
        make_dir = create or not settings.db.is_sqlite
        keeper = EmbeddedKeeper(EmbeddedRedis(settings.db.anchor), make_dir=make_dir)
        url = keeper.url
        try:
            keeper.start()
        except RedisUnavailable as exc:
            start_error = str(exc)  # the app opens anyway, shows it and keeps trying
    client: Any
    try:
        client = connect_for(settings, url)
        blacklist: Any = make_blacklist(settings, client, clock)
    except RedisUnavailable as exc:
        # A Redis Cluster's layout is read when its client is made: the monitor opens anyway,
        # shows the reason in its banner and keeps trying (each poll that is due).
        client = blacklist = PendingBlacklist(
            lambda: make_blacklist(settings, connect_for(settings, url), clock), exc
        )
    backend = MonitorBackend(
        settings.db,
        blacklist,
        settings=settings,
        clock=clock,
        create_db=create,
        client=client,
        keeper=keeper,
    )
    backend.redis_start_error = start_error
    generator = None
    try:
        if demo or (create and not settings.db.exists()):
            # Now, so that a first run creates the default database (and the demo has one).
            # Otherwise the store opens in a worker on first use (its integrity check reads the
            # whole file: never before the first paint).
            try:
                backend.store()
            except DatabaseError:
                if demo:
                    raise  # the demo cannot run without a database it can write
                # Otherwise the poller reports it in the banner and the store opens later.
        if demo:
            from sessionmon.demo import TrafficGenerator

            generator = TrafficGenerator(backend.auth(), on_event=None, clock=clock, force=force)
        poller = Poller(
            settings.db, blacklist, clock, backoff_start=backoff[0], backoff_cap=backoff[1]
        )
        app = SessionmonApp(
            backend=backend,
            settings=settings,
            clock=clock,
            poller=poller,
            handle_signals=handle_signals,
        )
    except BaseException:
        backend.close()  # releases the embedded Redis: a refused demo leaves nothing running
        raise
    return Monitor(app, backend, generator)


def run_monitor(
    settings: Settings, *, demo: bool = False, force: bool = False, clock: Clock | None = None
) -> int:
    """Open the monitor on ``settings`` (with the traffic generator when ``demo``; ``force``
    lets the demo write into a database holding other sessions); returns the exit code.

    SIGTERM and SIGHUP (terminal closed) quit as cleanly as ``q``: the embedded Redis is left,
    and shut down if no other sessionmon process uses it.
    """
    from sessionmon.core.errors import ConfigError
    from sessionmon.tui.failures import log_to_file, stop_logging_to_file
    from sessionmon.tui.terminal import NOT_A_TERMINAL, draws_on_a_terminal, driver_class

    monitor = build_monitor(settings, demo=demo, force=force, clock=clock, handle_signals=True)
    if not draws_on_a_terminal():
        monitor.close()
        raise ConfigError(NOT_A_TERMINAL)
    log_to_file()
    try:
        monitor.start_generator()
        app = monitor.app
        driver = driver_class()
        if driver is not None:
            app.driver_class = driver
        code = app.run()
        return int(code or 0) if app.return_code in (None, 0) else int(app.return_code or 1)
    finally:
        with contextlib.suppress(Exception):
            monitor.close()
        stop_logging_to_file()
        with contextlib.suppress(Exception):
            sys.stdout.flush()
