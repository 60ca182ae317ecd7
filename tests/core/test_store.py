"""The SQLite store: schema, migrations, pragmas, queries and their plans, audit, data_version."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from sessionmon.core.clock import FrozenClock
from sessionmon.core.errors import DatabaseError, DatabaseMissing
from sessionmon.core.store import (
    SCHEMA_VERSION,
    SESSION_COLUMNS,
    SORTS,
    DatabaseUrl,
    Session,
    SessionStore,
    SqliteStore,
    open_store,
)

NOW = 1_800_000_000.0


def make_session(i: int, **overrides: object) -> Session:
    fields: dict[str, object] = {
        "id": f"s{i:05d}",
        "user_id": f"u{i % 7}",
        "email": f"user{i % 7}@example.com",
        "name": f"User {i % 7}",
        "created_at": NOW - 1000 + i,
        "last_seen_at": NOW - (i * 37) % 500,
        "ip": "10.0.0.1",
        "user_agent": "pytest",
        "access_jti": f"a{i}",
        "access_exp": NOW + (i * 13) % 900 - 100,
        "refresh_jti": f"r{i}",
        "refresh_exp": NOW + (i * 29) % 7200 - 600,
        "refresh_count": 0,
        "source": "test",
    }
    fields.update(overrides)
    return Session(**fields)  # type: ignore[arg-type]


@pytest.fixture
def frozen_store(db_url: DatabaseUrl) -> Iterator[SessionStore]:
    """This test's store on each backend, with the clock at ``NOW``."""
    s = open_store(db_url, clock=FrozenClock(NOW))
    yield s
    s.close()


@pytest.fixture
def filled(frozen_store: SessionStore) -> SessionStore:
    for i in range(300):
        frozen_store.insert_session(make_session(i))
    return frozen_store


@pytest.fixture
def sqlite_filled(db_path: Path) -> Iterator[SqliteStore]:
    """A filled SQLite store, for the tests that read SQLite's own query plans."""
    s = SqliteStore(db_path, clock=FrozenClock(NOW))
    for i in range(300):
        s.insert_session(make_session(i))
    yield s
    s.close()


# -- schema, pragmas, migrations -------------------------------------------------------------


def test_new_database_has_schema_version_wal_and_busy_timeout(db_path: Path) -> None:
    with SqliteStore(db_path, busy_timeout=2.5) as store:
        conn = store.conn
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert store.schema_version() == SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 2500
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"sessions", "audit"} <= tables
    # WAL is a property of the file: another connection sees it too.
    other = sqlite3.connect(db_path)
    assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    other.close()


def test_migrates_an_empty_file(db_path: Path) -> None:
    db_path.write_bytes(b"")
    with SqliteStore(db_path) as store:
        assert store.schema_version() == SCHEMA_VERSION
        store.insert_session(make_session(1))
        assert store.get_session("s00001") is not None


# The sessions columns of schema versions 1 and 2 (version 3 added the rotation columns).
V1_SESSION_COLUMNS = SESSION_COLUMNS[: SESSION_COLUMNS.index("generation")]


def test_migration_v2_upgrades_a_v1_database_with_data(db_path: Path) -> None:
    import sqlite_utils

    from sessionmon.core.store.sqlite_schema import MIGRATIONS, SEARCH_TABLE

    # A database written by schema v1, with rows.
    v1_rows = [make_session(i) for i in range(20)]
    conn = sqlite3.connect(db_path)
    MIGRATIONS[0](sqlite_utils.Database(conn))
    conn.execute("PRAGMA user_version = 1")
    conn.executemany(
        f"INSERT INTO sessions ({', '.join(V1_SESSION_COLUMNS)}) "
        f"VALUES ({', '.join('?' for _ in V1_SESSION_COLUMNS)})",
        [tuple(getattr(s, c) for c in V1_SESSION_COLUMNS) for s in v1_rows],
    )
    conn.commit()
    conn.close()
    with SqliteStore(db_path) as store:
        assert store.schema_version() == SCHEMA_VERSION
        assert [s.id for s in store.list_sessions(include_expired=True, order="created_at")] == [
            s.id for s in sorted(v1_rows, key=lambda s: s.created_at)
        ]
        index_columns = {
            name: [r[2] for r in store.conn.execute(f"PRAGMA index_info({name})")]
            for name in ("sessions_by_last_seen", "sessions_by_created", "sessions_by_email")
        }
        assert index_columns == {
            "sessions_by_last_seen": ["last_seen_at", "refresh_exp"],
            "sessions_by_created": ["created_at", "refresh_exp"],
            "sessions_by_email": ["email", "refresh_exp"],
        }
        found = store.conn.execute(
            f"SELECT rowid FROM {SEARCH_TABLE} WHERE {SEARCH_TABLE} MATCH ?", ('"s0001"',)
        ).fetchall()
        assert len(found) == 10  # s00010 .. s00019
        store.conn.execute(f"INSERT INTO {SEARCH_TABLE}({SEARCH_TABLE}) VALUES ('integrity-check')")
        # Later writes keep it current (triggers): insert, delete, and touch leaves it alone.
        store.insert_session(make_session(777))
        store.touch("s00777", NOW)
        match = f"SELECT count(*) FROM {SEARCH_TABLE} WHERE {SEARCH_TABLE} MATCH ?"
        assert store.conn.execute(match, ('"s00777"',)).fetchone()[0] == 1
        store.delete_sessions_with_audit(["s00777"], [])
        assert store.conn.execute(match, ('"s00777"',)).fetchone()[0] == 0
        store.conn.execute(f"INSERT INTO {SEARCH_TABLE}({SEARCH_TABLE}) VALUES ('integrity-check')")


