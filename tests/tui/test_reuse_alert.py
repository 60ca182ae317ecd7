"""The monitor and refresh-token rotation: a reuse detection raises a notification in every open
monitor (through the core's read model, never SQL of its own), only for detections after it
started; the detail pane shows the session's generation."""

from __future__ import annotations

import time

from rich.console import Console

from sessionmon.core.auth import Auth
from sessionmon.core.blacklist import Blacklist
from sessionmon.core.clock import FrozenClock
from sessionmon.core.store import SessionStore, ViewQuery
from sessionmon.core.tokens import Reason
from sessionmon.tui.poller import Poller, PollRequest
from tests.tui.conftest import SIZE, loaded, wait_for

REQ = PollRequest(query=ViewQuery())


def steal(auth: Auth, clock: FrozenClock, email: str) -> str:
    """A session whose first refresh token is used again after the grace window; its id."""
    session, _, refresh = auth.login("u-" + email, email, "Victim", "10.0.0.1", "Laptop")
    assert auth.refresh(refresh, ip="10.0.0.2", user_agent="Laptop").ok
    clock.advance(auth.policy.reuse_grace + 1)
    stolen = auth.refresh(refresh, ip="203.0.113.9", user_agent="Thief")
    assert stolen.reason is Reason.REFRESH_REUSED
    return session.id


def test_every_monitor_hears_of_a_reuse_detection_once(
    store: SessionStore, blacklist: Blacklist, auth: Auth, clock: FrozenClock
) -> None:
    old = steal(auth, clock, "before@example.com")  # history: no alert for it
    monitors = [Poller(store.location, blacklist, clock) for _ in range(2)]
    try:
        for p in monitors:
            assert p.poll(REQ).alerts == ()
        sid = steal(auth, clock, "ann@example.com")
        for p in monitors:
            deadline = time.monotonic() + 5
            alerts: tuple = ()
            while not alerts:
                assert time.monotonic() < deadline, "no alert"
                alerts = p.poll(REQ).alerts
            (alert,) = alerts
            assert (alert.session_id, alert.email, alert.action) == (
                sid,
                "ann@example.com",
                "reuse_detected",
            )
            assert alert.session_id != old
            assert p.poll(REQ).alerts == ()  # once
    finally:
        for p in monitors:
            p.close()


async def test_the_monitor_notifies_a_reuse_detection(make_app, auth: Auth, clock: FrozenClock):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        sid = steal(auth, clock, "ann@example.com")

        def notes() -> list[str]:
            return [n.message for n in app._notifications if n.title == "Refresh token reused"]

        await wait_for(pilot, lambda: bool(notes()), "the reuse notification")
        (note,) = notes()
        assert f"session {sid[:8]} of ann@example.com revoked" in note
        assert "generation 0 presented, 1 live" in note
        assert "legitimate 10.0.0.2 (Laptop), reuse 203.0.113.9 (Thief)" in note
        assert all(n.severity == "error" for n in app._notifications if n.message == note)


async def test_the_detail_pane_shows_the_generation(make_app, auth: Auth):
    session, _, refresh = auth.login("u1", "ann@example.com", "Ann")
    for _ in range(2):
        result = auth.refresh(refresh)
        assert result.new_refresh_token
        refresh = result.new_refresh_token
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        pane = app.main.query_one("#detail")
        await wait_for(pilot, lambda: pane.detail is not None, "detail")
        assert pane.detail.session.id == session.id
        console = Console(width=60, record=True)
        console.print(pane._session(pane.detail.session, 0.0))
        assert "2 · gen 2 · source" in console.export_text()
