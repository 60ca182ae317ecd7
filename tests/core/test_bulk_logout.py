"""Revoke by query: the filters, the frozen set, batches, and a run that stops and resumes."""

from __future__ import annotations

import ipaddress
import sqlite3
from pathlib import Path

import pytest

from sessionmon.core import bulk_logout
from sessionmon.core.auth import Auth, LogoutOutcome
from sessionmon.core.blacklist import Blacklist, connect
from sessionmon.core.bulk_logout import (
    ACTION,
    JOB_ACTION,
    JobOutcome,
    JobState,
    LogoutJob,
    end_in_batches,
)
from sessionmon.core.clock import FrozenClock
from sessionmon.core.errors import ConfigError, DatabaseError, RedisUnavailable
from sessionmon.core.session_query import SessionQuery, matching_sessions, parse_cidr, parse_time
from sessionmon.core.store import SessionStore, SqliteStore
from sessionmon.core.store.base import CatchUpHow
from sessionmon.core.store.sqlite_schema import DEFERRALS, SEARCH_TABLE, STALE
from sessionmon.core.tokens import Reason, TokenCodec
from tests.redis_server import RedisProcess

T_2027 = 1_800_000_000.0  # 2027-01-15T08:00:00Z


def test_parse_cidr_and_time() -> None:
    assert parse_cidr("10.1.2.3/8") == ipaddress.ip_network("10.0.0.0/8")
    assert parse_cidr("2001:db8::1") == ipaddress.ip_network("2001:db8::1/128")
    with pytest.raises(ConfigError, match="not an IP address or CIDR"):
        parse_cidr("10.0.0.0/33")
    assert parse_time("2h", T_2027) == T_2027 - 7200
    assert parse_time("2027-01-15T08:00:00Z", 0) == T_2027
    assert parse_time("2027-01-15T09:00:00+01:00", 0) == T_2027
    with pytest.raises(ConfigError, match="not a time"):
        parse_time("yesterday-ish", T_2027)


def seed(auth: Auth, clock: FrozenClock) -> dict[str, str]:
    """Five sessions that differ in one field each; returns name -> session id."""
    ids = {}
    for name, user, ip, agent in (
        ("office", "ann", "10.0.0.5", "Firefox/130"),
        ("office-old", "bob", "10.9.9.9", "curl/8.0"),
        ("home", "ann", "192.168.1.4", "Firefox/130"),
        ("v6", "cy", "2001:db8::7", "Safari"),
        ("no-ip", "dee", None, None),
    ):
        s, _, _ = auth.login(user, f"{user}@example.com", user.title(), ip, agent)
        ids[name] = s.id
        clock.advance(60)
    return ids


def names(auth: Auth, ids: dict[str, str], query: SessionQuery) -> set[str]:
    by_id = {v: k for k, v in ids.items()}
    return {by_id[s.id] for s in matching_sessions(auth.store, query, auth.clock.now(), batch=2)}


def test_filters_compose(auth: Auth, clock: FrozenClock) -> None:
    ids = seed(auth, clock)
    ten = parse_cidr("10.0.0.0/8")
    assert names(auth, ids, SessionQuery(ip=ten)) == {"office", "office-old"}
    assert names(auth, ids, SessionQuery(ip=ten, user="ANN@example.com")) == {"office"}
    assert names(auth, ids, SessionQuery(user_agent="firefox")) == {"office", "home"}
    assert names(auth, ids, SessionQuery(ip=parse_cidr("2001:db8::/32"))) == {"v6"}
    created = {k: auth.store.get_session(v).created_at for k, v in ids.items()}  # type: ignore[union-attr]
    assert names(auth, ids, SessionQuery(issued_before=created["home"])) == {
        "office",
        "office-old",
    }
    # Idle: only the sessions that made no request for 4 minutes (the first ones logged in).
    assert names(auth, ids, SessionQuery(idle_for=240)) == {"office", "office-old"}
    clock.advance(3600 * 2)  # refresh TTL is 1 h: everything has expired, nothing is live
    assert names(auth, ids, SessionQuery(user_agent="firefox")) == set()


