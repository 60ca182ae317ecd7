"""Refresh-token rotation on real Redis and both stores: successors, the grace window, reuse
detection, forged and future generations, ended sessions, a Redis outage, migration of v2 data."""

from __future__ import annotations

import sqlite3
import statistics
import time
from pathlib import Path

import pytest
import redis

from sessionmon.core.auth import REUSE_DETECTED, Auth, LogoutFailed
from sessionmon.core.blacklist import Blacklist
from sessionmon.core.clock import FrozenClock
from sessionmon.core.errors import RedisUnavailable
from sessionmon.core.policy import SessionPolicy
from sessionmon.core.store import SCHEMA_VERSION, SessionStore, SqliteStore, open_store
from sessionmon.core.tokens import ACCESS, REFRESH, Reason, TokenCodec, new_id
from tests.redis_server import RedisProcess

GRACE = 10.0


def expire_access(auth: Auth, clock: FrozenClock) -> None:
    clock.advance(auth.access_ttl + auth.codec.leeway + 1)


def rotate(auth: Auth, refresh: str, **request: str) -> tuple[str, str]:
    """One silent refresh that must succeed; returns the new (access, refresh) pair."""
    result = auth.refresh(refresh, **request)
    assert result.ok, result
    assert result.new_access_token and result.new_refresh_token
    return result.new_access_token, result.new_refresh_token


def test_every_refresh_rotates_and_the_session_keeps_its_id(
    auth: Auth, store: SessionStore, codec: TokenCodec, clock: FrozenClock
) -> None:
    session, access, refresh = auth.login("u1", "ann@example.com", "Ann", "10.0.0.1", "UA-login")
    assert codec.verify(refresh, REFRESH).gen == 0
    seen = {refresh}
    for generation in range(1, 6):
        clock.advance(30)
        previous = codec.verify(refresh, REFRESH)
        result = auth.refresh(refresh, ip="10.0.0.2", user_agent="UA-tab")
        assert result.ok and result.refreshed
        assert result.new_refresh_token is not None and result.new_access_token is not None
        access, refresh = result.new_access_token, result.new_refresh_token
        assert refresh not in seen
        seen.add(refresh)
        a, r = codec.verify(access, ACCESS), codec.verify(refresh, REFRESH)
        assert a.sid == r.sid == session.id and r.gen == generation
        assert a.iat == r.iat == int(clock.now())
        assert result.refresh_exp == r.exp == session.refresh_exp  # the family keeps its expiry
        row = store.get_session(session.id)
        assert row is not None
        assert (row.generation, row.refresh_jti, row.prev_refresh_jti) == (
            generation,
            r.jti,
            previous.jti,
        )
        assert (row.access_jti, row.access_exp, row.refresh_exp) == (a.jti, a.exp, r.exp)
        assert (row.rotated_at, row.rotated_ip, row.rotated_ua) == (
            clock.now(),
            "10.0.0.2",
            "UA-tab",
        )
        assert row.refresh_count == generation and row.last_seen_at == clock.now()
    assert auth.authenticate(access).ok


def test_the_previous_token_within_the_grace_window_gets_the_same_pair(
    auth: Auth, store: SessionStore, clock: FrozenClock
) -> None:
    session, _, refresh = auth.login("u1", "ann@example.com", "Ann")
    first = auth.refresh(refresh)
    clock.advance(GRACE - 0.001)  # still within the window (default 10 s)
    again = auth.refresh(refresh)
    assert again.ok
    assert (again.new_access_token, again.new_refresh_token) == (
        first.new_access_token,
        first.new_refresh_token,
    )
    row = store.get_session(session.id)
    assert row is not None and row.generation == 1 and row.refresh_count == 1
    assert not [e for e in store.audit(session_id=session.id) if e.action == REUSE_DETECTED]
    # The successor moves on normally.
    assert first.new_refresh_token is not None
    rotate(auth, first.new_refresh_token)


