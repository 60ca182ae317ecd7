"""The feed's rates in the core: per-second counts over the last minute on the injectable clock,
and a follower on real Redis that counts the last minute at its first read, then only what is new
(never twice), and says DOWN (never raises) when the feed cannot be read."""

from __future__ import annotations

import redis

from sessionmon.core.blacklist import connect
from sessionmon.core.clock import FrozenClock
from sessionmon.core.event_rates import (
    RATE_WINDOW,
    FeedState,
    RateCounter,
    RateFollower,
    series_of,
)
from sessionmon.core.event_stream import StreamReader, StreamWriter
from sessionmon.core.events import Event, EventKind
from tests.redis_server import RedisProcess


def ev(kind: EventKind, at: float, reason: str | None = None, count: int = 1) -> Event:
    return Event(kind, at, reason=reason, count=count)


def test_series_of_each_kind() -> None:
    assert series_of(ev(EventKind.LOGIN, 0)) == ("logins",)
    assert series_of(ev(EventKind.ROTATION, 0)) == ("refreshes",)
    assert series_of(ev(EventKind.FORCE_LOGOUT, 0)) == ("revocations",)
    assert series_of(ev(EventKind.REJECTION, 0, "expired")) == ("rejections", "rejected:expired")
    assert series_of(ev(EventKind.KEY_ROTATION, 0)) == ()


def test_counter_rates_over_the_window() -> None:
    now = 1_000_000.0
    c = RateCounter()
    c.add([ev(EventKind.LOGIN, now - 59)] * 30, now)  # in the window (the oldest second)
    c.add([ev(EventKind.LOGIN, now - 60)] * 99, now)  # a second too old: left out
    c.add([ev(EventKind.FORCE_LOGOUT, now, count=120)], now)  # one event, 120 sessions
    c.add([ev(EventKind.REJECTION, now, "bad_signature")] * 6, now)
    c.add([ev(EventKind.REJECTION, now, "expired")] * 6, now)
    r = c.rates(now)
    assert (r.logins, r.refreshes, r.revocations, r.rejections) == (0.5, 0.0, 2.0, 0.2)
    assert r.alarming == 6 and r.window == RATE_WINDOW
    later = c.rates(now + 1)  # the logins' second has left the window
    assert later.logins == 0 and later.rejections == 0.2


def test_follower_counts_the_last_minute_then_only_new_events(
    redis_client: redis.Redis, prefix: str
) -> None:
    clock = FrozenClock(float(int(redis_client.time()[0])))
    writer = StreamWriter(redis_client, prefix, linger=0)
    try:
        now = clock.now()
        for e in [ev(EventKind.LOGIN, now - 120)] * 5 + [ev(EventKind.LOGIN, now - 10)] * 6:
            writer.emit(e)
        assert writer.flush()
        follower = RateFollower(lambda: (StreamReader(redis_client, prefix), 0), clock)
        first = follower.step()
        assert first.state is FeedState.LIVE and first.rates is not None
        assert first.rates.logins == 6 / 60  # the older five are out of the window
        for _ in range(2500):  # more than one read's page: one step reads them all
            writer.emit(ev(EventKind.ROTATION, now))
        assert writer.flush() and writer.dropped == 0
        second = follower.step()
        assert second.rates is not None and second.rates.refreshes == 2500 / 60
        assert follower.read == 11 + 2500  # each event read once (the history: by stream id)
        assert second.rates.logins == 6 / 60  # not counted again
        third = follower.step()  # nothing new: the same
        assert third.rates == second.rates
    finally:
        writer.close()


def test_follower_down_then_resumes_after_the_last_id(
    redis_process: RedisProcess, prefix: str
) -> None:
    client = connect(redis_process.url, timeout=0.5)
    clock = FrozenClock(float(int(client.time()[0])))
    writer = StreamWriter(client, prefix, linger=0)
    follower = RateFollower(lambda: (StreamReader(client, prefix), 0), clock)
    try:
        writer.emit(ev(EventKind.LOGIN, clock.now()))
        assert writer.flush()
        assert follower.step().state is FeedState.LIVE and follower.read == 1
        redis_process.stop()
        down = follower.step()
        assert down.state is FeedState.DOWN and down.rates is None and down.error
        redis_process.start()
        writer.emit(ev(EventKind.LOGIN, clock.now()))
        assert writer.flush()
        back = follower.step()
        assert back.state is FeedState.LIVE and back.rates is not None
        assert follower.read == 2 and back.rates.logins == 2 / 60
    finally:
        writer.close()
        client.close()