def test_reopening_keeps_data_and_does_not_migrate_again(db_path: Path) -> None:
    with SqliteStore(db_path) as store:
        store.insert_session(make_session(1))
    with SqliteStore(db_path) as store:
        assert store.get_session("s00001") == make_session(1)
        assert store.schema_version() == SCHEMA_VERSION


def test_refuses_a_newer_schema(db_path: Path) -> None:
    SqliteStore(db_path).close()
    conn = sqlite3.connect(db_path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(
        DatabaseError, match=rf"schema version {SCHEMA_VERSION + 1}.*upgrade sessionmon"
    ):
        SqliteStore(db_path)


def test_missing_database_without_create(tmp_path: Path) -> None:
    with pytest.raises(DatabaseMissing, match="not found"):
        SqliteStore(tmp_path / "nope.db", create=False)
    assert not (tmp_path / "nope.db").exists()


def test_directory_instead_of_a_file(tmp_path: Path) -> None:
    with pytest.raises(DatabaseError, match="is a directory"):
        SqliteStore(tmp_path)


def test_read_only_store(db_path: Path) -> None:
    with SqliteStore(db_path) as store:
        store.insert_session(make_session(1))
    with SqliteStore(db_path, readonly=True) as ro:
        assert ro.get_session("s00001") is not None
        with pytest.raises(DatabaseError, match="read-only"):
            ro.insert_session(make_session(2))


def test_read_only_refuses_to_migrate(db_path: Path) -> None:
    sqlite3.connect(db_path).execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(DatabaseError, match="needs a migration"):
        SqliteStore(db_path, readonly=True)


# -- sessions ------------------------------------------------------------------------------


def test_insert_get_and_get_many(frozen_store: SessionStore) -> None:
    sessions = [make_session(i) for i in range(5)]
    for s in sessions:
        frozen_store.insert_session(s)
    assert frozen_store.get_session("s00003") == sessions[3]
    assert frozen_store.get_session("missing") is None
    got = frozen_store.get_sessions(["s00004", "missing", "s00001", "s00004"])
    assert [s.id for s in got] == ["s00004", "s00001"]


def test_get_sessions_in_chunks(frozen_store: SessionStore) -> None:
    for i in range(1200):
        frozen_store.insert_session(make_session(i))
    ids = [f"s{i:05d}" for i in range(1199, -1, -1)]
    assert [s.id for s in frozen_store.get_sessions(ids)] == ids


def test_sessions_for_user_by_id_or_email(frozen_store: SessionStore) -> None:
    frozen_store.insert_session(make_session(1, user_id="42", email="ann@example.com"))
    frozen_store.insert_session(make_session(2, user_id="42", email="ann@example.com"))
    frozen_store.insert_session(make_session(3, user_id="43", email="bob@example.com"))
    assert [s.id for s in frozen_store.sessions_for_user("42")] == ["s00001", "s00002"]
    assert [s.id for s in frozen_store.sessions_for_user("ANN@example.com")] == [
        "s00001",
        "s00002",
    ]
    assert frozen_store.sessions_for_user("nobody") == []


def test_update_access_and_touch(frozen_store: SessionStore) -> None:
    frozen_store.insert_session(make_session(1))
    assert frozen_store.update_access("s00001", "new-jti", NOW + 900, NOW + 5)
    assert frozen_store.update_access("s00001", "newer-jti", NOW + 950, NOW + 50)
    row = frozen_store.get_session("s00001")
    assert row is not None
    assert (row.access_jti, row.access_exp, row.last_seen_at, row.refresh_count) == (
        "newer-jti",
        NOW + 950,
        NOW + 50,
        2,
    )
    assert frozen_store.touch("s00001", NOW + 60)
    assert frozen_store.get_session("s00001").last_seen_at == NOW + 60  # type: ignore[union-attr]
    assert not frozen_store.update_access("missing", "x", NOW, NOW)
    assert not frozen_store.touch("missing", NOW)


def test_session_state() -> None:
    s = make_session(1, access_exp=NOW + 10, refresh_exp=NOW + 100)
    assert s.state(NOW) == "active"
    assert s.state(NOW + 10) == "refresh due"
    assert s.state(NOW + 100) == "expired"


@pytest.mark.parametrize("order", list(SORTS))
@pytest.mark.parametrize("descending", [False, True])
def test_list_sessions_orders_and_filters_live_ones(
    filled: SessionStore, order: str, descending: bool
) -> None:
    rows = filled.list_sessions(order=order, descending=descending)
    assert rows and all(r.refresh_exp > NOW for r in rows)  # type: ignore[operator]
    live = [make_session(i) for i in range(300) if make_session(i).refresh_exp > NOW]  # type: ignore[operator]
    assert {r.id for r in rows} == {s.id for s in live}
    cols = SORTS[order].keys
    keys = [tuple(getattr(r, c) for c in cols) for r in rows]
    assert keys == sorted(keys, reverse=descending)


def test_list_sessions_paging_user_and_expired(filled: SessionStore) -> None:
    everything = filled.list_sessions(include_expired=True, limit=None)
    assert len(everything) == 300 == filled.count_sessions(include_expired=True)
    live = filled.list_sessions()
    assert len(live) == filled.count_sessions() < 300
    page1 = filled.list_sessions(limit=10)
    page2 = filled.list_sessions(limit=10, offset=10)
    assert [r.id for r in page1 + page2] == [r.id for r in live[:20]]
    mine = filled.list_sessions(user="USER3@example.com")
    assert mine and all(r.email == "user3@example.com" for r in mine)
    assert filled.list_sessions(user="u3") == mine
    with pytest.raises(ValueError, match="unknown order"):
        filled.list_sessions(order="id; DROP TABLE sessions")


def test_purge_expired_and_foreign_sessions(filled: SessionStore) -> None:
    expired = filled.count_sessions(include_expired=True) - filled.count_sessions()
    assert filled.purge_expired(NOW) == expired > 0
    assert filled.count_sessions(include_expired=True) == filled.count_sessions()
    assert not filled.has_foreign_sessions("test")
    filled.insert_session(make_session(9999, source=None))
    assert filled.has_foreign_sessions("test")


# -- query plans ----------------------------------------------------------------------------


def query_plan(store: SqliteStore, call: object) -> list[str]:
    """Run ``call`` and return the EXPLAIN QUERY PLAN details of the SELECT it issued."""
    statements: list[str] = []
    store.conn.set_trace_callback(statements.append)
    try:
        call()  # type: ignore[operator]
    finally:
        store.conn.set_trace_callback(None)
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(selects) == 1, statements
    return [row[3] for row in store.conn.execute("EXPLAIN QUERY PLAN " + selects[0])]


def assert_indexed_without_sort(plan: list[str], index: str) -> None:
    text = " | ".join(plan)
    assert f"USING INDEX {index}" in text or f"USING COVERING INDEX {index}" in text, text
    assert "TEMP B-TREE" not in text, text
    assert not any(p.startswith("SCAN sessions") and "INDEX" not in p for p in plan), text


def test_plan_live_sessions_by_access_expiry_first_200(sqlite_filled: SqliteStore) -> None:
    plan = query_plan(
        sqlite_filled, lambda: sqlite_filled.list_sessions(order="access_exp", limit=200)
    )
    assert_indexed_without_sort(plan, "sessions_by_access_exp")


@pytest.mark.parametrize("descending", [False, True])
def test_plan_by_last_seen(sqlite_filled: SqliteStore, descending: bool) -> None:
    plan = query_plan(
        sqlite_filled,
        lambda: sqlite_filled.list_sessions(order="last_seen_at", descending=descending, limit=200),
    )
    assert_indexed_without_sort(plan, "sessions_by_last_seen")


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.list_sessions(user="user3@example.com", limit=200),
        lambda s: s.sessions_for_user("user3@example.com"),
    ],
)
def test_plan_by_user_searches_the_user_and_email_indexes(
    sqlite_filled: SqliteStore, call: object
) -> None:
    plan = query_plan(sqlite_filled, lambda: call(sqlite_filled))  # type: ignore[operator]
    text = " | ".join(plan)
    assert "SEARCH sessions USING INDEX sessions_by_user (user_id=?)" in text, text
    assert "SEARCH sessions USING INDEX sessions_by_email (email=?" in text, text
    # A user's handful of rows may be sorted in memory, but the table is never scanned.
    assert not any(p.startswith("SCAN sessions") for p in plan), text