def test_the_previous_token_after_the_window_revokes_the_family(
    auth: Auth, store: SessionStore, blacklist: Blacklist, clock: FrozenClock
) -> None:
    session, _, refresh = auth.login("u1", "ann@example.com", "Ann", "10.0.0.1", "UA-login")
    access1, refresh1 = rotate(auth, refresh, ip="10.0.0.2", user_agent="UA-legit")
    clock.advance(GRACE)  # exactly at the end of the window: outside
    stolen = auth.refresh(refresh, ip="203.0.113.9", user_agent="UA-thief")
    assert stolen.reason is Reason.REFRESH_REUSED and not stolen.ok
    assert stolen.new_access_token is None and stolen.new_refresh_token is None
    assert store.get_session(session.id) is None
    # Every token of the family is rejected, the live ones with refresh_reused.
    assert auth.authenticate(access1).reason is Reason.REFRESH_REUSED
    assert auth.refresh(refresh1).reason is Reason.REFRESH_REUSED
    assert blacklist.is_revoked(None, session.id)
    (row,) = [e for e in store.audit(session_id=session.id) if e.action == REUSE_DETECTED]
    assert (row.actor, row.reason, row.outcome) == ("system", "refresh_reused", "ok")
    assert blacklist.sid_key(session.id) in row.revoked
    assert row.detail == {
        "presented_generation": 0,
        "live_generation": 1,
        "legitimate": {"at": clock.now() - GRACE, "ip": "10.0.0.2", "user_agent": "UA-legit"},
        "reuse": {"at": clock.now(), "ip": "203.0.113.9", "user_agent": "UA-thief"},
    }


def test_grace_zero_makes_any_second_presentation_reuse(auth: Auth, store: SessionStore) -> None:
    auth.policy = SessionPolicy(reuse_grace=0)
    session, _, refresh = auth.login("u1", "ann@example.com", "Ann")
    rotate(auth, refresh)
    assert auth.refresh(refresh).reason is Reason.REFRESH_REUSED  # same clock reading, even
    assert store.get_session(session.id) is None


def test_replay_of_generation_2_after_generation_4_revokes_everything_at_once(
    auth: Auth,
    store: SessionStore,
    blacklist: Blacklist,
    codec: TokenCodec,
    clock: FrozenClock,
) -> None:
    """Reuse to rejection, measured from another Auth (its own store connection) as a second
    process would see it: p99 <= 100 ms."""
    other = Auth(
        open_store(store.location, clock=clock), blacklist, codec, access_ttl=60, clock=clock
    )
    delays: list[float] = []
    try:
        for _trial in range(20):
            session, _, refresh = auth.login("u1", "ann@example.com", "Ann", "10.0.0.1", "UA-1")
            tokens = [(None, refresh)]
            for _ in range(4):
                clock.advance(GRACE + 1)
                tokens.append(rotate(auth, tokens[-1][1], ip="10.0.0.2", user_agent="UA-2"))
            gen2 = tokens[2][1]
            latest_access, latest_refresh = tokens[4]
            assert codec.verify(gen2, REFRESH).gen == 2
            assert other.authenticate(latest_access).ok
            start = time.perf_counter()
            result = auth.refresh(gen2, ip="198.51.100.7", user_agent="UA-thief")
            rejected = other.authenticate(latest_access)
            delays.append(time.perf_counter() - start)
            assert result.reason is Reason.REFRESH_REUSED
            assert rejected.reason is Reason.REFRESH_REUSED, rejected
            assert other.authenticate(None, latest_refresh).reason is Reason.REFRESH_REUSED
            assert store.get_session(session.id) is None
            (row,) = [e for e in store.audit(session_id=session.id) if e.action == REUSE_DETECTED]
            assert row.detail is not None
            assert (row.detail["presented_generation"], row.detail["live_generation"]) == (2, 4)
            assert row.detail["reuse"]["ip"] == "198.51.100.7"
            assert row.detail["legitimate"]["ip"] == "10.0.0.2"
    finally:
        other.store.close()
    p99 = statistics.quantiles(delays, n=100)[98]
    assert p99 <= 0.100, delays


