"""The activity view on real Redis: what the core emits shows up live, the filter, per-second
sparkline buckets on the injectable clock, the alarm, and a Redis outage that is one clear line and
loses or repeats nothing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from textual.widgets import RichLog, Sparkline, Static

from sessionmon.core.auth import Auth
from sessionmon.core.blacklist import Blacklist, connect
from sessionmon.core.clock import FrozenClock
from sessionmon.core.event_stream import StreamWriter
from sessionmon.core.events import EventKind
from sessionmon.tui.activity import LOGINS, REJECTED, REJECTIONS, WINDOW
from sessionmon.tui.screens.activity import ActivityScreen
from tests.redis_server import RedisProcess
from tests.tui.conftest import SIZE, loaded, wait_for


@pytest.fixture
def writer(auth: Auth, redis_client: redis.Redis, prefix: str) -> Iterator[StreamWriter]:
    """The core's events go to the feed, as the runtime wires it."""
    w = StreamWriter(redis_client, prefix, linger=0)
    auth.events = w
    yield w
    w.close()


def feed_lines(screen: ActivityScreen) -> list[str]:
    return [strip.text for strip in screen.query_one("#activity-feed", RichLog).lines]


def text_of(screen: ActivityScreen, selector: str) -> str:
    return str(screen.query_one(selector, Static).render())


async def open_activity(pilot) -> ActivityScreen:
    await loaded(pilot)
    await pilot.press("e")
    screen = pilot.app.screen
    assert isinstance(screen, ActivityScreen)
    await wait_for(pilot, lambda: screen.live, "the feed's history")
    return screen


async def test_events_of_the_core_appear_live(make_app, auth: Auth, writer: StreamWriter) -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_activity(pilot)
        session, access, _ = auth.login("u1", "ann@example.com", "Ann", ip="10.0.0.1")
        auth.authenticate(access[:-4] + ("AAAA" if not access.endswith("AAAA") else "BBBB"))
        auth.force_logout(session.id, "ops", "laptop stolen")
        await wait_for(pilot, lambda: screen.model.seen >= 3, "three events")
        lines = feed_lines(screen)
        assert any("login" in x and "ann@example.com" in x and "10.0.0.1" in x for x in lines)
        assert any("rejection" in x and "bad_signature" in x for x in lines)
        assert any("force_logout" in x and "laptop stolen" in x and "by ops" in x for x in lines)
        assert not any(access in x or access.split(".")[2] in x for x in lines)  # never a token
        assert "live: 3 events read" in text_of(screen, "#activity-state")
        await pilot.press("q")
        await pilot.pause()
        assert not isinstance(app.screen, ActivityScreen)


async def test_filter_by_kind_and_user(make_app, auth: Auth, writer: StreamWriter) -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_activity(pilot)
        auth.login("u1", "ann@example.com", "Ann")
        bob, _, _ = auth.login("u2", "bob@example.com", "Bob")
        auth.authenticate("not a token")
        auth.logout(bob.id)
        await wait_for(pilot, lambda: screen.model.seen >= 4, "four events")
        assert len(feed_lines(screen)) == 4
        await pilot.press("k")  # kind: login
        assert screen.filter.kind is EventKind.LOGIN
        lines = feed_lines(screen)
        assert len(lines) == 2 and all(" login " in x for x in lines)
        await pilot.press("slash", *"bob", "enter")
        lines = feed_lines(screen)
        assert len(lines) == 1 and "bob@example.com" in lines[0]
        assert "kind login, user ~ 'bob'" in text_of(screen, "#activity-status")
        await pilot.press("k")  # kind: refresh (bob has none)
        assert feed_lines(screen) == []
        # New events follow the filter.
        auth.login("u2", "bob@example.com", "Bob")
        await wait_for(pilot, lambda: screen.model.seen >= 5, "a fifth event")
        assert feed_lines(screen) == []
        await pilot.press("escape")  # clears the filter, the screen stays
        assert isinstance(app.screen, ActivityScreen) and len(feed_lines(screen)) == 5
        await pilot.press("escape")  # nothing to clear: back
        await pilot.pause()
        assert not isinstance(app.screen, ActivityScreen)


async def test_sparklines_count_per_second_and_a_spike_is_an_alarm(
    make_app, auth: Auth, writer: StreamWriter, clock: FrozenClock
) -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_activity(pilot)
        for _ in range(3):
            auth.login("u1", "ann@example.com", "Ann")
        clock.advance(1)
        _, access, _ = auth.login("u1", "ann@example.com", "Ann")
        forged = access[:-4] + ("AAAA" if not access.endswith("AAAA") else "BBBB")
        for _ in range(5):
            auth.authenticate(forged, ip="203.0.113.9")
        await wait_for(pilot, lambda: screen.model.seen >= 9, "nine events")
        now = clock.now()
        assert screen.model.buckets(LOGINS, now, 3) == [0, 3, 1]
        assert screen.model.buckets(REJECTED + "bad_signature", now, 3) == [0, 0, 5]
        screen.redraw()
        row = screen.query_one("#series-rejected-bad-signature")
        spark = row.query_one(Sparkline)
        assert len(spark.data) == WINDOW and list(spark.data)[-2:] == [0, 5]
        assert row.has_class("alarm")
        assert not screen.query_one("#series-rejected-refresh-reused").has_class("alarm")
        alert = screen.query_one("#activity-alert", Static)
        assert alert.has_class("alarm") and "5 bad_signature" in str(alert.render())
        assert "rejections 0.5/s" in text_of(screen, "#activity-status")
        # A bucket is a second: five minutes later they are out of the window.
        clock.advance(WINDOW)
        screen.redraw()
        assert screen.model.total(REJECTIONS, clock.now()) == 0
        assert not alert.has_class("alarm")


async def test_a_redis_outage_is_one_line_and_the_feed_resumes_without_loss_or_repeats(
    make_app, auth: Auth, redis_process: RedisProcess, prefix: str, clock: FrozenClock
) -> None:
    client = connect(redis_process.url, timeout=0.5)
    blacklist = Blacklist(client, prefix=prefix, leeway=10, clock=clock)
    w = StreamWriter(client, prefix, linger=0)
    auth.events = w
    app = make_app(blacklist=blacklist)
    try:
        async with app.run_test(size=SIZE) as pilot:
            screen = await open_activity(pilot)
            screen.retry_pause = 0.1
            auth.login("u1", "ann@example.com", "Ann")
            auth.login("u2", "bob@example.com", "Bob")
            await wait_for(pilot, lambda: screen.model.seen >= 2, "two events")
            last = screen.model.last_id
            redis_process.stop()
            await wait_for(pilot, lambda: screen.down is not None, "the outage")
            await pilot.pause(0.3)  # several failed reads: still one line, one outage
            state = text_of(screen, "#activity-state")
            assert state.startswith("✗ feed unavailable") and f"after event {last}" in state
            assert "\n" not in state and screen.outages == 1
            redis_process.start()
            auth.login("u3", "cy@example.com", "Cy")
            auth.login("u4", "di@example.com", "Di")
            await wait_for(pilot, lambda: screen.model.seen >= 4, "the events after the outage")
            await pilot.pause(0.3)
            emails = [e.email for e in screen.model.feed]
            assert emails == [
                "ann@example.com",
                "bob@example.com",
                "cy@example.com",
                "di@example.com",
            ]
            assert len({e.id for e in screen.model.feed}) == 4
            assert screen.down is None and "live" in text_of(screen, "#activity-state")
    finally:
        w.close()
        client.close()
