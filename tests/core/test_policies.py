"""Session lifetime policies on real Redis and both stores: idle and absolute timeouts exactly at
their deadlines (injectable clock), the per-user session limit (deny / evict-oldest) exact under
concurrency, and their settings."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import redis

from sessionmon.core.auth import SESSION_ENDED, Auth
from sessionmon.core.blacklist import Blacklist
from sessionmon.core.clock import FrozenClock
from sessionmon.core.errors import ConfigError, NotDurable, RedisUnavailable, TooManySessions
from sessionmon.core.policy import OnMaxSessions, SessionPolicy
from sessionmon.core.runtime import connect_for, make_blacklist
from sessionmon.core.settings import Settings, load_settings
from sessionmon.core.store import DatabaseUrl, Session, SessionStore, open_store
from sessionmon.core.tokens import Reason, TokenCodec
from tests.redis_server import RedisProcess, StartRedis, start_replica


def live_keys(blacklist: Blacklist, s: Session) -> set[str]:
    assert s.access_jti and s.refresh_jti
    return {
        blacklist.sid_key(s.id),
        blacklist.token_key(s.id, s.access_jti),
        blacklist.token_key(s.id, s.refresh_jti),
    }


def ended_rows(store: SessionStore, sid: str) -> list[tuple[str, str | None, str]]:
    return [
        (e.actor, e.reason, e.outcome)
        for e in store.audit(session_id=sid)
        if e.action == SESSION_ENDED
    ]


def test_idle_timeout_ends_the_session_exactly_at_its_deadline(
    auth: Auth, store: SessionStore, blacklist: Blacklist, clock: FrozenClock
) -> None:
    auth.policy = SessionPolicy(idle_timeout=300)
    session, access, refresh = auth.login("u1", "ann@example.com", "Ann")
    t0 = clock.now()
    clock.advance(50)
    assert auth.authenticate(access).ok  # a request: last seen moves on
    clock.advance(299.999)  # 349.999 after login, 299.999 after the last request
    result = auth.refresh(refresh)
    assert result.ok and result.new_refresh_token
    row = store.get_session(session.id)
    assert row is not None and row.last_seen_at == t0 + 349.999
    assert auth.policy.idle_deadline(row) == t0 + 649.999
    clock.set(t0 + 649.999)  # exactly at the deadline
    ended = auth.refresh(result.new_refresh_token)
    assert ended.reason is Reason.IDLE_TIMEOUT and not ended.ok
    assert store.get_session(session.id) is None
    assert ended_rows(store, session.id) == [("system", "idle", "ok")]
    (entry,) = [e for e in store.audit(session_id=session.id) if e.action == SESSION_ENDED]
    # What was live: the session and its refresh token (the access token had expired).
    assert row.refresh_jti is not None
    assert set(entry.revoked) == {
        blacklist.sid_key(row.id),
        blacklist.token_key(row.id, row.refresh_jti),
    }
    assert auth.refresh(result.new_refresh_token).reason is Reason.REVOKED


def test_absolute_timeout_ends_the_session_exactly_at_its_deadline(
    auth: Auth, store: SessionStore, codec: TokenCodec, clock: FrozenClock
) -> None:
    auth.policy = SessionPolicy(absolute_timeout=1000)
    session, _, refresh = auth.login("u1", "ann@example.com", "Ann")
    t0 = clock.now()
    deadline = t0 + 1000
    assert auth.policy.absolute_deadline(session) == deadline
    # No token of the session outlives the deadline.
    assert session.refresh_exp == int(deadline) and session.access_exp == int(t0 + 60)
    clock.set(deadline - 30)
    result = auth.refresh(refresh)
    assert result.ok and result.new_refresh_token and result.new_access_token
    assert codec.verify(result.new_access_token).exp == int(deadline)
    assert result.refresh_exp == int(deadline)
    clock.set(deadline - 0.001)
    just_before = auth.refresh(result.new_refresh_token)
    assert just_before.ok and just_before.new_refresh_token
    clock.set(deadline)
    ended = auth.refresh(just_before.new_refresh_token)
    assert ended.reason is Reason.ABSOLUTE_TIMEOUT
    assert store.get_session(session.id) is None
    assert ended_rows(store, session.id) == [("system", "absolute", "ok")]


def test_absolute_timeout_applies_without_rotation_too(
    auth: Auth, store: SessionStore, clock: FrozenClock
) -> None:
    auth.policy = SessionPolicy(rotate_refresh=False, absolute_timeout=100, idle_timeout=1000)
    session, _, refresh = auth.login("u1", "ann@example.com", "Ann")
    clock.advance(99)
    assert auth.refresh(refresh).ok
    clock.advance(1)
    assert auth.refresh(refresh).reason is Reason.ABSOLUTE_TIMEOUT
    assert store.get_session(session.id) is None


def test_max_sessions_deny(auth: Auth, store: SessionStore, clock: FrozenClock) -> None:
    auth.policy = SessionPolicy(max_sessions_per_user=3)
    sessions = [auth.login("u1", "ann@example.com", "Ann")[0] for _ in range(3)]
    with pytest.raises(TooManySessions, match="already has 3 live sessions"):
        auth.login("u1", "ann@example.com", "Ann")
    assert auth.login("u2", "bob@example.com", "Bob")  # another user is not affected
    assert [s.id for s in store.sessions_for_user("u1")] == [s.id for s in sessions]
    clock.advance(auth.refresh_ttl + 1)  # expired sessions do not count
    assert auth.login("u1", "ann@example.com", "Ann")


def test_max_sessions_evicts_the_oldest(
    auth: Auth, store: SessionStore, blacklist: Blacklist, clock: FrozenClock
) -> None:
    auth.policy = SessionPolicy(max_sessions_per_user=2, on_max_sessions=OnMaxSessions.EVICT_OLDEST)
    logins = []
    for _ in range(3):
        logins.append(auth.login("u1", "ann@example.com", "Ann"))
        clock.advance(1)
    (oldest, access, refresh), kept = logins[0], logins[1:]
    assert {s.id for s in store.sessions_for_user("u1")} == {s.id for s, _, _ in kept}
    assert auth.authenticate(access).reason is Reason.REVOKED
    assert auth.refresh(refresh).reason is Reason.REVOKED
    assert ended_rows(store, oldest.id) == [("system", "evicted", "ok")]
    (entry,) = [e for e in store.audit(session_id=oldest.id) if e.action == SESSION_ENDED]
    assert set(entry.revoked) == live_keys(blacklist, oldest)
    for _, a, _ in kept:
        assert auth.authenticate(a).ok


def test_eviction_with_redis_down_evicts_and_creates_nothing(
    redis_process: RedisProcess,
    store: SessionStore,
    codec: TokenCodec,
    clock: FrozenClock,
    prefix: str,
) -> None:
    client = redis.Redis.from_url(redis_process.url, socket_timeout=1, socket_connect_timeout=1)
    policy = SessionPolicy(max_sessions_per_user=1, on_max_sessions=OnMaxSessions.EVICT_OLDEST)
    auth = Auth(
        store, Blacklist(client, prefix=prefix, clock=clock), codec, clock=clock, policy=policy
    )
    first, _, _ = auth.login("u1", "ann@example.com", "Ann")
    redis_process.stop()
    try:
        with pytest.raises(RedisUnavailable):
            auth.login("u1", "ann@example.com", "Ann")
        assert [s.id for s in store.sessions_for_user("u1")] == [first.id]
        assert ended_rows(store, first.id) == []
    finally:
        redis_process.start()
        client.close()


@pytest.fixture
def many_auths(
    db_url: DatabaseUrl, blacklist: Blacklist, codec: TokenCodec, clock: FrozenClock
) -> Iterator[list[Auth]]:
    stores = [open_store(db_url, clock=clock) for _ in range(4)]
    yield [Auth(s, blacklist, codec, access_ttl=60, refresh_ttl=3600, clock=clock) for s in stores]
    for s in stores:
        s.close()


@pytest.mark.parametrize("mode", list(OnMaxSessions))
def test_100_simultaneous_logins_leave_exactly_n_sessions(
    many_auths: list[Auth], blacklist: Blacklist, mode: OnMaxSessions
) -> None:
    limit, logins = 5, 100
    for auth in many_auths:
        auth.policy = SessionPolicy(max_sessions_per_user=limit, on_max_sessions=mode)
    start = threading.Barrier(logins)
    created: list[Session] = []
    denied: list[TooManySessions] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        start.wait()
        try:
            session, _, _ = many_auths[i % len(many_auths)].login("u1", "ann@example.com", "Ann")
            with lock:
                created.append(session)
        except TooManySessions as exc:
            with lock:
                denied.append(exc)
        except BaseException as exc:
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(logins)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[:3]
    store = many_auths[0].store
    live = store.sessions_for_user("u1")
    assert len(live) == limit
    if mode is OnMaxSessions.DENY:
        assert (len(created), len(denied)) == (limit, logins - limit)
        assert {s.id for s in live} == {s.id for s in created}
    else:
        assert (len(created), len(denied)) == (logins, 0)
        evicted = {s.id for s in created} - {s.id for s in live}
        assert len(evicted) == logins - limit
        for sid in evicted:
            assert blacklist.is_revoked(None, sid)
            assert ended_rows(store, sid) == [("system", "evicted", "ok")]
        for s in live:
            assert not blacklist.is_revoked(None, s.id)


def test_policy_settings() -> None:
    s = load_settings(
        {
            "rotate_refresh": "no",
            "reuse_grace": "0",
            "idle_timeout": "30m",
            "absolute_timeout": "12h",
            "max_sessions_per_user": "5",
            "on_max_sessions": "Evict-Oldest",
        },
        env={},
    )
    assert SessionPolicy.from_settings(s) == SessionPolicy(
        rotate_refresh=False,
        reuse_grace=0,
        idle_timeout=1800,
        absolute_timeout=43200,
        max_sessions_per_user=5,
        on_max_sessions=OnMaxSessions.EVICT_OLDEST,
    )
    defaults = SessionPolicy.from_settings(load_settings({}, env={}))
    assert defaults == SessionPolicy() and defaults.rotate_refresh and defaults.reuse_grace == 10
    env = {"SESSIONMON_MAX_SESSIONS_PER_USER": "off", "SESSIONMON_IDLE_TIMEOUT": "0"}
    off = load_settings({}, env=env)
    assert (off.max_sessions_per_user, off.idle_timeout) == (None, None)
    for flags, message in (
        ({"on_max_sessions": "kick"}, "--on-max-sessions: not one of deny, evict-oldest"),
        ({"max_sessions_per_user": "-2"}, "--max-sessions-per-user"),
        ({"max_sessions_per_user": "two"}, "not a whole number"),
        ({"reuse_grace": "-1s"}, "--reuse-grace"),
        ({"idle_timeout": "soon"}, "--idle-timeout"),
    ):
        with pytest.raises(ConfigError, match=message):
            load_settings(flags, env={})


def test_an_eviction_that_is_not_durable_evicts_and_creates_nothing(
    start_redis: StartRedis, store: SessionStore, codec: TokenCodec, clock: FrozenClock, prefix: str
) -> None:
    """--redis-wait-replicas: the evicted sessions' revocation reached too few replicas, so the
    login fails (exit 4 / 503) and nothing was evicted or created."""
    master = start_redis()
    replica = start_replica(start_redis, master)
    s = Settings(redis_url=master.url, prefix=prefix, redis_wait_replicas=1, redis_timeout=1.0)
    client = connect_for(s, master.url)
    policy = SessionPolicy(max_sessions_per_user=1, on_max_sessions=OnMaxSessions.EVICT_OLDEST)
    auth = Auth(store, make_blacklist(s, client, clock), codec, clock=clock, policy=policy)
    try:
        first, _, _ = auth.login("u1", "ann@example.com", "Ann")
        replica.pause()
        with pytest.raises(NotDurable, match="not durable: 0 of 1 replica"):
            auth.login("u1", "ann@example.com", "Ann")
        assert [s.id for s in store.sessions_for_user("u1")] == [first.id]
        assert ended_rows(store, first.id) == []
        replica.resume()
        second, _, _ = auth.login("u1", "ann@example.com", "Ann")
        assert [s.id for s in store.sessions_for_user("u1")] == [second.id]
        assert ended_rows(store, first.id) == [("system", "evicted", "ok")]
    finally:
        client.close()
