"""The auth flow on real Redis and SQLite: login, authenticate, silent refresh, (force-)logout."""

from __future__ import annotations

import pytest
import redis

from sessionmon.core.auth import Auth, LogoutOutcome, LogoutResult
from sessionmon.core.blacklist import Blacklist
from sessionmon.core.clock import FrozenClock
from sessionmon.core.policy import SessionPolicy
from sessionmon.core.store import SqliteStore
from sessionmon.core.tokens import ACCESS, REFRESH, Reason, TokenCodec


def expire_access(auth: Auth, clock: FrozenClock) -> None:
    """Move the clock past the access TTL and the leeway (the refresh token stays valid)."""
    clock.advance(auth.access_ttl + auth.codec.leeway + 1)


def session_keys(bl: Blacklist, sid: str, *jtis: str) -> set[str]:
    return {bl.sid_key(sid), *(bl.token_key(sid, j) for j in jtis)}


# -- login -----------------------------------------------------------------------------------


def test_login_creates_the_session_row(auth: Auth, store: SqliteStore, clock: FrozenClock) -> None:
    session, access, refresh = auth.login(
        42, " Ann@Example.COM ", "Ann", ip="10.1.2.3", user_agent="x" * 2000
    )
    row = store.get_session(session.id)
    assert row == session
    assert len(session.id) >= 22  # 128 random bits, URL-safe
    assert (row.user_id, row.email, row.name, row.ip) == (
        "42",
        "ann@example.com",
        "Ann",
        "10.1.2.3",
    )
    assert len(row.user_agent or "") == 512
    assert row.created_at == row.last_seen_at == clock.now()
    assert row.refresh_count == 0
    a = auth.codec.verify(access, ACCESS)
    r = auth.codec.verify(refresh, REFRESH)
    assert (row.access_jti, row.access_exp) == (a.jti, a.exp)
    assert (row.refresh_jti, row.refresh_exp) == (r.jti, r.exp)
    assert a.exp == int(clock.now() + 60) and r.exp == int(clock.now() + 3600)
    assert a.sid == r.sid == session.id and a.email == "ann@example.com"


def test_two_logins_are_two_sessions(auth: Auth, store: SqliteStore) -> None:
    s1, _, _ = auth.login("u1", "a@b.c", "A")
    s2, _, _ = auth.login("u1", "a@b.c", "A")
    assert s1.id != s2.id and len(store.sessions_for_user("u1")) == 2


# -- authenticate ----------------------------------------------------------------------------


def test_authenticate_valid_access_token(auth: Auth) -> None:
    session, access, refresh = auth.login("u1", "ann@example.com", "Ann")
    result = auth.authenticate(access, refresh)
    assert result.ok and not result.refreshed and result.reason is None
    assert result.user is not None
    assert result.user.to_dict() == {
        "session_id": session.id,
        "email": "ann@example.com",
        "name": "Ann",
        "user_id": "u1",
        "valid": True,
    }


def test_authenticate_touches_last_seen_at_most_once_per_interval(
    auth: Auth, store: SqliteStore, clock: FrozenClock
) -> None:
    session, access, _ = auth.login("u1", "ann@example.com", "Ann")
    t0 = clock.now()
    clock.advance(5)
    assert auth.authenticate(access).ok
    assert store.get_session(session.id).last_seen_at == t0 + 5  # type: ignore[union-attr]
    clock.advance(5)
    assert auth.authenticate(access).ok
    assert store.get_session(session.id).last_seen_at == t0 + 5  # type: ignore[union-attr]
    clock.advance(auth.touch_interval)
    assert auth.authenticate(access).ok
    assert store.get_session(session.id).last_seen_at == t0 + 10 + auth.touch_interval  # type: ignore[union-attr]


