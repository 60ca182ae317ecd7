"""The history of ended sessions on both stores: every way a session ends writes one row in the
deleting transaction (who, when, how, by whom, why, where from, the token ids and expiries), the
filters, and the retention."""

from __future__ import annotations

import json

import pytest

from sessionmon.core.auth import Auth
from sessionmon.core.blacklist import Blacklist
from sessionmon.core.bulk_logout import ACTION as QUERY_ACTION
from sessionmon.core.clock import FrozenClock
from sessionmon.core.errors import ConfigError
from sessionmon.core.policy import OnMaxSessions, SessionPolicy
from sessionmon.core.purge import purge_expired
from sessionmon.core.store import AuditRow, SessionStore
from sessionmon.core.store.history import EndHow, HistoryQuery


def test_logout_records_who_when_how_and_the_token_ids(
    auth: Auth, store: SessionStore, clock: FrozenClock
) -> None:
    session, _, _ = auth.login("u1", "Ann@Example.com", "Ann", "10.0.0.7", "Firefox/120")
    clock.advance(30)
    assert auth.logout(session.id).ok
    (row,) = store.ended_sessions(HistoryQuery())
    assert row.session_id == session.id and row.user_id == "u1"
    assert (row.email, row.name, row.ip, row.user_agent) == (
        "ann@example.com", "Ann", "10.0.0.7", "Firefox/120"
    )  # fmt: skip
    assert row.created_at == session.created_at and row.ended_at == clock.now()
    assert (row.how, row.actor, row.reason) == (EndHow.LOGOUT, "user", "logout")
    assert (row.access_jti, row.access_exp) == (session.access_jti, session.access_exp)
    assert (row.refresh_jti, row.refresh_exp) == (session.refresh_jti, session.refresh_exp)
    # Never a token: only ids and expiries.
    assert "eyJ" not in json.dumps(row.to_dict())


def test_every_way_a_session_ends_is_named(
    auth: Auth, store: SessionStore, blacklist: Blacklist, clock: FrozenClock
) -> None:
    a, _, _ = auth.login("u1", "a@example.com", "A")
    b, _, _ = auth.login("u2", "b@example.com", "B")
    c, _, _ = auth.login("u3", "c@example.com", "C")
    auth.force_logout(a.id, "alice", "stolen laptop")
    auth.force_logout_user("b@example.com", "bob", "left the company")
    auth.end_sessions([c], QUERY_ACTION, "carol", "bad ip range")
    auth.policy = SessionPolicy(max_sessions_per_user=1, on_max_sessions=OnMaxSessions.EVICT_OLDEST)
    d, _, _ = auth.login("u4", "d@example.com", "D")
    clock.advance(1)
    auth.login("u4", "d@example.com", "D")  # evicts d
    auth.policy = SessionPolicy(idle_timeout=60)
    e, _, refresh = auth.login("u5", "e@example.com", "E")
    clock.advance(61)
    assert not auth.refresh(refresh).ok  # idle: ended
    got = {r.session_id: (r.how, r.actor, r.reason) for r in store.ended_sessions(HistoryQuery())}
    assert got[a.id] == (EndHow.FORCE_LOGOUT, "alice", "stolen laptop")
    assert got[b.id] == (EndHow.FORCE_LOGOUT, "bob", "left the company")
    assert got[c.id] == (EndHow.FORCE_LOGOUT_QUERY, "carol", "bad ip range")
    assert got[d.id] == (EndHow.EVICTED, "system", "evicted")
    assert got[e.id] == (EndHow.IDLE, "system", "idle")


def test_one_deletion_of_sessions_ending_in_several_ways_keeps_each_ones_own(
    auth: Auth, store: SessionStore, clock: FrozenClock
) -> None:
    """A bulk job's batch is blacklisted in chunks, each at its own time: the deletion moves
    each group into the history with its own time and way (two actions that end alike too)."""
    sessions = [auth.login(f"u{i}", f"u{i}@example.com", "U")[0] for i in range(5)]
    at = clock.now()
    ways = [
        (at, QUERY_ACTION), (at, QUERY_ACTION), (at + 1, QUERY_ACTION),
        (at, "force_logout"), (at, "force_logout_user"),
    ]  # fmt: skip
    rows = [
        AuditRow(at=t, actor="ops", action=action, session_id=s.id, reason="why", outcome="ok")
        for s, (t, action) in zip(sessions, ways, strict=True)
    ]
    assert store.delete_sessions_with_audit([s.id for s in sessions], rows) == 5
    got = {r.session_id: (r.ended_at, r.how) for r in store.ended_sessions(HistoryQuery())}
    assert got == {
        sessions[0].id: (at, EndHow.FORCE_LOGOUT_QUERY),
        sessions[1].id: (at, EndHow.FORCE_LOGOUT_QUERY),
        sessions[2].id: (at + 1, EndHow.FORCE_LOGOUT_QUERY),
        sessions[3].id: (at, EndHow.FORCE_LOGOUT),
        sessions[4].id: (at, EndHow.FORCE_LOGOUT),
    }