def test_plan_count_live_sessions(sqlite_filled: SqliteStore) -> None:
    plan = query_plan(sqlite_filled, lambda: sqlite_filled.count_sessions())
    assert any("sessions_by_refresh_exp" in p for p in plan), plan


# -- audit ----------------------------------------------------------------------------------


def test_audit_rows_round_trip_newest_first(frozen_store: SessionStore) -> None:
    frozen_store.write_audit(
        [
            {
                "at": NOW,
                "actor": "ops",
                "action": "force_logout",
                "session_id": "s1",
                "user_id": "42",
                "email": "ann@example.com",
                "reason": "incident",
                "revoked": ["p:bl:a1", "p:bl:sid:s1"],
            },
            {"at": NOW + 1, "actor": "ops", "action": "logout", "session_id": "s2"},
        ]
    )
    rows = frozen_store.audit()
    assert [r.session_id for r in rows] == ["s2", "s1"]
    first = rows[1]
    assert first.revoked == ["p:bl:a1", "p:bl:sid:s1"]
    assert (first.actor, first.action, first.reason, first.outcome) == (
        "ops",
        "force_logout",
        "incident",
        "ok",
    )
    assert rows[0].revoked == [] and rows[0].reason is None
    with frozen_store.transaction() as conn:  # type: ignore[attr-defined]
        raw = conn.execute("SELECT revoked FROM audit WHERE session_id='s1'").fetchone()
    assert raw[0] == '["p:bl:a1", "p:bl:sid:s1"]'  # stored as JSON text
    assert [r.session_id for r in frozen_store.audit(session_id="s1")] == ["s1"]
    assert [r.session_id for r in frozen_store.audit(user="ann@example.com")] == ["s1"]
    assert len(frozen_store.audit(limit=1)) == 1
    assert rows[0].to_dict()["revoked"] == []