def test_silent_refresh_updates_the_session_without_rotation(
    auth: Auth, store: SqliteStore, clock: FrozenClock
) -> None:
    auth.policy = SessionPolicy(rotate_refresh=False)  # the original design (--no-rotate-refresh)
    session, access, refresh = auth.login("u1", "ann@example.com", "Ann")
    expire_access(auth, clock)
    assert auth.authenticate(access).reason is Reason.EXPIRED  # no refresh token: no refresh

    result = auth.authenticate(access, refresh)
    assert result.ok and result.refreshed and result.new_access_token
    new = auth.codec.verify(result.new_access_token, ACCESS)
    assert new.sid == session.id and new.email == "ann@example.com" and new.sub == "u1"
    assert new.exp == int(clock.now() + auth.access_ttl)
    row = store.get_session(session.id)
    assert row is not None
    assert (row.access_jti, row.access_exp, row.last_seen_at, row.refresh_count) == (
        new.jti,
        new.exp,
        clock.now(),
        1,
    )
    assert row.refresh_jti == session.refresh_jti  # the refresh token is not rotated
    assert result.new_refresh_token is None and row.generation == 0

    # The new access token works on its own; the next expiry refreshes again.
    assert auth.authenticate(result.new_access_token).ok
    expire_access(auth, clock)
    again = auth.authenticate(result.new_access_token, refresh)
    assert again.refreshed and store.get_session(session.id).refresh_count == 2  # type: ignore[union-attr]


def test_refresh_without_an_access_token(auth: Auth) -> None:
    _, _, refresh = auth.login("u1", "ann@example.com", "Ann")
    assert auth.authenticate(None, refresh).refreshed
    assert auth.authenticate("", refresh).refreshed


def test_no_tokens_at_all(auth: Auth) -> None:
    for nothing in (None, ""):
        result = auth.authenticate(nothing, nothing)
        assert not result.ok and result.reason is Reason.NO_TOKEN


@pytest.mark.parametrize(
    ("bad_access", "reason"),
    [("garbage", Reason.MALFORMED), ("x" * 9000, Reason.TOO_LARGE)],
)
def test_only_an_expired_access_token_may_be_refreshed(
    auth: Auth, store: SqliteStore, bad_access: str, reason: Reason
) -> None:
    session, _, refresh = auth.login("u1", "ann@example.com", "Ann")
    result = auth.authenticate(bad_access, refresh)
    assert result.reason is reason and not result.refreshed
    assert store.get_session(session.id).refresh_count == 0  # type: ignore[union-attr]


def test_tampered_access_token_is_not_refreshed(auth: Auth) -> None:
    _, access, refresh = auth.login("u1", "ann@example.com", "Ann")
    tampered = access[:-3] + ("AAA" if not access.endswith("AAA") else "BBB")
    result = auth.authenticate(tampered, refresh)
    assert result.reason is Reason.BAD_SIGNATURE and not result.refreshed


def test_refresh_rejections_without_rotation(
    auth: Auth, store: SqliteStore, clock: FrozenClock
) -> None:
    auth.policy = SessionPolicy(rotate_refresh=False)
    session, access, refresh = auth.login("u1", "ann@example.com", "Ann")
    # A second refresh token for the same session (not the one on record): replaced.
    other, _ = auth.codec.mint(REFRESH, sub="u1", sid=session.id, ttl=3600)
    replaced = auth.refresh(other)
    assert replaced.reason is Reason.REVOKED and "replaced" in replaced.detail
    # Refresh token itself expired.
    clock.advance(3600 + auth.codec.leeway)
    assert auth.authenticate(access, refresh).reason is Reason.EXPIRED


def test_refresh_of_a_deleted_session(auth: Auth, store: SqliteStore, clock: FrozenClock) -> None:
    session, access, refresh = auth.login("u1", "ann@example.com", "Ann")
    store.delete_sessions_with_audit([session.id], [])  # deleted without the blacklist
    expire_access(auth, clock)
    result = auth.authenticate(access, refresh)
    assert result.reason is Reason.SESSION_NOT_FOUND and not result.refreshed


# -- logout ----------------------------------------------------------------------------------


