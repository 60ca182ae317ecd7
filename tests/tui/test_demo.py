"""The demo ends the sessions it created when it stops, so the next monitor does not open on a
screen of its stale "refresh due" rows; it never touches a session it did not create."""

from __future__ import annotations

from pathlib import Path

from sessionmon.core.auth import Auth
from sessionmon.core.blacklist import Blacklist
from sessionmon.core.settings import Settings
from sessionmon.core.store import Session, SessionStore, open_store
from sessionmon.demo import DEMO_ACTOR, DEMO_SOURCE, TrafficGenerator
from sessionmon.tui import build_monitor
from tests.conftest import TEST_SECRET
from tests.tui.conftest import wait_for


def other_session(store: SessionStore, sid: str, source: str | None, now: float) -> None:
    store.insert_session(
        Session(
            id=sid,
            user_id=f"user-{sid}",
            email=f"{sid}@example.com",
            name=sid,
            created_at=now,
            last_seen_at=now,
            ip=None,
            user_agent=None,
            access_jti=f"a-{sid}",
            access_exp=now + 600,
            refresh_jti=f"r-{sid}",
            refresh_exp=now + 3600,
            refresh_count=0,
            source=source,
        )
    )


def test_generator_ends_only_its_own_sessions_when_it_stops(
    auth: Auth, store: SessionStore, blacklist: Blacklist, clock
):
    now = clock.now()
    other_session(store, "real", None, now)  # a real user's session (hence force=True)
    other_session(store, "other-demo", DEMO_SOURCE, now)  # another demo process's
    gen = TrafficGenerator(auth, users=8, seed=3, force=True, clock=clock, own_connection=False)
    for _ in range(60):
        clock.advance(1)
        while gen._queue[0][0] <= clock.now():
            gen.step()
    mine = gen.created.copy()
    assert len(mine) >= 3
    assert {s.id for s in store.get_sessions(sorted(mine))} == mine
    gen.stop()
    gen.run()  # returns at once; stopping ends the generator's sessions

    assert store.get_sessions(sorted(mine)) == []
    assert {s.id for s in store.list_sessions()} == {"real", "other-demo"}
    for sid in mine:
        assert blacklist.is_revoked(None, sid)
        (entry,) = [a for a in store.audit(session_id=sid, limit=50) if a.actor == DEMO_ACTOR]
        assert (entry.action, entry.reason, entry.outcome) == ("logout", "demo stopped", "ok")
    assert gen.counts["ended"] == len(mine)


async def test_quitting_the_demo_monitor_leaves_no_demo_rows(settings: Settings, tmp_path: Path):
    """``sessionmon --demo``, then ``q``: the next monitor opens on an empty list, not on the
    demo's rows turning "refresh due"."""
    secret = tmp_path / "secret"
    secret.write_text(TEST_SECRET)
    secret.chmod(0o600)
    demo = settings.with_(interval=0.2, secret_file=secret)
    monitor = build_monitor(demo, demo=True, backoff=(0.1, 0.5))
    try:
        app = monitor.app
        async with app.run_test(size=(120, 40)) as pilot:
            monitor.start_generator()
            await wait_for(pilot, lambda: len(app.model) >= 3, "the demo's sessions", 30)
            await pilot.press("q")
            await wait_for(pilot, lambda: app.return_code is not None, "exit")
    finally:
        monitor.close()
    check = open_store(settings.db, create=False)
    try:
        assert check.count_sessions() == 0
        ended = [a for a in check.audit(limit=1000) if a.actor == DEMO_ACTOR]
        assert ended and all(a.action == "logout" for a in ended)
    finally:
        check.close()
