"""Last-seen updates written in the background (``DeferredTouches``), on both stores: a due update
never makes a request wait, every noted time reaches the database (in one transaction, within the
flush interval, and at close), a later time is never overwritten by an earlier one, and a database
that refuses the batch loses only that batch."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from sessionmon.core.auth import Auth
from sessionmon.core.blacklist import Blacklist
from sessionmon.core.clock import FrozenClock
from sessionmon.core.last_seen import DeferredTouches
from sessionmon.core.revocation_cache import CachedRevocations
from sessionmon.core.runtime import open_runtime
from sessionmon.core.settings import Settings
from sessionmon.core.store import SessionStore, SqliteStore
from sessionmon.core.tokens import TokenCodec
from tests.support.waiting import wait_until


def last_seen(store: SessionStore, sid: str) -> float | None:
    row = store.get_session(sid)
    assert row is not None
    return row.last_seen_at


def test_touch_many_writes_each_time_and_never_moves_one_back(
    auth: Auth, store: SessionStore, clock: FrozenClock
) -> None:
    a, _, _ = auth.login("u1", "ann@example.com", "Ann")
    b, _, _ = auth.login("u2", "bob@example.com", "Bob")
    t = clock.now()
    assert store.touch_many([(a.id, t + 30), (b.id, t + 20), ("gone", t + 30)]) == 2
    assert last_seen(store, a.id) == t + 30 and last_seen(store, b.id) == t + 20
    # Another process wrote a later time first: an earlier one does not replace it.
    assert store.touch_many([(a.id, t + 10), (b.id, t + 40)]) == 1
    assert last_seen(store, a.id) == t + 30 and last_seen(store, b.id) == t + 40
    assert store.touch_many([]) == 0


def test_noted_times_are_written_by_the_thread_and_at_close(
    auth: Auth, store: SessionStore, clock: FrozenClock
) -> None:
    a, _, _ = auth.login("u1", "ann@example.com", "Ann")
    b, _, _ = auth.login("u2", "bob@example.com", "Bob")
    t = clock.now()
    touches = DeferredTouches(store, flush_every=0.05)
    touches.note(a.id, t + 5)
    touches.note(a.id, t + 3)  # noted out of order: the later time stays
    wait_until(lambda: last_seen(store, a.id) == t + 5, "the background flush", timeout=10)
    slow = DeferredTouches(store, flush_every=3600)
    slow.note(b.id, t + 7)
    assert slow.pending() == 1 and last_seen(store, b.id) == b.created_at  # not written yet
    slow.close()
    assert last_seen(store, b.id) == t + 7 and slow.pending() == 0
    slow.note(b.id, t + 9)  # after close: ignored (the store may be closing)
    assert slow.pending() == 0
    touches.close()
    assert touches.written >= 1 and touches.last_error is None


def test_a_due_update_is_noted_and_the_request_decided_from_memory(
    store: SessionStore, blacklist: Blacklist, codec: TokenCodec, clock: FrozenClock
) -> None:
    touches = DeferredTouches(store, flush_every=3600)  # flushed by hand below
    with CachedRevocations(blacklist) as cache:
        auth = Auth(
            store, blacklist, codec, access_ttl=60, refresh_ttl=3600, clock=clock,
            revocation_cache=cache, touches=touches,
        )  # fmt: skip
        session, access, _ = auth.login("u1", "ann@example.com", "Ann")
        assert auth.authenticate(access).ok  # the first check asks Redis; its touch is noted
        wait_until(lambda: auth.authenticate_from_memory(access) is not None, "from memory")
        clock.advance(auth.touch_interval)  # a last-seen update is due again
        result = auth.authenticate_from_memory(access)
        assert result is not None and result.user is not None  # not sent to a thread for it
        assert last_seen(store, session.id) == session.created_at
        assert touches.pending() == 1
        assert touches.flush() == 1
        assert last_seen(store, session.id) == pytest.approx(clock.now())
    touches.close()


def test_a_refused_batch_is_dropped_and_said(
    db_path: Path, blacklist: Blacklist, codec: TokenCodec, clock: FrozenClock
) -> None:
    store = SqliteStore(db_path, busy_timeout=0.2, clock=clock)
    touches = DeferredTouches(store, flush_every=3600)
    try:
        auth = Auth(store, blacklist, codec, clock=clock, touches=touches)
        session, access, _ = auth.login("u1", "ann@example.com", "Ann")
        clock.advance(5)
        assert auth.authenticate(access).ok  # noted, never waits on the lock below
        locker = sqlite3.connect(db_path, isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")
        try:
            assert touches.flush() == 0
            assert touches.last_error is not None and "lock" in touches.last_error
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        assert touches.pending() == 0 and last_seen(store, session.id) == session.created_at
        clock.advance(auth.touch_interval)
        assert auth.authenticate(access).ok  # noted again at its next due request
        assert touches.flush() == 1 and touches.last_error is None
        assert last_seen(store, session.id) == clock.now()
    finally:
        touches.close()
        store.close()


def test_the_web_runtime_defers_and_writes_at_close(settings: Settings, tmp_path: Path) -> None:
    settings = settings.with_(key_dir=tmp_path / "keys")
    runtime = open_runtime(settings, web=True)
    try:
        auth = runtime.auth
        assert isinstance(auth.touches, DeferredTouches)
        session, access, _ = auth.login("u1", "ann@example.com", "Ann")
        auth.touch_interval = 0  # this request's update is due
        noted = auth.clock.now()
        assert auth.authenticate(access).ok
    finally:
        runtime.close()  # writes what was noted before the store closes
    assert runtime.auth.touches is not None and runtime.auth.touches.pending() == 0
    with open_runtime(settings) as again:  # the same database, another process's view
        assert again.auth.touches is None  # the CLI and the monitor write in place
        seen = last_seen(again.store, session.id)
        assert seen is not None and seen >= noted