def test_logout_revokes_and_deletes(auth: Auth, store: SqliteStore, blacklist: Blacklist) -> None:
    session, access, refresh = auth.login("u1", "ann@example.com", "Ann")
    current = auth.codec.verify(access, ACCESS)
    result = auth.logout(session.id, tokens=[current])
    assert result.ok and result.deleted == 1 and result.outcome is LogoutOutcome.OK
    assert set(result.revoked) == session_keys(
        blacklist,
        session.id,
        session.access_jti,
        session.refresh_jti,  # type: ignore[arg-type]
    )
    assert store.get_session(session.id) is None
    assert auth.authenticate(access).reason is Reason.REVOKED
    assert auth.authenticate(None, refresh).reason is Reason.REVOKED
    [row] = store.audit()
    assert (row.action, row.actor, row.reason, row.session_id) == (
        "logout",
        "user",
        "logout",
        session.id,
    )
    assert set(row.revoked) == set(result.revoked)


def test_logout_revokes_an_extra_token_not_on_record(
    auth: Auth, blacklist: Blacklist, clock: FrozenClock
) -> None:
    session, access, refresh = auth.login("u1", "ann@example.com", "Ann")
    expire_access(auth, clock)
    newer = auth.authenticate(access, refresh).new_access_token
    assert newer
    # The first access token is no longer on record but is still presented: revoke it too.
    old = auth.codec.decode(access)
    from sessionmon.core.tokens import Claims

    old_claims = Claims(sid=old["sid"], jti=old["jti"], exp=clock.now() + 30, typ="access")
    result = auth.logout(session.id, tokens=[old_claims])
    assert blacklist.token_key(old["sid"], old["jti"]) in result.revoked


def test_force_logout(
    auth: Auth,
    store: SqliteStore,
    blacklist: Blacklist,
    redis_client: redis.Redis,
    clock: FrozenClock,
) -> None:
    session, access, refresh = auth.login("u1", "ann@example.com", "Ann")
    keep, keep_access, _ = auth.login("u2", "bob@example.com", "Bob")
    result = auth.force_logout(session.id, actor="ops", reason="incident 7")
    assert isinstance(result, LogoutResult)
    assert result.ok and result.outcome is LogoutOutcome.OK and result.error is None
    assert (result.action, result.requested, result.found, result.missing, result.deleted) == (
        "force_logout",
        [session.id],
        [session.id],
        [],
        1,
    )
    keys = session_keys(blacklist, session.id, session.access_jti, session.refresh_jti)  # type: ignore[arg-type]
    assert set(result.revoked) == keys
    now = clock.now()
    a_ttl = result.revoked[blacklist.token_key(session.id, session.access_jti)]  # type: ignore[arg-type]
    r_ttl = result.revoked[blacklist.token_key(session.id, session.refresh_jti)]  # type: ignore[arg-type]
    assert abs(a_ttl - (session.access_exp - now + blacklist.leeway)) <= 1  # type: ignore[operator]
    assert abs(r_ttl - (session.refresh_exp - now + blacklist.leeway)) <= 1  # type: ignore[operator]
    assert result.revoked[blacklist.sid_key(session.id)] >= r_ttl
    assert all(redis_client.ttl(k) > 0 for k in keys)

    assert store.get_session(session.id) is None
    assert auth.authenticate(access).reason is Reason.REVOKED
    assert auth.authenticate(None, refresh).reason is Reason.REVOKED
    assert auth.authenticate(keep_access).ok  # the other user is untouched
    assert store.get_session(keep.id) is not None

    [row] = store.audit()
    assert (row.action, row.actor, row.reason, row.outcome) == (
        "force_logout",
        "ops",
        "incident 7",
        "ok",
    )
    assert (row.session_id, row.user_id, row.email) == (session.id, "u1", "ann@example.com")
    assert set(row.revoked) == keys
    assert result.to_dict()["revoked"] == [{"key": k, "ttl": t} for k, t in result.revoked.items()]