def test_job_ends_exactly_the_planned_set_in_batches(
    auth: Auth, clock: FrozenClock, tmp_path: Path, codec: TokenCodec
) -> None:
    ids = seed(auth, clock)
    query = SessionQuery(ip=parse_cidr("10.0.0.0/8"))
    job = LogoutJob.plan(
        tmp_path / "jobs", auth.store, query, actor="ops", reason="incident 7", now=clock.now()
    )
    assert job.state.total == 2
    # Sessions that start matching after the plan are not part of it.
    late, _, _ = auth.login("eve", "eve@example.com", "Eve", "10.7.7.7", "x")
    seen: list[int] = []
    report = job.run(auth, batch=1, progress=lambda st: seen.append(st.done))
    assert report.outcome is JobOutcome.COMPLETE and report.failure is None
    assert seen == [1, 2]
    st = report.state
    assert (st.total, st.done, st.ended, st.gone, st.finished) == (2, 2, 2, 0, True)
    assert st.keys == 4  # refresh and session key of each (their 60 s access tokens expired)
    assert auth.store.get_sessions([ids["office"], ids["office-old"]]) == []
    assert auth.store.get_session(late.id) is not None
    rows = auth.store.audit(limit=10)
    assert [r.action for r in rows if r.action == ACTION] == [ACTION, ACTION]
    assert all(r.reason == "incident 7" and r.actor == "ops" for r in rows if r.action == ACTION)
    (summary,) = [r for r in rows if r.action == JOB_ACTION]
    assert summary.outcome.startswith("ok: 2 ended") and query.describe() in (summary.reason or "")
    # Reloaded from disk, the job is finished and says so.
    again = LogoutJob.load(tmp_path / "jobs", st.job)
    assert again.state == JobState(**{**vars(st)})
    if isinstance(auth.store, SqliteStore):  # the trigram index was caught up, exactly
        assert report.catch_up.how is CatchUpHow.DELETED and report.catch_up.stale == 2
        conn = auth.store.conn
        assert conn.execute(f"SELECT count(*) FROM {STALE}").fetchone()[0] == 0
        assert conn.execute(f"SELECT count(*) FROM {DEFERRALS}").fetchone()[0] == 0
        conn.execute(f"INSERT INTO {SEARCH_TABLE}({SEARCH_TABLE}) VALUES ('integrity-check')")


def test_a_session_ended_meanwhile_counts_as_gone(
    auth: Auth, clock: FrozenClock, tmp_path: Path
) -> None:
    ids = seed(auth, clock)
    job = LogoutJob.plan(
        tmp_path, auth.store, SessionQuery(user="ann"), actor="ops", reason=None, now=clock.now()
    )
    auth.logout(ids["home"])
    st = job.run(auth).state
    assert (st.total, st.ended, st.gone) == (2, 1, 1)


def test_stopped_by_redis_then_resumed_nothing_missed(
    store: SessionStore, codec: TokenCodec, clock: FrozenClock, tmp_path: Path, prefix: str
) -> None:
    """Redis dies once the first batch is recorded: the second was already blacklisted (the
    run revokes a batch while the one before is deleted), so it is deleted too; the third finds
    Redis gone and the run stops, saying how far it got, and a resume after Redis is back ends
    the rest; every planned session ends up revoked, none twice."""
    server = RedisProcess(tmp_path / "redis").start()
    try:
        client = connect(server.url, timeout=0.5)
        bl = Blacklist(client, prefix=prefix, leeway=10, clock=clock)
        auth = Auth(store, bl, codec, access_ttl=60, refresh_ttl=3600, clock=clock)
        tokens = [auth.login(f"u{i}", f"u{i}@example.com", None, "10.0.0.1")[1] for i in range(5)]
        job = LogoutJob.plan(
            tmp_path / "jobs",
            store,
            SessionQuery(ip=parse_cidr("10.0.0.0/24")),
            actor="ops",
            reason=None,
            now=clock.now(),
        )

        def crash_after_first_batch(st: JobState) -> None:
            if st.done == 2:
                server.stop()

        report = job.run(auth, batch=2, progress=crash_after_first_batch)
        assert report.outcome is JobOutcome.STOPPED
        assert isinstance(report.failure, RedisUnavailable)
        assert (report.state.done, report.state.ended, report.state.finished) == (4, 4, False)
        assert store.count_sessions(now=clock.now()) == 1

        server.start()
        resumed = LogoutJob.load(tmp_path / "jobs", report.state.job)
        assert resumed.state.done == 4
        final = resumed.run(auth, batch=2)
        assert final.outcome is JobOutcome.COMPLETE
        st = final.state
        assert (st.total, st.done, st.ended, st.gone, st.keys) == (5, 5, 5, 0, 15)
        assert store.count_sessions(now=clock.now()) == 0
        for token in tokens:
            assert auth.authenticate(token, None).reason is Reason.REVOKED
        # Every key the job wrote has a TTL.
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        assert keys and all(client.ttl(k) > 0 for k in keys if client.type(k) == b"string")
    finally:
        server.stop()


