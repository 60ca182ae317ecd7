"""Fixtures for the monitor: the real app on the test's SQLite file and Redis, a frozen clock."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator

import pytest

from sessionmon.core.auth import Auth
from sessionmon.core.blacklist import Blacklist
from sessionmon.core.clock import FrozenClock
from sessionmon.core.settings import Settings
from sessionmon.core.store import SessionStore
from sessionmon.tui.app import SessionmonApp
from sessionmon.tui.poller import Poller

SIZE = (160, 45)


async def wait_for(pilot, check: Callable[[], bool], what: str = "", timeout: float = 30.0) -> None:
    """Let the app run until ``check()`` holds (polls run in threads); fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for: {what or check}")
        await pilot.pause(0.02)


async def loaded(pilot) -> None:
    """Wait for the first poll to be on screen."""
    app = pilot.app
    await wait_for(pilot, lambda: app.snapshot is not None and app.model.loaded, "first poll")
    await app.workers.wait_for_complete()
    await pilot.pause()


async def polled(pilot) -> None:
    """Ask for a reload now and wait until a newer poll than the current one has been applied."""
    app = pilot.app
    target = app.polls + (2 if app.polling else 1)  # a running poll may predate the change
    app.request_poll(reload=True, redis_now=True)
    await wait_for(pilot, lambda: app.polls >= target, "a new poll")
    await pilot.pause()


@pytest.fixture
def clock() -> FrozenClock:
    """A frozen clock at a whole second of the real time (Redis TTLs are real; JWT exp is whole
    seconds, so countdowns start at round numbers)."""
    return FrozenClock(float(int(time.time())))


@pytest.fixture
def make_app(
    store: SessionStore, blacklist: Blacklist, auth: Auth, settings: Settings, clock: FrozenClock
) -> Callable[..., SessionmonApp]:
    """Build the app on this test's store, blacklist and clock (``settings`` changes as kwargs)."""

    def build(blacklist: Blacklist = blacklist, **changes: object) -> SessionmonApp:
        s = settings.with_(**{"interval": 0.2, "actor": "tester", **changes})
        poller = Poller(store.location, blacklist, clock, backoff_start=0.1, backoff_cap=0.5)
        return SessionmonApp(
            store=store,
            blacklist=blacklist,
            auth=auth,
            settings=s,
            clock=clock,
            poller=poller,
        )

    return build


@pytest.fixture
def utc() -> Iterator[None]:
    """Local time = UTC, so times on screen are the same on every machine."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if old is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = old
    time.tzset()