def test_delete_sessions_with_audit_is_one_transaction(frozen_store: SessionStore) -> None:
    for i in range(3):
        frozen_store.insert_session(make_session(i))
    with pytest.raises(DatabaseError):
        # The audit row breaks NOT NULL ``actor``: the deletes must roll back with it.
        frozen_store.delete_sessions_with_audit(
            ["s00000"], [{"at": NOW, "actor": None, "action": "x"}]
        )
    assert frozen_store.get_session("s00000") is not None
    deleted = frozen_store.delete_sessions_with_audit(
        ["s00000", "s00001", "missing"], [{"at": NOW, "actor": "t", "action": "force_logout"}]
    )
    assert deleted == 2 and frozen_store.count_sessions(include_expired=True) == 1
    assert len(frozen_store.audit()) == 1


# -- data_version ---------------------------------------------------------------------------


def test_data_version_changes_only_on_commits_by_others(db_path: Path) -> None:
    with SqliteStore(db_path) as mine, SqliteStore(db_path) as theirs:
        v0 = mine.data_version()
        assert mine.data_version() == v0  # nothing happened
        mine.insert_session(make_session(1))
        assert mine.data_version() == v0  # own commits do not count
        theirs.get_session("s00001")
        assert mine.data_version() == v0  # reads by others do not count
        theirs.insert_session(make_session(2))
        v1 = mine.data_version()
        assert v1 != v0
        assert mine.data_version() == v1
        raw = sqlite3.connect(db_path, isolation_level=None)
        raw.execute("BEGIN IMMEDIATE")
        raw.execute("UPDATE sessions SET name = 'x'")
        assert mine.data_version() == v1  # not committed yet
        raw.execute("COMMIT")
        raw.close()
        assert mine.data_version() != v1


def test_wal_checkpoints_run_in_the_background(db_path: Path) -> None:
    """Commits never pay for a checkpoint: auto-checkpoint is off, a thread does it instead."""
    import time

    store = SqliteStore(db_path, checkpoint_interval=0.05)
    try:
        assert store.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        checkpointer = store._checkpointer
        assert checkpointer is not None and checkpointer._thread.is_alive()
        store.write_audit([{"at": 1.0, "actor": "t", "action": "x"} for _ in range(200)])
        deadline = time.monotonic() + 10
        while checkpointer.passes_with_work == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert checkpointer.passes_with_work > 0
        # A second store on the same file shares the thread; closing one keeps it running.
        other = SqliteStore(db_path, checkpoint_interval=0.05)
        assert other._checkpointer is checkpointer
        other.close()
        assert checkpointer._thread.is_alive()
    finally:
        store.close()
    assert not checkpointer._thread.is_alive()


def test_automatic_checkpoints_can_be_kept(db_path: Path) -> None:
    store = SqliteStore(db_path, checkpoint_interval=None)
    try:
        assert store.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 1000
        assert store._checkpointer is None
    finally:
        store.close()
