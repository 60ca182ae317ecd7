"""``--db`` on both backends through the real console script: migrate, copy, bad URLs, a server
that is down or too new. Every failure is one line on stderr with exit code 2, no traceback."""

from __future__ import annotations

import json
import os
from pathlib import Path

import psycopg
import pytest

from sessionmon.core.auth import Auth
from sessionmon.core.clock import FrozenClock
from sessionmon.core.store import SCHEMA_VERSION, SqliteStore, open_store
from sessionmon.core.store.copy import CopyProgress, copy_store
from sessionmon.core.store.history import EndHow, HistoryQuery
from tests.support import pg


def one_line_error(proc, *needles: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sessionmon: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_migrate_creates_then_reports_up_to_date(run_cli, db_url) -> None:
    fresh = run_cli("migrate", "--json")
    assert fresh.returncode == 0, fresh.stderr
    assert (
        json.loads(fresh.stdout)["from"] == 0 and json.loads(fresh.stdout)["to"] == SCHEMA_VERSION
    )
    again = run_cli("migrate")
    assert again.returncode == 0 and "up to date" in again.stdout, again


def test_unknown_scheme_is_a_usage_error_and_creates_nothing(run_cli, tmp_path: Path) -> None:
    proc = run_cli("--db", "mysql://root:hunter2@127.0.0.1/x", "ls")
    one_line_error(proc, "unknown scheme mysql://")
    assert "hunter2" not in proc.stderr
    assert not any(p.name.startswith("mysql") for p in Path.cwd().iterdir())


def test_postgres_down_is_one_line(run_cli) -> None:
    proc = run_cli("--db", "postgresql://ops:hunter2@127.0.0.1:1/test", "ls")
    one_line_error(proc, "PostgreSQL postgresql://ops:***@127.0.0.1:1/test")
    assert "hunter2" not in proc.stderr
    assert not Path("postgresql:").exists()


def test_postgres_missing_database_is_one_line(run_cli) -> None:
    url = pg.require().rsplit("/", 1)[0] + "/no_such_database_here"
    one_line_error(run_cli("--db", url, "ls"), "no_such_database_here", "does not exist")


def test_postgres_schema_newer_than_this_version_is_refused(run_cli) -> None:
    with pg.fresh_schema() as url:
        open_store(url).close()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("INSERT INTO sessionmon_schema (version) VALUES (99)")
        one_line_error(run_cli("--db", url, "ls"), "schema version 99", "upgrade sessionmon")


def test_postgres_without_sessionmon_tables_is_not_created_by_a_reader(run_cli) -> None:
    with pg.fresh_schema() as url:
        one_line_error(run_cli("--db", url, "ls"), "no sessionmon tables", "sessionmon migrate")
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT to_regclass('sessions')").fetchone() == (None,)


def _fill(store, n: int, clock: FrozenClock, blacklist, codec, *, ended: int = 1) -> list[str]:
    """``n`` logins; the first ``ended`` sessions end (history rows); returns the live ids."""
    auth = Auth(store, blacklist, codec, access_ttl=60, refresh_ttl=3600, clock=clock)
    ids = []
    for i in range(n):
        ids.append(auth.login(f"u{i}", f"user{i}@example.com", f"User {i}")[0].id)
        clock.advance(1)
    for i, sid in enumerate(ids[:ended]):
        if i % 2:
            auth.logout(sid)
        else:
            auth.force_logout(sid, actor="tester", reason="copy test")
    return ids[ended:]


def _history(store) -> list:
    return store.ended_sessions(HistoryQuery(limit=10_000))


def _stop_in(table: str, after: int = 1):
    """A progress callback that interrupts the copy at the ``after``-th batch of ``table``."""
    seen = []

    def stop(p: CopyProgress) -> None:
        if p.table == table:
            seen.append(p)
            if len(seen) >= after:
                raise KeyboardInterrupt

    return stop


def test_copy_sqlite_to_postgres_keeps_every_row_and_resumes(
    run_cli, tmp_path: Path, clock: FrozenClock, blacklist, codec
) -> None:
    source_path = tmp_path / "source.db"
    with SqliteStore(source_path, clock=clock) as source:
        live = _fill(source, 30, clock, blacklist, codec, ended=9)
        want_sessions = source.list_sessions(include_expired=True, order="created_at")
        want_audit = source.audit(limit=1000)
        want_history = _history(source)
        assert len(want_history) == 9
    with pg.fresh_schema() as url:
        # An interrupted copy: the first batch is in, then the process stopped.
        with SqliteStore(source_path) as source, open_store(url) as dest:

            def stop_after_first(p: CopyProgress) -> None:
                raise KeyboardInterrupt

            with pytest.raises(KeyboardInterrupt):
                copy_store(source, dest, batch=7, progress=stop_after_first)
            assert dest.count_sessions(include_expired=True) == 7
        refused = run_cli("copy", "--from", str(source_path), "--to", url)
        one_line_error(refused, "already holds 7 sessions", "--resume")
        done = run_cli("copy", "--from", str(source_path), "--to", url, "--resume", "--json")
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        assert report["counts_match"] and report["sessions_copied"] == len(want_sessions) - 7
        assert report["ended_copied"] == report["source_ended"] == report["dest_ended"] == 9
        with open_store(url) as dest:
            assert dest.list_sessions(include_expired=True, order="created_at") == want_sessions
            assert dest.audit(limit=1000) == want_audit
            assert _history(dest) == want_history
            assert {s.id for s in dest.list_sessions(now=clock.now())} == set(live)
            # New audit rows after a copy get ids after the copied ones.
            dest.write_audit([{"at": clock.now(), "actor": "t", "action": "after_copy"}])
            assert dest.audit(limit=1)[0].id == max(e.id for e in want_audit) + 1
            # A session ended after the copy gets a history id after the copied ones.
            auth = Auth(dest, blacklist, codec, clock=clock)
            auth.force_logout(live[0], actor="tester", reason="after the copy")
            newest = _history(dest)[0]
            assert newest.session_id == live[0] and newest.id == max(e.id for e in want_history) + 1
        # And back again, into a new SQLite file.
        back = tmp_path / "back.db"
        home = run_cli("copy", "--from", url, "--to", str(back))
        assert home.returncode == 0 and "match" in home.stdout, home
        with SqliteStore(back) as copy:
            assert copy.count_sessions(include_expired=True) == len(want_sessions) - 1
            assert len(_history(copy)) == 10


def test_copy_between_sqlite_files_resumes_inside_the_history(
    run_cli, tmp_path: Path, clock: FrozenClock, blacklist, codec
) -> None:
    source_path, dest_path = tmp_path / "source.db", tmp_path / "dest.db"
    with SqliteStore(source_path, clock=clock) as source:
        _fill(source, 25, clock, blacklist, codec, ended=12)
        want_history = _history(source)
        assert {e.how for e in want_history} == {EndHow.LOGOUT, EndHow.FORCE_LOGOUT}
    # Stopped after the second batch of history rows: sessions and audit are complete.
    with SqliteStore(source_path) as source, SqliteStore(dest_path) as dest:
        with pytest.raises(KeyboardInterrupt):
            copy_store(source, dest, batch=5, progress=_stop_in("history", after=2))
        assert dest.ended_count() == 10
        assert dest.count_sessions(include_expired=True) == 13
    refused = run_cli("copy", "--from", str(source_path), "--to", str(dest_path))
    one_line_error(refused, "10 ended sessions", "--resume")
    done = run_cli(
        "copy", "--from", str(source_path), "--to", str(dest_path), "--resume", "--batch", "5"
    )
    assert done.returncode == 0, done.stderr
    assert "0 sessions, 0 audit rows and 2 ended sessions" in done.stdout, done.stdout
    assert "history 12 -> 12: match" in done.stdout, done.stdout
    with SqliteStore(dest_path) as dest:
        assert _history(dest) == want_history  # nothing repeated, nothing missed, ids kept


def test_copy_count_check_covers_the_history(tmp_path: Path, clock: FrozenClock, blacklist, codec):
    """History rows the source loses during the copy (its retention pruned them) show up in the
    count check, not as a silent success."""
    source_path, dest_path = tmp_path / "source.db", tmp_path / "dest.db"
    with SqliteStore(source_path, clock=clock) as source, SqliteStore(dest_path) as dest:
        _fill(source, 6, clock, blacklist, codec, ended=3)

        def prune_the_source(p: CopyProgress) -> None:
            if p.table == "history":
                source.history_retention = 0.0
                source.prune_history(clock.now() + 1)

        report = copy_store(source, dest, batch=100, progress=prune_the_source)
        assert (report.ended_copied, report.source_ended, report.dest_ended) == (3, 0, 3)
        assert (report.source_sessions, report.source_audit) == (
            report.dest_sessions,
            report.dest_audit,
        )
        assert not report.counts_match


def test_copy_from_a_missing_file_creates_nothing(run_cli, tmp_path: Path) -> None:
    proc = run_cli("copy", "--from", str(tmp_path / "typo.db"), "--to", str(tmp_path / "b.db"))
    one_line_error(proc, "database not found")
    assert sorted(os.listdir(tmp_path)) == sorted(p.name for p in tmp_path.iterdir())
    assert not (tmp_path / "b.db").exists()