def test_a_large_deletion_writes_every_audit_row_whole(
    auth: Auth, store: SessionStore, clock: FrozenClock
) -> None:
    """150 rows: PostgreSQL writes them by COPY (text, NULLs, JSON lists, times intact)."""
    sessions = [auth.login(f"u{i}", f"u{i}@example.com", "U")[0] for i in range(150)]
    at = clock.now() + 0.125
    rows = [
        AuditRow(
            at=at, actor="ops", action=QUERY_ACTION, session_id=s.id, user_id=s.user_id,
            email=s.email, reason='tab\t "quoted" \\ ünï', revoked=[f"k:{s.id}", "k2"],
            outcome="ok", detail={"n": i} if i % 2 else None,
        )
        for i, s in enumerate(sessions)
    ]  # fmt: skip
    before = store.audit_count()
    assert store.delete_sessions_with_audit([s.id for s in sessions], rows) == 150
    assert store.audit_count() == before + 150
    got = {e.session_id: e for e in store.audit(limit=150)}
    for i, s in enumerate(sessions):
        e = got[s.id]
        assert (e.at, e.actor, e.action, e.user_id, e.email) == (
            at, "ops", QUERY_ACTION, s.user_id, s.email
        )  # fmt: skip
        assert (e.reason, e.revoked, e.outcome) == (rows[i].reason, rows[i].revoked, "ok")
        assert e.detail == ({"n": i} if i % 2 else None)


def test_reuse_detection_and_purge_are_recorded(
    auth: Auth, store: SessionStore, clock: FrozenClock
) -> None:
    auth.policy = SessionPolicy(reuse_grace=0)
    s, _, refresh = auth.login("u1", "a@example.com", "A")
    clock.advance(1)
    assert auth.refresh(refresh).ok
    clock.advance(1)
    assert not auth.refresh(refresh).ok  # the old token again: reuse
    old, _, _ = auth.login("u2", "b@example.com", "B")
    clock.advance(3601)
    assert purge_expired(store, clock.now(), "ops", clock=clock) == 1
    got = {r.session_id: r for r in store.ended_sessions(HistoryQuery())}
    assert got[s.id].how is EndHow.REUSE_DETECTED and got[s.id].generation == 1
    assert got[old.id].how is EndHow.EXPIRED and got[old.id].actor == "ops"
    assert got[old.id].refresh_jti == old.refresh_jti and got[old.id].ended_at == clock.now()


def test_filters_by_user_time_how_and_text(
    auth: Auth, store: SessionStore, clock: FrozenClock
) -> None:
    t0 = clock.now()
    ids = []
    for i, who in enumerate(("ann", "bob", "ann")):
        s, _, _ = auth.login(f"u-{who}", f"{who}@example.com", who.title())
        clock.advance(100)
        auth.force_logout(s.id, "ops", f"case {i}") if i else auth.logout(s.id)
        ids.append(s.id)
    q = store.ended_sessions
    assert [r.session_id for r in q(HistoryQuery(user="ANN@example.com"))] == [ids[2], ids[0]]
    assert [r.session_id for r in q(HistoryQuery(user="u-bob"))] == [ids[1]]
    assert [r.session_id for r in q(HistoryQuery(since=t0 + 150))] == [ids[2], ids[1]]
    assert [r.session_id for r in q(HistoryQuery(until=t0 + 150))] == [ids[0]]
    assert [r.session_id for r in q(HistoryQuery(how=EndHow.LOGOUT))] == [ids[0]]
    assert [r.session_id for r in q(HistoryQuery(text="CASE 2"))] == [ids[2]]
    assert [r.session_id for r in q(HistoryQuery(text="50%"))] == []
    assert len(q(HistoryQuery(limit=2))) == 2


def test_retention_deletes_old_rows_as_new_endings_are_written(
    auth: Auth, store: SessionStore, clock: FrozenClock
) -> None:
    store.history_retention = 86400
    old, _, _ = auth.login("u1", "a@example.com", "A")
    auth.logout(old.id)
    clock.advance(86400 + 120)  # past the retention, and past the pruning interval
    new, _, _ = auth.login("u2", "b@example.com", "B")
    auth.logout(new.id)
    assert [r.session_id for r in store.ended_sessions(HistoryQuery())] == [new.id]
    clock.advance(86401)
    assert store.prune_history() == 1
    assert store.ended_sessions(HistoryQuery()) == []


def test_how_parses_with_one_clear_error() -> None:
    assert EndHow.parse("force-logout") is EndHow.FORCE_LOGOUT
    assert EndHow.parse("purged") is EndHow.EXPIRED
    with pytest.raises(ConfigError, match="not a way a session ends"):
        EndHow.parse("exploded")
