"""SQLite's trigram index during a bulk ending (schema v6): deletes deferred to a stale table,
the filter exact meanwhile (a rowid handed out again included), and the catch-up (chunked
deletes or a rebuild) leaving the index equal to the table (FTS5 ``integrity-check``)."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest
import sqlite_utils

from sessionmon.core.store import Backend, DatabaseUrl, SqliteReader, SqliteStore, ViewQuery
from sessionmon.core.store.base import CatchUpHow
from sessionmon.core.store.schema import SCHEMA_VERSION
from sessionmon.core.store.sqlite_schema import DEFERRALS, MIGRATIONS, SEARCH_TABLE, STALE
from tests.core.test_read_model import NOW, make_session, matching_order

TEXTS = ["user3@", "name 1", "10.0.2.", "sid-0", "sid-0240", "fresh", "abc"]


def _count(store: SqliteStore, table: str) -> int:
    return int(store.conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def _integrity(store: SqliteStore) -> None:
    store.conn.execute(f"INSERT INTO {SEARCH_TABLE}({SEARCH_TABLE}) VALUES ('integrity-check')")


def _exact(reader: SqliteReader, db: DatabaseUrl) -> None:
    for text in TEXTS:
        assert list(reader.order(ViewQuery(text=text), NOW)) == matching_order(reader, db, text)


@pytest.mark.parametrize(("ended", "how"), [(40, CatchUpHow.DELETED), (200, CatchUpHow.REBUILT)])
def test_deferred_deletes_keep_the_filter_exact_and_the_catch_up_makes_the_index_whole(
    db_path: Path, ended: int, how: CatchUpHow
) -> None:
    db = DatabaseUrl(Backend.SQLITE, db_path)
    with SqliteStore(db_path) as store:
        for i in range(1, 241):
            store.insert_session(make_session(i))
        cache = store.conn.execute("PRAGMA cache_size").fetchone()[0]
        store.begin_bulk_ending("job-1")
        assert store.conn.execute("PRAGMA cache_size").fetchone()[0] != cache
        # The last row too: SQLite hands its rowid (the largest) out again to the next insert.
        gone = [make_session(i).id for i in [*range(1, ended), 240]]
        assert store.delete_sessions_with_audit(gone, []) == ended
        assert _count(store, STALE) == ended  # the index still has their entries
        # Live (refresh_exp), with "sid-0240" nowhere in its text.
        fresh = replace(make_session(241), id="fresh-1", email="fresh@elsewhere.org")
        store.insert_session(fresh)  # the rowid of sid-0240-AbC: its stale entries removed
        reader = SqliteReader(db_path)
        try:
            _exact(reader, db)  # sid-0240 is not found through the new row's rowid
            assert _count(store, STALE) == ended - 1
            report = store.end_bulk_ending("job-1")
            assert (report.how, report.stale) == (how, ended - 1)
            assert _count(store, STALE) == 0 and _count(store, DEFERRALS) == 0
            assert store.conn.execute("PRAGMA cache_size").fetchone()[0] == cache
            _integrity(store)
            _exact(reader, db)
            store.delete_sessions_with_audit([make_session(ended).id], [])  # no deferral now
            assert _count(store, STALE) == 0
            _integrity(store)
        finally:
            reader.close()


def test_a_rebuilt_index_is_one_segment(db_path: Path) -> None:
    """A catch-up by rebuild leaves the index merged: FTS5 writes a big rebuild as several
    segments and would merge them a little at a time inside the writes that follow (a
    force-logout's p99 was 20-30 ms for a minute after a rebuild at 1M rows)."""
    with SqliteStore(db_path) as store:
        store.copy_in([make_session(i) for i in range(1, 40_001)], [])
        store.begin_bulk_ending("job-1")
        gone = [make_session(i).id for i in range(1, 20_001)]
        assert store.delete_sessions_with_audit(gone, []) == 20_000
        assert store.end_bulk_ending("job-1").how is CatchUpHow.REBUILT  # 20,000 rows left
        segments = f"SELECT count(DISTINCT segid) FROM {SEARCH_TABLE}_idx"
        assert store.conn.execute(segments).fetchone()[0] == 1
        _integrity(store)


def test_a_deferral_left_by_a_stopped_job_keeps_the_filter_exact_until_it_is_caught_up(
    db_path: Path,
) -> None:
    """Another connection's deletes are deferred too while the deferral is on; ending it from
    a new store (a resumed job) catches them all up."""
    db = DatabaseUrl(Backend.SQLITE, db_path)
    with SqliteStore(db_path) as store:
        for i in range(1, 241):
            store.insert_session(make_session(i))
        store.begin_bulk_ending("job-2")
    with SqliteStore(db_path) as other:
        other.delete_sessions_with_audit([make_session(i).id for i in range(1, 31)], [])
        assert _count(other, STALE) == 30
        reader = SqliteReader(db_path)
        try:
            _exact(reader, db)
        finally:
            reader.close()
        assert other.end_bulk_ending("job-2").how is CatchUpHow.DELETED
        _integrity(other)
        assert other.end_bulk_ending("job-2").how is CatchUpHow.NOTHING


def test_a_v5_database_migrates_to_deferrable_deletes(db_path: Path) -> None:
    conn = sqlite3.connect(db_path)
    for migration in MIGRATIONS[:5]:
        migration(sqlite_utils.Database(conn))
    conn.execute("PRAGMA user_version = 5")
    conn.commit()
    conn.close()
    with SqliteStore(db_path) as store:
        assert store.migrated_from == 5 and store.schema_version() == SCHEMA_VERSION
        store.insert_session(make_session(1))
        store.begin_bulk_ending("job-3")
        store.delete_sessions_with_audit([make_session(1).id], [])
        assert _count(store, STALE) == 1
        assert store.end_bulk_ending("job-3").how is CatchUpHow.REBUILT  # nothing left
        _integrity(store)