def test_force_logout_is_idempotent(auth: Auth, store: SqliteStore) -> None:
    session, _, _ = auth.login("u1", "ann@example.com", "Ann")
    assert auth.force_logout(session.id, actor="ops").deleted == 1
    again = auth.force_logout(session.id, actor="ops", reason="twice")
    assert again.outcome is LogoutOutcome.NOT_FOUND and again.ok and again.deleted == 0
    assert again.missing == [session.id] and again.revoked == {}
    never = auth.force_logout("no-such-session", actor="ops")
    assert never.outcome is LogoutOutcome.NOT_FOUND and never.missing == ["no-such-session"]
    rows = store.audit()
    assert [(r.session_id, r.outcome) for r in rows[:2]] == [
        ("no-such-session", "not_found"),
        (session.id, "not_found"),
    ]
    assert rows[1].reason == "twice" and rows[1].actor == "ops"


def test_force_logout_of_an_expired_session_still_writes_the_session_key(
    auth: Auth, store: SqliteStore, blacklist: Blacklist, clock: FrozenClock
) -> None:
    session, _, _ = auth.login("u1", "ann@example.com", "Ann")
    clock.advance(3600 + 3 * blacklist.leeway)  # both tokens long expired
    result = auth.force_logout(session.id, actor="ops")
    assert list(result.revoked) == [blacklist.sid_key(session.id)]
    assert result.revoked[blacklist.sid_key(session.id)] > 0
    assert result.deleted == 1


@pytest.mark.parametrize("who", ["u1", "ann@example.com", "ANN@Example.com"])
def test_force_logout_user(auth: Auth, store: SqliteStore, blacklist: Blacklist, who: str) -> None:
    mine = [auth.login("u1", "ann@example.com", "Ann") for _ in range(3)]
    _, other_access, _ = auth.login("u2", "bob@example.com", "Bob")
    result = auth.force_logout_user(who, actor="ops", reason="compromised")
    ids = {s.id for s, _, _ in mine}
    assert result.action == "force_logout_user" and result.ok
    assert set(result.found) == ids and result.deleted == 3 and result.missing == []
    assert {k for k in result.revoked if ":sid:" in k} == {blacklist.sid_key(i) for i in ids}
    assert len(result.revoked) == 9
    for _, access, refresh in mine:
        assert auth.authenticate(access, refresh).reason is Reason.REVOKED
    assert auth.authenticate(other_access).ok
    assert [s.id for s in store.sessions_for_user("u1")] == []
    rows = store.audit()
    assert {r.session_id for r in rows} == ids
    assert {(r.action, r.actor, r.reason) for r in rows} == {
        ("force_logout_user", "ops", "compromised")
    }


def test_force_logout_user_unknown(auth: Auth, store: SqliteStore) -> None:
    result = auth.force_logout_user("nobody@example.com", actor="ops")
    assert result.outcome is LogoutOutcome.NOT_FOUND and result.missing == ["nobody@example.com"]
    assert result.deleted == 0 and result.revoked == {}
    [row] = store.audit()
    assert (row.action, row.user_id, row.outcome) == (
        "force_logout_user",
        "nobody@example.com",
        "not_found",
    )


def test_force_logout_many(auth: Auth, store: SqliteStore, blacklist: Blacklist) -> None:
    sessions = [auth.login(f"u{i}", f"u{i}@example.com", None) for i in range(4)]
    ids = [s.id for s, _, _ in sessions[:3]]
    result = auth.force_logout_many([*ids, "ghost"], actor="ops", reason="cleanup")
    assert result.found == ids and result.missing == ["ghost"] and result.deleted == 3
    assert result.outcome is LogoutOutcome.PARTIAL
    assert len(result.revoked) == 9
    for _, access, _ in sessions[:3]:
        assert auth.authenticate(access).reason is Reason.REVOKED
    assert auth.authenticate(sessions[3][1]).ok
    outcomes = sorted((r.session_id, r.outcome) for r in store.audit())
    assert outcomes == sorted([*((i, "ok") for i in ids), ("ghost", "not_found")])
    none = auth.force_logout_many([], actor="ops")
    assert none.outcome is LogoutOutcome.OK and none.deleted == 0 and none.revoked == {}


def test_codec_and_auth_share_the_clock(auth: Auth, codec: TokenCodec, clock: FrozenClock) -> None:
    assert auth.codec is codec and auth.clock is clock is codec.clock
