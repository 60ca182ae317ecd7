"""The health view (doctor's checks, refreshed in a worker, with the injectable clock) and the
history screen (ended sessions, searchable), driven with Pilot on real stores and Redis."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from rich.console import Console

from sessionmon.core.auth import Auth
from sessionmon.core.clock import FrozenClock
from sessionmon.core.doctor import Report, Status
from sessionmon.tui.app import SessionmonApp
from sessionmon.tui.screens.history import HistoryScreen
from sessionmon.tui.widgets.health_view import HealthView, health_table
from tests.tui.conftest import SIZE, loaded, wait_for


def rendered(report: Report) -> str:
    console = Console(record=True, width=160)
    console.print(health_table(report))
    return console.export_text()


async def test_the_health_view_checks_in_a_worker_and_sees_a_skewed_clock(
    make_app: Callable[..., SessionmonApp], auth: Auth, clock: FrozenClock
) -> None:
    session, _, _ = auth.login("u1", "ann@example.com", "Ann")
    auth.logout(session.id)
    app = make_app()
    threads: list[threading.Thread] = []
    health = app.backend.health

    def recording(clock_: object = None) -> Report:
        threads.append(threading.current_thread())
        return health(app.clock)

    app.backend.health = recording  # type: ignore[method-assign]
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("tab", "tab")
        view = app.main.query_one(HealthView)
        assert app.main.current_view == "health" and view.has_focus
        await wait_for(pilot, lambda: view.loads >= 1, "the first check")
        assert threads and threads[0] is not threading.main_thread()
        report = view.report
        assert report is not None and len(report.checks) == 13
        skew = {c.name: c for c in report.checks}["clock_skew"]
        assert skew.status is Status.OK
        assert {c.name: c for c in report.checks}["deleted_but_usable"].status is Status.OK

        clock.set(time.time() + 60)  # this host's clock a minute ahead of Redis
        await pilot.press("r")
        await wait_for(pilot, lambda: view.loads >= 2, "the checks run again")
        report = view.report
        assert report is not None
        skew = {c.name: c for c in report.checks}["clock_skew"]
        assert skew.status is Status.PROBLEM and "Redis -" in skew.figure
        by = float(skew.figure.rsplit("disagree by ", 1)[1].split()[0])
        assert 58 < by < 62
        assert "problem" in rendered(report) and "sync the clocks" in rendered(report)
        assert str(view.border_title) == "Health · problem"
        await pilot.press("tab")  # back to sessions: no more checks while hidden
        assert app.main.current_view == "sessions" and view._timer is None


async def test_the_history_screen_lists_and_searches_ended_sessions(
    make_app: Callable[..., SessionmonApp], auth: Auth, clock: FrozenClock
) -> None:
    ann, _, _ = auth.login("u1", "ann@example.com", "Ann")
    bob, _, _ = auth.login("u2", "bob@example.com", "Bob")
    auth.logout(ann.id)
    clock.advance(10)
    auth.force_logout(bob.id, "alice", "stolen phone")
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("H")
        await wait_for(pilot, lambda: isinstance(app.screen, HistoryScreen), "the history")
        screen = app.screen
        assert isinstance(screen, HistoryScreen)
        await wait_for(pilot, lambda: screen.loads >= 1, "the first read")
        assert [r.session_id for r in screen.rows] == [bob.id, ann.id]
        await pilot.press(*"stolen")
        await wait_for(pilot, lambda: screen.rows and len(screen.rows) == 1, "the search")
        assert screen.rows[0].session_id == bob.id and screen.rows[0].actor == "alice"
        await pilot.press("tab")  # to "since"
        await pilot.press(*"soon")
        await wait_for(
            pilot,
            lambda: "since: not a time" in str(screen.query_one("#history-status").render()),
            "the error",
        )
        await pilot.press("backspace", "backspace", "backspace", "backspace", *"1h")
        loads = screen.loads
        await wait_for(pilot, lambda: screen.loads > loads, "a read with since")
        assert [r.session_id for r in screen.rows] == [bob.id]
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, HistoryScreen), "closed")
