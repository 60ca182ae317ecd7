"""The main status bar's event rates, read from the activity feed through the core on real Redis:
per second over the last minute on the injectable clock, "events off" with ``--no-events``, a
Redis outage said briefly (never zeros) and resumed without counting twice, and the bar still
fitting 80 columns."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from sessionmon.core.auth import Auth
from sessionmon.core.blacklist import Blacklist, connect
from sessionmon.core.clock import FrozenClock
from sessionmon.core.event_rates import FeedState
from sessionmon.core.event_stream import StreamWriter
from sessionmon.tui.widgets.status_bar import StatusBar
from tests.redis_server import RedisProcess
from tests.tui.conftest import SIZE, loaded, wait_for


@pytest.fixture
def writer(auth: Auth, redis_client: redis.Redis, prefix: str) -> Iterator[StreamWriter]:
    """The core's events go to the feed, as the runtime wires it."""
    w = StreamWriter(redis_client, prefix, linger=0)
    auth.events = w
    yield w
    w.close()


def status_text(app) -> str:
    return str(app.main.query_one(StatusBar).render())


def forged(access: str) -> str:
    return access[:-4] + ("AAAA" if not access.endswith("AAAA") else "BBBB")


async def test_rates_per_second_over_the_last_minute(
    make_app, auth: Auth, writer: StreamWriter, clock: FrozenClock
) -> None:
    app = make_app()
    app.db_label, app.redis_label = "sessions.db", "local"  # not the long temporary paths
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await wait_for(pilot, lambda: app.rates.state is FeedState.LIVE, "the feed read")
        assert "0 logins/s" in status_text(app) and "0 rejected/s" in status_text(app)
        for i in range(6):
            session, access, _ = auth.login(f"u{i}", f"u{i}@example.com", f"U{i}")
        clock.advance(30)  # still in the window
        for _ in range(12):
            auth.authenticate(forged(access), ip="203.0.113.9")
        auth.force_logout(session.id, "ops", "stolen")
        follower = app.rates_follower
        assert follower is not None
        await wait_for(pilot, lambda: follower.read >= 19, "19 events read")
        await wait_for(pilot, lambda: "0.2 rejected/s" in status_text(app), "the rates shown")
        text = status_text(app)
        # 6 logins and 12 rejections in the last 60 s; one force-logout of one session.
        assert "0.1 logins/s" in text and "0 refreshes/s" in text, text
        assert "<0.1 revoked/s" in text, text
        rates = app.rates.rates
        assert rates is not None and rates.alarming == 12  # bad_signature: drawn as an alarm
        # A minute later the logins have left the window, the rejections 30 s after them.
        clock.advance(31)
        await wait_for(pilot, lambda: "0 logins/s" in status_text(app), "logins out of window")
        assert "0.2 rejected/s" in status_text(app)
        clock.advance(30)
        await wait_for(pilot, lambda: "0 rejected/s" in status_text(app), "all out of window")
        assert follower.read == 19  # nothing read twice


async def test_rates_at_80_columns_fit_with_the_counts_and_the_clock(
    make_app, auth: Auth, writer: StreamWriter
) -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        for i in range(3):
            auth.login(f"u{i}", f"u{i}@example.com", f"U{i}")
        await wait_for(pilot, lambda: "in 0.1 " in status_text(app), "the short rates")
        text = status_text(app)
        assert len(text) <= 80 and "3 sess" in text and "rj 0/s" in text, text
        assert text.rstrip()[-8:].count(":") == 2  # the clock is whole, not cut


async def test_no_events_says_the_feed_is_off(make_app) -> None:
    app = make_app(events=False)
    app.db_label, app.redis_label = "sessions.db", "local"
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.pause(0.1)
        text = status_text(app)
        assert "events off" in text and "/s" not in text, text
        assert app.rates_follower is None and app.rates.state is FeedState.OFF


async def test_redis_down_says_so_and_the_rates_resume_without_counting_twice(
    make_app, auth: Auth, redis_process: RedisProcess, prefix: str, clock: FrozenClock
) -> None:
    client = connect(redis_process.url, timeout=0.5)
    blacklist = Blacklist(client, prefix=prefix, leeway=10, clock=clock)
    w = StreamWriter(client, prefix, linger=0)
    auth.events = w
    app = make_app(blacklist=blacklist)
    app.db_label, app.redis_label = "sessions.db", "local"
    app.rates_retry = 0.1
    app._rates_backoff = 0.1
    try:
        async with app.run_test(size=SIZE) as pilot:
            await loaded(pilot)
            for i in range(3):
                auth.login(f"u{i}", f"u{i}@example.com", f"U{i}")
            await wait_for(pilot, lambda: "0.1 logins/s" in status_text(app), "3 logins")
            redis_process.stop()
            await wait_for(pilot, lambda: app.rates.state is FeedState.DOWN, "the outage")
            await pilot.pause()
            text = status_text(app)
            assert ("events: Redis down" in text or "ev ?" in text) and "/s" not in text, text
            redis_process.start()
            for i in range(3, 6):
                auth.login(f"u{i}", f"u{i}@example.com", f"U{i}")
            follower = app.rates_follower
            assert follower is not None
            await wait_for(pilot, lambda: follower.read >= 6, "the events after the outage")
            await wait_for(pilot, lambda: app.rates.state is FeedState.LIVE, "live again")
            await pilot.pause(0.3)
            rates = app.rates.rates
            assert follower.read == 6 and rates is not None  # nothing lost, nothing twice
            assert rates.logins == pytest.approx(6 / 60)
            assert "0.1 logins/s" in status_text(app)
    finally:
        w.close()
        client.close()
