"""Logout with the tokens the request presented: the session store is not the only record."""

from __future__ import annotations

from sessionmon.core.auth import Auth, LogoutOutcome
from sessionmon.core.blacklist import Blacklist
from sessionmon.core.clock import FrozenClock
from sessionmon.core.store import SessionStore
from sessionmon.core.tokens import ACCESS, REFRESH, Reason


def test_logout_with_the_row_gone_still_revokes_the_presented_tokens_and_the_session(
    auth: Auth, store: SessionStore, blacklist: Blacklist, clock: FrozenClock
) -> None:
    session, access, refresh = auth.login("u1", "ann@example.com", "Ann")
    store.delete_sessions_with_audit([session.id], [])  # purged without the blacklist
    assert auth.authenticate(access).ok  # the access token alone still works

    presented = auth.presented_claims(access, refresh)
    assert [(c.typ, c.sid) for c in presented] == [(ACCESS, session.id), (REFRESH, session.id)]
    result = auth.logout(session.id, "user", "logout", tokens=presented)

    assert result.ok and result.outcome is LogoutOutcome.NO_ROW
    assert result.found == [] and result.missing == [session.id] and result.deleted == 0
    assert set(result.revoked) == {
        blacklist.token_key(session.id, session.access_jti),  # type: ignore[arg-type]
        blacklist.token_key(session.id, session.refresh_jti),  # type: ignore[arg-type]
        blacklist.sid_key(session.id),
    }
    # The session key lasts as long as any token of the session can (the refresh TTL).
    assert result.revoked[blacklist.sid_key(session.id)] >= auth.refresh_ttl
    assert auth.authenticate(access).reason is Reason.REVOKED
    assert auth.authenticate(None, refresh).reason is Reason.REVOKED

    # A store restored from an older backup brings the row back: its tokens stay dead.
    store.insert_session(session)
    assert auth.authenticate(access, refresh).reason is Reason.REVOKED
    assert auth.refresh(refresh).reason is Reason.REVOKED

    [row] = [r for r in store.audit() if r.action == "logout"]
    assert (row.session_id, row.user_id, row.email, row.outcome) == (
        session.id,
        "u1",
        "ann@example.com",
        "revoked_no_row",
    )
    assert set(row.revoked) == set(result.revoked)


def test_the_blacklist_is_written_before_the_row_is_deleted(
    auth: Auth, store: SessionStore, blacklist: Blacklist
) -> None:
    session, access, refresh = auth.login("u1", "ann@example.com", "Ann")
    result = auth.logout(session.id, tokens=auth.presented_claims(access, refresh))
    assert result.outcome is LogoutOutcome.OK and result.deleted == 1
    assert blacklist.sid_key(session.id) in result.revoked
    [row] = store.audit()
    assert row.outcome == "ok" and set(row.revoked) == set(result.revoked)


def test_presented_claims_skip_bad_and_expired_tokens(auth: Auth, clock: FrozenClock) -> None:
    _, access, refresh = auth.login("u1", "ann@example.com", "Ann")
    assert auth.presented_claims(None, None) == []
    assert auth.presented_claims("garbage", refresh[:-3] + "AAA") == []
    assert auth.presented_claims(refresh, access) == []  # each must be of its own type
    clock.advance(auth.access_ttl + auth.codec.leeway + 1)
    assert [c.typ for c in auth.presented_claims(access, refresh)] == [REFRESH]


def test_logout_without_tokens_of_a_missing_session_is_not_found(
    auth: Auth, store: SessionStore
) -> None:
    session, _, _ = auth.login("u1", "ann@example.com", "Ann")
    store.delete_sessions_with_audit([session.id], [])
    result = auth.logout(session.id)
    assert result.outcome is LogoutOutcome.NOT_FOUND and result.revoked == {}
