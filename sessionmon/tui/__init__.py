"""The monitor: a Textual app over the core. Textual is imported only when the monitor runs."""

from __future__ import annotations

import contextlib
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sessionmon.core.clock import Clock
    from sessionmon.core.config import Settings

DEMO_ACCESS_TTL = 20.0
DEMO_REFRESH_TTL = 180.0


def demo_ttls(settings: Settings) -> Settings:
    """Short TTLs for the demo (countdowns visibly move), unless the user chose TTLs."""
    from sessionmon.core.config import Settings as _Settings

    defaults = _Settings()
    changes = {}
    if settings.access_ttl == defaults.access_ttl:
        changes["access_ttl"] = DEMO_ACCESS_TTL
    if settings.refresh_ttl == defaults.refresh_ttl:
        changes["refresh_ttl"] = DEMO_REFRESH_TTL
    return settings.with_(**changes) if changes else settings


def run_monitor(settings: Settings, *, demo: bool = False, clock: Clock | None = None) -> int:
    """Open the monitor on ``settings`` (with the traffic generator when ``demo``); exit code."""
    from sessionmon.core.clock import SYSTEM_CLOCK
    from sessionmon.core.runtime import open_runtime
    from sessionmon.tui.app import SessionmonApp

    clock = clock or SYSTEM_CLOCK
    if demo:
        settings = demo_ttls(settings)
    runtime = open_runtime(settings, clock=clock)
    generator = None
    try:
        auth = runtime.auth
        if demo:
            from sessionmon.demo import TrafficGenerator

            generator = TrafficGenerator(auth, on_event=None, clock=clock)
            generator.start()
        app = SessionmonApp(
            store=runtime.store,
            blacklist=runtime.blacklist,
            auth=auth,
            settings=settings,
            clock=clock,
        )
        code = app.run()
        return int(code or 0) if app.return_code in (None, 0) else int(app.return_code or 1)
    finally:
        if generator is not None:
            generator.stop()
        with contextlib.suppress(Exception):
            runtime.close()
        sys.stdout.flush()