def test_bad_generation_claims_are_rejected_and_revoke_nothing(
    auth: Auth, store: SessionStore, codec: TokenCodec, clock: FrozenClock
) -> None:
    session, _, refresh = auth.login("u1", "ann@example.com", "Ann")
    _, live = rotate(auth, refresh)
    r = codec.verify(live, REFRESH)

    def forged(**claims: object) -> str:
        payload = {**r.raw, **claims}
        return codec._jwt.encode(payload, codec.keys.signing_key, algorithm=codec.algorithm)

    for bad in ("1", True, -1, 1.5, None, [1]):
        result = auth.refresh(forged(gen=bad))
        assert result.reason is Reason.BAD_GENERATION, (bad, result)
    # The live generation's number on a token that is not the live one (a forged jti).
    assert auth.refresh(forged(jti=new_id())).reason is Reason.BAD_GENERATION
    # The previous generation's number on a token that was not the previous one.
    assert auth.refresh(forged(gen=0, jti=new_id())).reason is Reason.BAD_GENERATION
    # A generation the session has not reached.
    future = auth.refresh(forged(gen=2, jti=new_id()))
    assert future.reason is Reason.FUTURE_GENERATION and "generation 2" in future.detail
    # None of them revoked anything: the live token still rotates.
    row = store.get_session(session.id)
    assert row is not None and row.generation == 1
    rotate(auth, live)


def test_unknown_and_ended_sessions(auth: Auth, store: SessionStore, codec: TokenCodec) -> None:
    unknown, _ = codec.mint(REFRESH, sub="u1", sid=new_id(), ttl=3600, gen=0)
    assert auth.refresh(unknown).reason is Reason.SESSION_NOT_FOUND
    session, _, refresh = auth.login("u1", "ann@example.com", "Ann")
    _, live = rotate(auth, refresh)
    auth.logout(session.id)
    ended = auth.refresh(live)
    assert ended.reason is Reason.REVOKED and not ended.new_refresh_token
    # Ended without the blacklist (a row deleted by hand): the session is gone.
    session2, _, refresh2 = auth.login("u2", "bob@example.com", "Bob")
    store.delete_sessions_with_audit([session2.id], [])
    assert auth.refresh(refresh2).reason is Reason.SESSION_NOT_FOUND


def test_without_rotation_the_refresh_token_is_never_replaced(
    auth: Auth, store: SessionStore, codec: TokenCodec, clock: FrozenClock
) -> None:
    auth.policy = SessionPolicy(rotate_refresh=False)
    session, _, refresh = auth.login("u1", "ann@example.com", "Ann")
    assert "gen" not in codec.verify(refresh, REFRESH).raw
    for _ in range(5):
        clock.advance(GRACE + 1)
        result = auth.refresh(refresh)
        assert result.ok and result.new_refresh_token is None
    row = store.get_session(session.id)
    assert row is not None and (row.generation, row.refresh_count) == (0, 5)
    # Turning rotation on later: the session's token (generation 0) rotates from there.
    auth.policy = SessionPolicy()
    rotate(auth, refresh)


def test_replay_during_a_redis_outage_fails_closed_and_rotates_nothing(
    redis_process: RedisProcess,
    store: SessionStore,
    codec: TokenCodec,
    clock: FrozenClock,
    prefix: str,
) -> None:
    client = redis.Redis.from_url(redis_process.url, socket_timeout=1, socket_connect_timeout=1)
    auth = Auth(store, Blacklist(client, prefix=prefix, clock=clock), codec, clock=clock)
    session, _, refresh = auth.login("u1", "ann@example.com", "Ann")
    _, live = rotate(auth, refresh)
    clock.advance(GRACE + 1)
    before = store.get_session(session.id)
    redis_process.stop()
    try:
        for token in (refresh, live):  # a replay, and the live token: neither is decided
            with pytest.raises(RedisUnavailable):
                auth.refresh(token)
        assert store.get_session(session.id) == before
    finally:
        redis_process.start()
    # Back up: the replay is detected now.
    assert auth.refresh(refresh).reason is Reason.REFRESH_REUSED
    client.close()


