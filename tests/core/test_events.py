"""The activity feed on a real Redis: written in the background, capped, read by id, and never a
problem for the caller when Redis is gone."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis

from sessionmon.core.blacklist import connect
from sessionmon.core.errors import RedisUnavailable
from sessionmon.core.event_stream import StreamReader, StreamWriter, stream_key
from sessionmon.core.events import Event, EventKind
from tests.redis_server import RedisProcess


def test_written_in_order_and_read_back_by_id(redis_client: redis.Redis, prefix: str) -> None:
    writer = StreamWriter(redis_client, prefix)
    try:
        for i in range(5):
            writer.emit(Event(EventKind.LOGIN, 1000.0 + i, session_id=f"s{i}", user_id="u"))
        writer.emit(Event(EventKind.REJECTION, 1010.0, reason="bad_signature", ip="10.0.0.1"))
        assert writer.flush()
    finally:
        writer.close()
    assert (writer.written, writer.dropped) == (6, 0)
    reader = StreamReader(redis_client, prefix)
    first = reader.after("0", count=3)
    assert [e.session_id for e in first] == ["s0", "s1", "s2"]
    rest = reader.after(first[-1].id)
    assert [e.kind for e in rest] == [EventKind.LOGIN, EventKind.LOGIN, EventKind.REJECTION]
    assert rest[-1].reason == "bad_signature" and rest[-1].ip == "10.0.0.1"
    assert rest[-1].session_id is None and rest[-1].count == 1
    assert reader.after(rest[-1].id) == []  # nothing repeated
    assert reader.last_id() == rest[-1].id
    assert [e.session_id for e in reader.latest(2)] == ["s4", None]
    # Only what the event says is stored: kind, time and the fields that were set.
    raw = redis_client.xrange(stream_key(prefix), count=1)[0][1]
    assert set(raw) == {b"kind", b"at", b"session_id", b"user_id"}


def test_capped_with_maxlen(redis_client: redis.Redis, prefix: str) -> None:
    writer = StreamWriter(redis_client, prefix, maxlen=100)
    try:
        for i in range(2000):
            writer.emit(Event(EventKind.REFRESH, float(i)))
        assert writer.flush()
    finally:
        writer.close()
    length = redis_client.xlen(stream_key(prefix))
    assert 100 <= length < 400  # MAXLEN ~ trims whole nodes: about the cap, never unbounded


def test_a_dead_redis_never_fails_or_blocks_the_caller(tmp_path: Path, prefix: str) -> None:
    server = RedisProcess(tmp_path / "redis").start()
    client = connect(server.url, timeout=0.5)
    writer = StreamWriter(client, prefix, queue_size=50)
    server.stop()
    started = time.monotonic()
    for i in range(500):  # more than the queue holds
        writer.emit(Event(EventKind.LOGIN, float(i)))
    assert time.monotonic() - started < 0.5  # emit is a queue put, not a network call
    deadline = time.monotonic() + 30
    while writer.dropped < 500 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert writer.dropped == 500 and writer.written == 0
    with pytest.raises(RedisUnavailable):
        StreamReader(client, prefix).after("0")
    # Back: the writer carries on with new events.
    server.start()
    writer.emit(Event(EventKind.LOGOUT, 1.0))
    assert writer.flush(10)
    writer.close()
    assert writer.written == 1
    assert [e.kind for e in StreamReader(client, prefix).after("0")] == [EventKind.LOGOUT]
    server.stop()


def test_unreadable_entries_are_skipped(redis_client: redis.Redis, prefix: str) -> None:
    key = stream_key(prefix)
    redis_client.xadd(key, {"kind": "from-the-future", "at": "1"})
    redis_client.xadd(key, {"kind": "login", "at": "not a number"})
    redis_client.xadd(key, {"kind": "login", "at": "5", "email": "a@b.c"})
    assert [e.email for e in StreamReader(redis_client, prefix).after("0")] == ["a@b.c"]