def test_overlap_never_deletes_a_session_whose_revoke_failed(
    store: SessionStore, codec: TokenCodec, clock: FrozenClock, tmp_path: Path, prefix: str
) -> None:
    """Redis is stopped for real while a batch is being deleted and the next one revoked: the
    sessions deleted are exactly the recorded prefix of the plan, each one blacklisted (read
    back after a restart) and audited; every session after it keeps its row and nothing of it
    reached Redis. A resume ends them all, with one audit row per session."""
    server = RedisProcess(tmp_path / "redis").start()
    try:
        client = connect(server.url, timeout=0.5)
        bl = Blacklist(client, prefix=prefix, leeway=10, clock=clock)
        auth = Auth(store, bl, codec, access_ttl=60, refresh_ttl=3600, clock=clock)
        for i in range(12):
            auth.login(f"u{i}", f"u{i}@example.com", None, "10.0.0.1")
        job = LogoutJob.plan(
            tmp_path / "jobs",
            store,
            SessionQuery(ip=parse_cidr("10.0.0.0/24")),
            actor="ops",
            reason=None,
            now=clock.now(),
        )
        plan = job.ids()
        ok = (ACTION, LogoutOutcome.OK.value)
        recorded: list[int] = []

        def stop_redis(st: JobState) -> None:
            recorded.append(st.done)
            if st.done == 4:
                server.stop()

        report = job.run(auth, batch=2, progress=stop_redis)
        assert report.outcome is JobOutcome.STOPPED
        assert isinstance(report.failure, RedisUnavailable)
        done = report.state.done
        assert recorded == [2, 4, 6] and done == 6 and report.state.ended == 6
        left = {s.id for s in store.get_sessions(plan)}
        assert left == set(plan[done:])  # exactly the recorded prefix was deleted

        server.start()
        assert all(bl.is_revoked(None, sid) for sid in plan[:done])
        assert not any(bl.is_revoked(None, sid) for sid in plan[done:])
        audited = [e.session_id for e in store.audit(limit=100) if (e.action, e.outcome) == ok]
        assert sorted(audited) == sorted(plan[:done])

        final = LogoutJob.load(tmp_path / "jobs", report.state.job).run(auth, batch=2)
        assert final.outcome is JobOutcome.COMPLETE
        assert (final.state.done, final.state.ended, final.state.gone) == (12, 12, 0)
        assert store.get_sessions(plan) == []
        assert all(bl.is_revoked(None, sid) for sid in plan)
        audited = [e.session_id for e in store.audit(limit=100) if (e.action, e.outcome) == ok]
        assert sorted(audited) == sorted(plan)  # none twice, none missed
    finally:
        server.stop()


def test_database_lost_mid_run_leaves_the_next_batch_revoked_then_resumed(
    codec: TokenCodec, clock: FrozenClock, tmp_path: Path, prefix: str
) -> None:
    """The database is locked by another process once the first batch is recorded: the two
    batches in flight stay blacklisted but not deleted (their tokens are refused) and are not
    recorded; the resume writes their keys again and ends them, each session audited once."""
    store = SqliteStore(tmp_path / "s.db", busy_timeout=0.2, clock=clock)
    server = RedisProcess(tmp_path / "redis").start()
    blocker = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    try:
        bl = Blacklist(connect(server.url, timeout=0.5), prefix=prefix, leeway=10, clock=clock)
        auth = Auth(store, bl, codec, access_ttl=60, refresh_ttl=3600, clock=clock)
        tokens = [auth.login(f"u{i}", None, None, "10.0.0.1")[1] for i in range(6)]
        job = LogoutJob.plan(
            tmp_path / "jobs",
            store,
            SessionQuery(ip=parse_cidr("10.0.0.0/24")),
            actor="ops",
            reason=None,
            now=clock.now(),
        )
        plan = job.ids()

        def lock_database(st: JobState) -> None:
            if st.done == 2:
                blocker.execute("BEGIN IMMEDIATE")

        report = job.run(auth, batch=2, progress=lock_database)
        blocker.execute("ROLLBACK")
        assert report.outcome is JobOutcome.STOPPED
        assert isinstance(report.failure, DatabaseError)
        assert (report.state.done, report.state.ended) == (2, 2)
        assert {s.id for s in store.get_sessions(plan)} == set(plan[2:])
        # The second batch's delete failed while the third was blacklisted (reads still work
        # beside a writer): both revoked, neither deleted, nothing recorded past the first.
        assert all(bl.is_revoked(None, sid) for sid in plan)
        for token in tokens:
            assert auth.authenticate(token, None).reason is Reason.REVOKED

        final = LogoutJob.load(tmp_path / "jobs", report.state.job).run(auth, batch=2)
        assert final.outcome is JobOutcome.COMPLETE
        assert (final.state.done, final.state.ended, final.state.gone) == (6, 6, 0)
        ok = (ACTION, LogoutOutcome.OK.value)
        audited = [e.session_id for e in store.audit(limit=100) if (e.action, e.outcome) == ok]
        assert sorted(audited) == sorted(plan)
        for token in tokens:
            assert auth.authenticate(token, None).reason is Reason.REVOKED
    finally:
        blocker.close()
        server.stop()
        store.close()