def test_reuse_detection_with_redis_failing_at_the_revocation_deletes_nothing(
    redis_process: RedisProcess,
    store: SessionStore,
    codec: TokenCodec,
    clock: FrozenClock,
    prefix: str,
) -> None:
    """The blacklist check passes, then Redis dies before the family is revoked: the request
    fails (503 at the edge), the session is kept for the next attempt, and the audit says so."""
    client = redis.Redis.from_url(redis_process.url, socket_timeout=1, socket_connect_timeout=1)
    blacklist = Blacklist(client, prefix=prefix, clock=clock)
    auth = Auth(store, blacklist, codec, clock=clock)
    session, _, refresh = auth.login("u1", "ann@example.com", "Ann")
    rotate(auth, refresh)
    clock.advance(GRACE + 1)

    class DiesAfterCheck(Blacklist):
        def is_revoked(self, jti: str | None, sid: str | None) -> bool:
            answer = super().is_revoked(jti, sid)
            redis_process.stop()
            return answer

    auth._revocations = DiesAfterCheck(client, prefix=prefix, clock=clock)
    try:
        with pytest.raises(LogoutFailed):
            auth.refresh(refresh)
    finally:
        redis_process.start()
    row = store.get_session(session.id)
    assert row is not None and row.generation == 1
    (entry,) = [e for e in store.audit(session_id=session.id) if e.action == REUSE_DETECTED]
    assert entry.outcome.startswith("failed")
    auth._revocations = blacklist
    assert auth.refresh(refresh).reason is Reason.REFRESH_REUSED
    assert store.get_session(session.id) is None
    client.close()


def test_a_v2_sqlite_database_migrates_and_its_tokens_rotate(
    db_path: Path, blacklist: Blacklist, codec: TokenCodec, clock: FrozenClock
) -> None:
    import sqlite_utils

    from sessionmon.core.store.sqlite_schema import MIGRATIONS

    conn = sqlite3.connect(db_path)
    for migration in MIGRATIONS[:2]:
        migration(sqlite_utils.Database(conn))
    conn.execute("PRAGMA user_version = 2")
    # A session and its refresh token as sessionmon 2 wrote them (no gen claim).
    now = clock.now()
    _, a = codec.mint(ACCESS, sub="u1", sid="legacy", ttl=60, now=now)
    refresh, r = codec.mint(REFRESH, sub="u1", sid="legacy", ttl=3600, now=now)
    conn.execute(
        "INSERT INTO sessions (id, user_id, email, name, created_at, last_seen_at, access_jti, "
        "access_exp, refresh_jti, refresh_exp, refresh_count) VALUES (?,?,?,?,?,?,?,?,?,?,0)",
        ("legacy", "u1", "ann@example.com", "Ann", now, now, a.jti, a.exp, r.jti, r.exp),
    )
    conn.execute(
        "INSERT INTO audit (at, actor, action, outcome) VALUES (?, 'op', 'force_logout', 'ok')",
        (now,),
    )
    conn.commit()
    conn.close()
    with SqliteStore(db_path, clock=clock) as store:
        assert store.migrated_from == 2 and store.schema_version() == SCHEMA_VERSION
        row = store.get_session("legacy")
        assert row is not None and (row.generation, row.prev_refresh_jti) == (0, None)
        assert store.audit()[0].detail is None
        auth = Auth(store, blacklist, codec, clock=clock)
        _, new_refresh = rotate(auth, refresh)
        assert codec.verify(new_refresh, REFRESH).gen == 1
        clock.advance(GRACE)
        assert auth.refresh(refresh).reason is Reason.REFRESH_REUSED


def test_a_v2_postgres_schema_migrates(clock: FrozenClock) -> None:
    import psycopg

    from sessionmon.core.store.postgres_schema import MIGRATIONS, VERSION_TABLE
    from tests.support import pg

    with pg.fresh_schema() as url:
        with psycopg.connect(url) as conn, conn.cursor() as cur:
            cur.execute(f"CREATE TABLE {VERSION_TABLE} (version integer NOT NULL)")
            for number, migration in enumerate(MIGRATIONS[:2], start=1):
                migration(cur)
                cur.execute(f"INSERT INTO {VERSION_TABLE} (version) VALUES (%s)", (number,))
            cur.execute(
                "INSERT INTO sessions (id, user_id, created_at, last_seen_at, refresh_jti, "
                "refresh_exp) VALUES ('legacy', 'u1', 1, 1, 'j', %s)",
                (clock.now() + 60,),
            )
        store = open_store(url, clock=clock)
        try:
            assert store.migrated_from == 2 and store.schema_version() == SCHEMA_VERSION
            row = store.get_session("legacy")
            assert row is not None and row.generation == 0 and row.refresh_jti == "j"
        finally:
            store.close()
