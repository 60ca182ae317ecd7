"""The monitor on a Redis that may evict revocations (banner, force-logout refused; allowed: the
notification says so) and on one without persistence (a badge on the status bar)."""

from __future__ import annotations

from sessionmon.core.auth import Auth
from sessionmon.core.runtime import connect_for, make_blacklist
from sessionmon.core.settings import Settings
from sessionmon.core.store import SessionStore
from sessionmon.tui.app import redis_badges
from sessionmon.tui.screens.confirm import ConfirmLogout
from sessionmon.tui.widgets.status_bar import StatusBar
from tests.redis_server import EVICTING, NO_PERSISTENCE, StartRedis
from tests.tui.conftest import SIZE, loaded, wait_for
from tests.tui.test_outages import banner_text


def guarded(settings: Settings, url: str, auth: Auth, clock, **changes: object):
    """The blacklist the monitor builds (write guard included) on ``url``; ``auth`` uses it."""
    s = settings.with_(redis_url=url, **changes)
    client = connect_for(s, url)
    blacklist = make_blacklist(s, client, clock)
    auth.blacklist = blacklist
    return client, blacklist


async def force_logout_first(pilot) -> str:
    app = pilot.app
    await pilot.press("l")
    await wait_for(pilot, lambda: isinstance(app.screen, ConfirmLogout), "dialog")
    target = app.screen.target.session_ids[0]
    await pilot.press("y")
    return target


def notified(app, title: str) -> list[str]:
    return [n.message for n in app._notifications if n.title == title]


async def test_evicting_redis_banner_and_force_logout_refused(
    make_app, auth: Auth, store: SessionStore, settings: Settings, start_redis: StartRedis, clock
) -> None:
    proc = start_redis(*EVICTING)
    client, blacklist = guarded(settings, proc.url, auth, clock)
    auth.login("u1", "ann@example.com", "Ann")
    app = make_app(blacklist=blacklist, redis_url=proc.url)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await loaded(pilot)
            await wait_for(pilot, lambda: "may evict" in banner_text(app), "the banner")
            assert "revocations refused" in banner_text(app)
            target = await force_logout_first(pilot)
            await wait_for(pilot, lambda: notified(app, "Force-logout failed"), "the refusal")
            [message] = notified(app, "Force-logout failed")
            assert "nothing was revoked or deleted" in message and "may evict" in message
            assert store.get_session(target) is not None
    finally:
        client.close()


async def test_allowed_evicting_redis_every_force_logout_says_so(
    make_app, auth: Auth, store: SessionStore, settings: Settings, start_redis: StartRedis, clock
) -> None:
    proc = start_redis(*EVICTING)
    client, blacklist = guarded(settings, proc.url, auth, clock, allow_evicting_redis=True)
    auth.login("u1", "ann@example.com", "Ann")
    app = make_app(blacklist=blacklist, redis_url=proc.url, allow_evicting_redis=True)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await loaded(pilot)
            await wait_for(pilot, lambda: app.snapshot.redis.findings, "the findings")
            assert banner_text(app) == ""  # allowed: not an error
            assert ("MAY EVICT", "EVICT") in redis_badges(app.snapshot.redis)
            target = await force_logout_first(pilot)
            title = "Force-logout done (Redis may evict it)"
            await wait_for(pilot, lambda: notified(app, title), "the notification")
            assert "Redis may evict this revocation" in notified(app, title)[0]
            assert store.get_session(target) is None
    finally:
        client.close()


async def test_persistence_off_is_a_status_bar_warning(
    make_app, auth: Auth, settings: Settings, start_redis: StartRedis, clock
) -> None:
    proc = start_redis(*NO_PERSISTENCE)
    client, blacklist = guarded(settings, proc.url, auth, clock)
    auth.login("u1", "ann@example.com", "Ann")
    app = make_app(blacklist=blacklist, redis_url=proc.url)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await loaded(pilot)
            bar = app.main.query_one(StatusBar)
            await wait_for(
                pilot, lambda: "NO PERSISTENCE" in str(bar.render()), "the status bar badge"
            )
            assert banner_text(app) == ""
            [message] = notified(app, "Redis")
            assert "revocations are lost when Redis restarts" in message
    finally:
        client.close()