def test_a_batch_is_blacklisted_in_chunks_and_deleted_as_one(
    auth: Auth, clock: FrozenClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch larger than a Redis script's share is written in several scripts and deleted in
    one transaction: every session ended once, audited with exactly its own keys."""
    monkeypatch.setattr(bulk_logout, "REVOKE_CHUNK", 2)
    ids = [auth.login(f"u{i}", None, None, "10.0.0.1")[0].id for i in range(7)]
    job = LogoutJob.plan(
        tmp_path,
        auth.store,
        SessionQuery(ip=parse_cidr("10.0.0.0/24")),
        actor="ops",
        reason=None,
        now=clock.now(),
    )
    seen: list[int] = []
    report = job.run(auth, batch=5, progress=lambda st: seen.append(st.done))
    assert report.outcome is JobOutcome.COMPLETE and seen == [5, 7]
    assert (report.state.ended, report.state.keys) == (7, 21)
    assert auth.store.get_sessions(ids) == []
    rows = [e for e in auth.store.audit(limit=100) if e.action == ACTION]
    assert sorted(e.session_id for e in rows) == sorted(ids)
    for e in rows:
        assert len(e.revoked) == 3 and all(e.session_id in k for k in e.revoked if ":sid:" in k)
        assert auth.blacklist.is_revoked(None, e.session_id)


def test_one_process_at_a_time(auth: Auth, clock: FrozenClock, tmp_path: Path) -> None:
    seed(auth, clock)
    job = LogoutJob.plan(
        tmp_path, auth.store, SessionQuery(user="ann"), actor="ops", reason=None, now=clock.now()
    )
    other = LogoutJob.load(tmp_path, job.state.job)
    with job._exclusive(), pytest.raises(ConfigError, match="running in another process"):
        other.run(auth)
    with pytest.raises(ConfigError, match="no logout job"):
        LogoutJob.load(tmp_path, "20990101-000000-abcdef")
    with pytest.raises(ConfigError, match="not a job id"):
        LogoutJob.load(tmp_path, "../etc")


def test_end_in_batches_reports_how_far_it_got(
    store: SessionStore, codec: TokenCodec, clock: FrozenClock, tmp_path: Path, prefix: str
) -> None:
    """The monitor's "log out matching": batches with progress; Redis lost after the first
    batch stops it, and the result keeps what was done and says where it stopped."""
    server = RedisProcess(tmp_path / "redis").start()
    try:
        bl = Blacklist(connect(server.url, timeout=0.5), prefix=prefix, leeway=10, clock=clock)
        auth = Auth(store, bl, codec, access_ttl=60, refresh_ttl=3600, clock=clock)
        ids = [auth.login(f"u{i}", None, None)[0].id for i in range(5)]
        seen: list[tuple[int, int]] = []

        def progress(done: int, total: int) -> None:
            seen.append((done, total))
            if done == 2:
                server.stop()

        result = end_in_batches(auth, ids, "ops", "why", batch=2, progress=progress)
        assert seen == [(2, 5)]
        assert result.found == ids[:2] and result.deleted == 2
        assert len(result.revoked) == 6
        assert result.outcome is LogoutOutcome.REDIS_UNAVAILABLE
        assert result.error is not None and result.error.startswith("stopped after 2 of 5: ")
        assert not result.ok
        assert store.get_sessions(ids) != [] and len(store.get_sessions(ids)) == 3

        server.start()
        rest = end_in_batches(auth, [*ids, "no-such-session"], "ops", None, batch=2)
        assert rest.ok and rest.found == ids[2:] and rest.deleted == 3
        assert rest.missing == [*ids[:2], "no-such-session"]
        assert rest.outcome is LogoutOutcome.PARTIAL
    finally:
        server.stop()
