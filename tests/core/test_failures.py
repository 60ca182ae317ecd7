"""Failures: Redis killed mid-test, SQLite locked by another connection, a corrupt database file."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from sessionmon.core.auth import Auth, LogoutOutcome
from sessionmon.core.blacklist import Blacklist, RevokeRequest, connect
from sessionmon.core.clock import FrozenClock
from sessionmon.core.errors import DatabaseError, DatabaseLocked, RedisUnavailable
from sessionmon.core.store import Session, SqliteStore
from sessionmon.core.tokens import Reason, TokenCodec
from tests.redis_server import RedisProcess

# Redis is reached with a 2 s socket timeout and two quick retries: a dead server must be
# reported in seconds. These marks fail the test if a call hangs instead.
FAST = pytest.mark.timeout(30)


@pytest.fixture
def killable(redis_process: RedisProcess) -> Iterator[redis.Redis]:
    client = connect(redis_process.url)
    yield client
    client.close()


@pytest.fixture
def killable_auth(
    store: SqliteStore, killable: redis.Redis, codec: TokenCodec, clock: FrozenClock
) -> Auth:
    bl = Blacklist(killable, prefix="fail:", leeway=10, clock=clock)
    return Auth(store, bl, codec, access_ttl=60, refresh_ttl=3600, clock=clock)


def hold_write_lock(db_path: Path) -> sqlite3.Connection:
    """Another connection that holds the write lock until it is rolled back."""
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("BEGIN EXCLUSIVE")
    return conn


# -- Redis stopped mid-test ------------------------------------------------------------------


@FAST
def test_force_logout_with_redis_down_deletes_nothing(
    killable_auth: Auth, redis_process: RedisProcess, store: SqliteStore
) -> None:
    auth = killable_auth
    session, access, refresh = auth.login("u1", "ann@example.com", "Ann")
    assert auth.authenticate(access).ok

    redis_process.stop()
    with pytest.raises(RedisUnavailable) as info:
        auth.force_logout(session.id, actor="ops", reason="incident")
    message = str(info.value)
    assert "nothing was revoked or deleted" in message and "\n" not in message
    assert store.get_session(session.id) == session  # the row is still there
    [row] = store.audit()
    assert (row.action, row.session_id) == ("force_logout", session.id)
    assert row.outcome.startswith("failed") and "redis" in row.outcome

    # authenticate fails closed: it raises instead of saying "valid".
    with pytest.raises(RedisUnavailable):
        auth.authenticate(access)
    with pytest.raises(RedisUnavailable):
        auth.force_logout_user("u1", actor="ops")
    assert store.get_session(session.id) is not None

    redis_process.start()
    result = auth.force_logout(session.id, actor="ops", reason="incident")
    assert result.ok and result.deleted == 1 and len(result.revoked) == 3
    assert store.get_session(session.id) is None
    assert auth.authenticate(access).reason is Reason.REVOKED
    assert auth.authenticate(None, refresh).reason is Reason.REVOKED


@FAST
def test_revocations_survive_a_redis_crash(
    killable_auth: Auth, redis_process: RedisProcess
) -> None:
    auth = killable_auth
    session, access, _ = auth.login("u1", "ann@example.com", "Ann")
    auth.force_logout(session.id, actor="ops")
    redis_process.restart()  # SIGKILL, then start on the same AOF
    assert auth.authenticate(access).reason is Reason.REVOKED


BLACKLIST_CALLS: dict[str, Callable[[Blacklist], Any]] = {
    "revoke": lambda bl: bl.revoke([RevokeRequest("session", "s", bl.clock.now() + 60)]),
    "is_revoked": lambda bl: bl.is_revoked("j", "s"),
    "ping": lambda bl: bl.ping(),
    "count": lambda bl: bl.count(),
    "page": lambda bl: bl.page(),
    "scan": lambda bl: bl.scan(0),
    "entries_for_session": lambda bl: bl.entries_for_session("s", ["j"]),
    "unrevoke": lambda bl: bl.unrevoke(["k"]),
}


@FAST
@pytest.mark.parametrize("call", list(BLACKLIST_CALLS))
def test_every_blacklist_call_raises_redis_unavailable(
    killable: redis.Redis, redis_process: RedisProcess, clock: FrozenClock, call: str
) -> None:
    bl = Blacklist(killable, prefix="fail:", clock=clock)
    BLACKLIST_CALLS[call](bl)  # works while the server is up
    redis_process.stop()
    with pytest.raises(RedisUnavailable, match="unreachable"):
        BLACKLIST_CALLS[call](bl)
    redis_process.start()
    BLACKLIST_CALLS[call](bl)  # and again after a restart, on the same client


# -- SQLite locked ---------------------------------------------------------------------------


@pytest.fixture
def impatient_store(db_path: Path, clock: FrozenClock) -> Iterator[SqliteStore]:
    s = SqliteStore(db_path, busy_timeout=0.2, clock=clock)
    yield s
    s.close()


@pytest.fixture
def impatient_auth(
    impatient_store: SqliteStore, blacklist: Blacklist, codec: TokenCodec, clock: FrozenClock
) -> Auth:
    return Auth(impatient_store, blacklist, codec, access_ttl=60, refresh_ttl=3600, clock=clock)


def test_locked_database_is_a_clear_error_then_works(
    impatient_auth: Auth, impatient_store: SqliteStore, db_path: Path
) -> None:
    locker = hold_write_lock(db_path)
    try:
        with pytest.raises(DatabaseLocked) as info:
            impatient_auth.login("u1", "ann@example.com", "Ann")
        assert "locked" in str(info.value) and str(db_path) in str(info.value)
        assert isinstance(info.value, DatabaseError)
        assert impatient_store.count_sessions(include_expired=True) == 0  # reads still work (WAL)
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    session, access, _ = impatient_auth.login("u1", "ann@example.com", "Ann")
    assert impatient_store.get_session(session.id) is not None
    assert impatient_auth.authenticate(access).ok


def test_opening_a_store_while_another_connection_writes(db_path: Path) -> None:
    SqliteStore(db_path).close()
    locker = hold_write_lock(db_path)
    try:
        with SqliteStore(db_path, busy_timeout=0.2) as store:
            assert store.count_sessions() == 0
    finally:
        locker.execute("ROLLBACK")
        locker.close()


def test_force_logout_when_sqlite_fails_after_the_blacklist(
    impatient_auth: Auth, impatient_store: SqliteStore, db_path: Path, blacklist: Blacklist
) -> None:
    auth = impatient_auth
    session, access, refresh = auth.login("u1", "ann@example.com", "Ann")
    locker = hold_write_lock(db_path)  # the session can be read, not deleted
    try:
        result = auth.force_logout(session.id, actor="ops", reason="incident")
        assert result.outcome is LogoutOutcome.REVOKED_NOT_DELETED
        assert not result.ok and result.error and "not deleted" in result.error
        assert result.deleted == 0
        assert set(result.revoked) == {
            blacklist.sid_key(session.id),
            blacklist.token_key(session.id, session.access_jti),  # type: ignore[arg-type]
            blacklist.token_key(session.id, session.refresh_jti),  # type: ignore[arg-type]
        }
        # The tokens are dead even though the row is still there.
        assert auth.authenticate(access).reason is Reason.REVOKED
        assert auth.authenticate(None, refresh).reason is Reason.REVOKED
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert impatient_store.get_session(session.id) is not None
    retry = auth.force_logout(session.id, actor="ops", reason="retry")
    assert retry.ok and retry.deleted == 1
    assert impatient_store.get_session(session.id) is None


def test_silent_refresh_with_a_locked_database_raises_database_locked(
    impatient_auth: Auth, impatient_store: SqliteStore, db_path: Path, clock: FrozenClock
) -> None:
    session, access, refresh = impatient_auth.login("u1", "ann@example.com", "Ann")
    clock.advance(60 + 11)
    locker = hold_write_lock(db_path)
    try:
        with pytest.raises(DatabaseLocked):
            impatient_auth.authenticate(access, refresh)
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert impatient_store.get_session(session.id).refresh_count == 0  # type: ignore[union-attr]
    assert impatient_auth.authenticate(access, refresh).refreshed


def test_authenticate_survives_a_locked_database_when_only_touching(
    impatient_auth: Auth, db_path: Path
) -> None:
    _, access, _ = impatient_auth.login("u1", "ann@example.com", "Ann")
    locker = hold_write_lock(db_path)
    try:
        assert impatient_auth.authenticate(access).ok  # last_seen is best effort
    finally:
        locker.execute("ROLLBACK")
        locker.close()


def test_a_failed_touch_pauses_touches_instead_of_waiting_on_every_request(
    impatient_auth: Auth, impatient_store: SqliteStore, db_path: Path, clock: FrozenClock
) -> None:
    """Only the first request after the database failed waits its timeout for the last-seen
    update; the following ones are answered without it until the pause is over."""
    session, access, _ = impatient_auth.login("u1", "ann@example.com", "Ann")
    impatient_auth.touch_interval = 0  # every request would touch
    locker = hold_write_lock(db_path)
    try:
        clock.advance(1)
        assert impatient_auth.authenticate(access).ok  # waited the busy timeout, then paused
        clock.advance(1)
        locker.execute("ROLLBACK")  # the database is back, but touches are paused
        assert impatient_auth.authenticate(access).ok
        assert impatient_store.get_session(session.id).last_seen_at == session.created_at  # type: ignore[union-attr]
        impatient_auth._touch_paused_until = 0.0  # the pause is over (monotonic, not the clock)
        clock.advance(1)
        assert impatient_auth.authenticate(access).ok
        assert impatient_store.get_session(session.id).last_seen_at == clock.now()  # type: ignore[union-attr]
    finally:
        locker.close()


# -- corrupt database ------------------------------------------------------------------------


def test_garbage_file_is_a_clear_database_error(db_path: Path) -> None:
    db_path.write_bytes(b"this is not a database, just garbage bytes \x00\xff" * 100)
    with pytest.raises(DatabaseError) as info:
        SqliteStore(db_path)
    message = str(info.value)
    assert "corrupt or not a SQLite file" in message and str(db_path) in message
    assert not isinstance(info.value, sqlite3.Error)


def test_damaged_pages_are_a_clear_database_error(db_path: Path) -> None:
    with SqliteStore(db_path) as store:
        for i in range(200):
            store.insert_session(
                Session(f"s{i}", "u", "e@x", "n", 1.0, 1.0, None, None, "a", 2.0, "r", 3.0)
            )
        store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(db_path.read_bytes())
    data[4096:] = b"\xde\xad\xbe\xef" * ((len(data) - 4096) // 4)  # keep the header page
    db_path.write_bytes(bytes(data))
    with pytest.raises(DatabaseError, match=r"corrupt|malformed"):
        store = SqliteStore(db_path)
        try:
            store.list_sessions(include_expired=True)
        finally:
            store.close()
