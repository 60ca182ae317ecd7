"""Redis killed and restarted under the running app; a database that goes away."""

from __future__ import annotations

import os

import psycopg
import pytest

from sessionmon.core.auth import Auth
from sessionmon.core.blacklist import Blacklist, connect
from sessionmon.core.store import SessionStore, SqliteStore
from sessionmon.core.store.url import application_name
from sessionmon.tui.poller import REDIS_DOWN
from sessionmon.tui.screens.confirm import ConfirmLogout
from sessionmon.tui.widgets.banner import Banner
from sessionmon.tui.widgets.sessions_table import SessionsTable
from tests.support import pg
from tests.tui.conftest import SIZE, loaded, polled, wait_for


def banner_text(app) -> str:
    banner = app.main.query_one(Banner)
    return "\n".join(banner.problems) if banner.has_class("-shown") else ""


async def test_redis_killed_then_restarted(
    make_app, auth: Auth, store: SessionStore, redis_process, prefix: str, clock
):
    client = connect(redis_process.url, timeout=0.5)
    blacklist = Blacklist(client, prefix=prefix, leeway=10, clock=clock)
    auth.blacklist = blacklist
    sessions = [auth.login(f"u{i}", f"u{i}@example.com", f"U{i}")[0] for i in range(2)]
    app = make_app(blacklist=blacklist)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await loaded(pilot)
            assert banner_text(app) == ""
            assert app.snapshot.redis.ok

            redis_process.stop()
            await polled(pilot)
            await wait_for(pilot, lambda: REDIS_DOWN in banner_text(app), "banner")
            assert "127.0.0.1" not in banner_text(app)  # what is wrong, not where
            # Sessions are still shown; force-logout is refused and shown disabled.
            assert len(app.model) == 2
            assert app.main.check_action("force_logout", ()) is None
            await pilot.press("l")
            await pilot.pause()
            assert not isinstance(app.screen, ConfirmLogout)
            assert any("Redis unreachable" in n.message for n in app._notifications)
            assert app.main.blacklist.stale
            assert len(store.list_sessions()) == 2

            redis_process.start()
            await polled(pilot)  # r: retry now instead of waiting for the backoff
            await wait_for(pilot, lambda: banner_text(app) == "", "banner cleared")
            assert app.main.check_action("force_logout", ()) is True
            await pilot.press("l")
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmLogout), "dialog")
            target = app.screen.target.session_ids[0]
            await pilot.press("y")
            await wait_for(pilot, lambda: store.get_session(target) is None, "logged out")
            assert blacklist.is_revoked(None, target)
            assert {s.id for s in store.list_sessions()} == {s.id for s in sessions} - {target}
    finally:
        client.close()


async def test_redis_down_at_startup_the_app_still_opens(make_app, auth: Auth, prefix: str, clock):
    from sessionmon.tui.screenshots import dead_redis_url

    auth.login("u1", "one@example.com", "One")
    dead = Blacklist(connect(dead_redis_url(), timeout=0.3), prefix=prefix, clock=clock)
    app = make_app(blacklist=dead)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        assert REDIS_DOWN in banner_text(app)
        assert len(app.model) == 1
        await wait_for(pilot, lambda: app.main.query_one("#detail").detail is not None, "detail")
        detail = app.main.query_one("#detail").detail
        assert detail.keys is None and "Redis unreachable" in detail.key_error


async def test_database_gone_shows_a_banner_and_recovers(
    make_app, auth: Auth, store: SessionStore, clock
):
    if not isinstance(store, SqliteStore):
        pytest.skip("moves the SQLite file away (PostgreSQL: the dropped-connection test)")
    auth.login("u1", "one@example.com", "One")
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        moved = store.path.with_name("elsewhere.db")
        app.poller.close()  # the poller's connection would keep the old file open
        os.rename(store.path, moved)
        await polled(pilot)
        await wait_for(pilot, lambda: "Database not found" in banner_text(app), "db banner")
        assert "showing the last rows read (" in banner_text(app)  # and how old they are
        clock.advance(90)
        await polled(pilot)
        await wait_for(pilot, lambda: "read (1:30 ago)" in banner_text(app), "their age")
        assert len(app.model) == 1  # the last rows read stay on screen
        assert app.main.query_one(SessionsTable).selected is not None
        os.rename(moved, store.path)
        await polled(pilot)
        await wait_for(pilot, lambda: banner_text(app) == "", "db banner cleared")


async def test_postgres_connections_dropped_mid_run_reconnect(
    make_app, auth: Auth, store: SessionStore
):
    """The server ends every sessionmon connection (a restart, a failover, an admin): the
    monitor says so or carries on, reconnects, and shows what was committed meanwhile."""
    if isinstance(store, SqliteStore):
        pytest.skip("PostgreSQL only")
    auth.login("u1", "one@example.com", "One")
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        assert len(app.model) == 1
        with psycopg.connect(pg.require(), autocommit=True) as admin:
            killed = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = %s AND pid <> pg_backend_pid()",
                (application_name(store.location),),
            ).fetchone()
        assert killed and killed[0] >= 2  # the store's pool and the monitor's readers
        auth.login("u2", "two@example.com", "Two")  # the pool replaces its dead connection
        await wait_for(pilot, lambda: len(app.model) == 2, "the new session after reconnecting")
        await wait_for(pilot, lambda: banner_text(app) == "", "no banner once reconnected")
        assert app.main.query_one(SessionsTable).selected is not None
