"""SVG snapshots of the real app on fixed data, a fixed clock and a fixed terminal size.

After an intended change of the look: ``pytest tests/tui/test_snapshots.py --snapshot-update``,
then look at the SVGs under ``__snapshots__``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from sessionmon.core.blacklist import Blacklist, connect
from sessionmon.core.clock import FrozenClock
from sessionmon.core.store import SqliteStore
from sessionmon.tui import screenshots as shots
from sessionmon.tui.screens.confirm import ConfirmLogout
from sessionmon.tui.screens.help import HelpScreen
from tests.tui.conftest import wait_for


@pytest.fixture
def fixed(tmp_path: Path, redis_client: redis.Redis, prefix: str, utc: None) -> Iterator[tuple]:
    """The screenshot data in this test's own DB and Redis prefix, with a frozen clock."""
    clock = FrozenClock(shots.NOW)
    store = SqliteStore(tmp_path / "sessions.db", clock=clock)
    blacklist = Blacklist(redis_client, prefix=prefix, leeway=10, clock=clock)
    shots.seed(store, blacklist)
    shots.freeze_latency(blacklist)
    yield store, blacklist, clock
    store.close()


def build(fixed: tuple, blacklist: Blacklist | None = None):
    store, live, clock = fixed
    return shots.build_app(store, blacklist or live, clock, shots.sample_settings(store.location))


def test_main_screen(snap_compare, fixed):
    assert snap_compare(build(fixed), terminal_size=shots.SIZE, run_before=shots.settle)


def test_confirm_dialog(snap_compare, fixed):
    async def open_dialog(pilot) -> None:
        await shots.settle(pilot)
        await pilot.press("down", "down", "l")
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, ConfirmLogout), "dialog")
        await pilot.pause()

    assert snap_compare(build(fixed), terminal_size=shots.SIZE, run_before=open_dialog)


def test_help_screen(snap_compare, fixed):
    async def open_help(pilot) -> None:
        await shots.settle(pilot)
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, HelpScreen), "help")
        await pilot.pause()

    assert snap_compare(build(fixed), terminal_size=shots.SIZE, run_before=open_help)


def test_redis_down(snap_compare, fixed, prefix: str):
    _, _, clock = fixed
    client = connect(shots.dead_redis_url(), timeout=0.3)
    down = Blacklist(client, prefix=prefix, leeway=10, clock=clock)
    try:
        app = build(fixed, down)
        assert snap_compare(app, terminal_size=shots.SIZE, run_before=shots.settle)
    finally:
        client.close()


def test_blacklist_filtered(snap_compare, fixed):
    async def filter_blacklist(pilot) -> None:
        await shots.settle(pilot)
        await shots.blacklist_filtered(pilot)
        await wait_for(pilot, lambda: pilot.app.main.blacklist.row_count == 3, "matches")
        await pilot.pause()

    assert snap_compare(build(fixed), terminal_size=shots.SIZE, run_before=filter_blacklist)


# An SSH session's default terminal and a slightly larger one: the countdowns and the state stay
# on screen, hidden columns are named, the status bar and footer condense (? and q stay).
SMALL = pytest.mark.parametrize("size", [(80, 24), (100, 30)], ids=lambda s: f"{s[0]}x{s[1]}")


@SMALL
def test_sessions_small(snap_compare, fixed, size):
    assert snap_compare(build(fixed), terminal_size=size, run_before=shots.settle)


@SMALL
def test_blacklist_small(snap_compare, fixed, size):
    async def to_blacklist(pilot) -> None:
        await shots.settle(pilot)
        await pilot.press("tab")
        table = pilot.app.main.blacklist
        await wait_for(pilot, lambda: table.loaded and table.row_count == 9, "blacklist")
        await pilot.pause()

    assert snap_compare(build(fixed), terminal_size=size, run_before=to_blacklist)


@SMALL
def test_confirm_small(snap_compare, fixed, size):
    async def open_dialog(pilot) -> None:
        await shots.settle(pilot)
        await pilot.press("down", "down", "l")
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, ConfirmLogout), "dialog")
        await pilot.pause()

    assert snap_compare(build(fixed), terminal_size=size, run_before=open_dialog)


def test_health_view(snap_compare, fixed):
    assert snap_compare(
        build(fixed), terminal_size=shots.SIZE, run_before=_settled(shots.to_health)
    )


def test_history_screen(snap_compare, fixed):
    store, _, _ = fixed
    shots.seed_history(store)
    assert snap_compare(
        build(fixed), terminal_size=shots.SIZE, run_before=_settled(shots.to_history)
    )


def _settled(steps):
    async def run(pilot) -> None:
        await shots.settle(pilot)
        await steps(pilot)

    return run
