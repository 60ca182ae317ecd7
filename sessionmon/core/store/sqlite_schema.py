"""SQLite schema: forward migrations (``PRAGMA user_version``); one translator of its errors."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import sqlite_utils

from sessionmon.core.errors import DatabaseCorrupt, DatabaseError, DatabaseLocked
from sessionmon.core.store.schema import ENDED_INDEXES, SEARCH_COLUMNS

SEARCH_TABLE = "sessions_search"
# Schema v6: while a row of DEFERRALS exists, a deleted session's search text goes to STALE
# instead of the trigram index (see ``sqlite_search``).
DEFERRALS = "sessions_search_deferrals"
STALE = "sessions_search_stale"


def _migrate_v1(db: sqlite_utils.Database) -> None:
    sessions, audit = db.table("sessions"), db.table("audit")  # tables, never views
    sessions.create(
        {
            "id": str,
            "user_id": str,
            "email": str,
            "name": str,
            "created_at": float,
            "last_seen_at": float,
            "ip": str,
            "user_agent": str,
            "access_jti": str,
            "access_exp": float,
            "refresh_jti": str,
            "refresh_exp": float,
            "refresh_count": int,
            "source": str,
        },
        pk="id",
        not_null={"user_id", "created_at", "last_seen_at", "refresh_count"},
        defaults={"refresh_count": 0},
    )
    # Live sessions ordered by access expiry (WHERE refresh_exp > ? ORDER BY access_exp, ...).
    sessions.create_index(["access_exp", "refresh_exp"], index_name="sessions_by_access_exp")
    sessions.create_index(["refresh_exp"], index_name="sessions_by_refresh_exp")
    sessions.create_index(["user_id"], index_name="sessions_by_user")
    sessions.create_index(["email"], index_name="sessions_by_email")
    sessions.create_index(["last_seen_at"], index_name="sessions_by_last_seen")
    sessions.create_index(["created_at"], index_name="sessions_by_created")
    audit.create(
        {
            "id": int,
            "at": float,
            "actor": str,
            "action": str,
            "session_id": str,
            "user_id": str,
            "email": str,
            "reason": str,
            "revoked": str,
            "outcome": str,
        },
        pk="id",
        not_null={"at", "actor", "action", "outcome"},
    )
    audit.create_index(["session_id"], index_name="audit_by_session")
    audit.create_index(["at"], index_name="audit_by_at")


def trigram_search_available(conn: sqlite3.Connection) -> bool:
    """True when this SQLite has FTS5 with the trigram tokenizer (3.34 and later)."""
    try:
        conn.execute("CREATE VIRTUAL TABLE temp.trigram_probe USING fts5(x, tokenize='trigram')")
        conn.execute("DROP TABLE temp.trigram_probe")
    except sqlite3.Error:
        return False
    return True


def _migrate_v2(db: sqlite_utils.Database) -> None:
    """Indexes for the monitor at a million sessions.

    Every sort of the live list (``WHERE refresh_exp > ? ORDER BY <col>``) reads one index only:
    the single-column indexes on last_seen_at, created_at and email become (col, refresh_exp)
    (same names, so each write still updates one index for them). The filter gets an FTS5 trigram
    index of email, name, id and ip (external content, kept current by triggers that fire on
    insert and delete only: touch and silent refresh do not update it). Without FTS5 trigram
    support the filter falls back to ``LIKE`` over the table.
    """
    conn = db.conn
    for name, column in (
        ("sessions_by_last_seen", "last_seen_at"),
        ("sessions_by_created", "created_at"),
        ("sessions_by_email", "email"),
    ):
        conn.execute(f"DROP INDEX IF EXISTS {name}")
        conn.execute(f"CREATE INDEX {name} ON sessions ({column}, refresh_exp)")
    if not trigram_search_available(conn):
        return
    cols = ", ".join(SEARCH_COLUMNS)
    new = ", ".join(f"new.{c}" for c in SEARCH_COLUMNS)
    old = ", ".join(f"old.{c}" for c in SEARCH_COLUMNS)
    t = SEARCH_TABLE
    conn.execute(
        f"CREATE VIRTUAL TABLE {t} USING fts5({cols}, content='sessions', "
        "content_rowid='rowid', tokenize='trigram', detail=full)"
    )
    rebuild_index(conn)
    conn.execute(
        f"CREATE TRIGGER {t}_insert AFTER INSERT ON sessions BEGIN "
        f"INSERT INTO {t}(rowid, {cols}) VALUES (new.rowid, {new}); END"
    )
    conn.execute(
        f"CREATE TRIGGER {t}_delete AFTER DELETE ON sessions BEGIN "
        f"INSERT INTO {t}({t}, rowid, {cols}) VALUES ('delete', old.rowid, {old}); END"
    )
    conn.execute(
        f"CREATE TRIGGER {t}_update AFTER UPDATE OF {cols} ON sessions BEGIN "
        f"INSERT INTO {t}({t}, rowid, {cols}) VALUES ('delete', old.rowid, {old}); "
        f"INSERT INTO {t}(rowid, {cols}) VALUES (new.rowid, {new}); END"
    )


def _migrate_v3(db: sqlite_utils.Database) -> None:
    """Refresh-token rotation: the live generation and the last rotation on the session row, and
    a JSON ``detail`` on audit rows (what a reuse detection saw). Existing sessions start at
    generation 0 with the refresh token they have."""
    conn = db.conn
    for ddl in (
        "ALTER TABLE sessions ADD COLUMN generation INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE sessions ADD COLUMN prev_refresh_jti TEXT",
        "ALTER TABLE sessions ADD COLUMN rotated_at FLOAT",
        "ALTER TABLE sessions ADD COLUMN rotated_ip TEXT",
        "ALTER TABLE sessions ADD COLUMN rotated_ua TEXT",
        "ALTER TABLE audit ADD COLUMN detail TEXT",
    ):
        conn.execute(ddl)


def _migrate_v4(db: sqlite_utils.Database) -> None:
    """Signing key per session and rotation history: the ``kid`` of the live access and refresh
    tokens, and the last rotations as JSON. Existing sessions have neither (NULL: unknown)."""
    conn = db.conn
    for ddl in (
        "ALTER TABLE sessions ADD COLUMN access_kid TEXT",
        "ALTER TABLE sessions ADD COLUMN refresh_kid TEXT",
        "ALTER TABLE sessions ADD COLUMN rotations TEXT",
    ):
        conn.execute(ddl)


def _migrate_v5(db: sqlite_utils.Database) -> None:
    """The history of ended sessions: one row per session deleted, written in the deleting
    transaction. Indexed by end time (retention, date ranges), user id, email, and by the
    refresh token's expiry (doctor: revoked sessions whose tokens may still be used)."""
    conn = db.conn
    conn.execute(
        """
        CREATE TABLE ended_sessions (
            id INTEGER PRIMARY KEY,
            session_id TEXT NOT NULL,
            user_id TEXT NOT NULL,
            email TEXT,
            name TEXT,
            created_at FLOAT NOT NULL,
            ended_at FLOAT NOT NULL,
            how TEXT NOT NULL,
            actor TEXT,
            reason TEXT,
            ip TEXT,
            user_agent TEXT,
            access_jti TEXT,
            access_exp FLOAT,
            refresh_jti TEXT,
            refresh_exp FLOAT,
            generation INTEGER NOT NULL DEFAULT 0,
            access_kid TEXT,
            refresh_kid TEXT
        )
        """
    )
    for name, cols in ENDED_INDEXES:
        conn.execute(f"CREATE INDEX {name} ON ended_sessions ({cols})")


def _migrate_v6(db: sqlite_utils.Database) -> None:
    """Deferred trigram-index deletes for bulk endings (see ``sqlite_search``).

    An external-content FTS5 delete costs ~50 us a row in 5,000-row transactions (4x the row's
    own delete). While ``sessions_search_deferrals`` has a row (a logout job is running), the
    delete trigger copies the row's search text into ``sessions_search_stale`` (keyed by the
    rowid) instead; the job's catch-up then removes those entries in large chunks or rebuilds
    the index, whichever is cheaper. Meanwhile a stale entry names a rowid no session has (the
    filter's ``rowid IN`` finds nothing for it), and the insert trigger first removes the stale
    entries of a rowid SQLite hands out again: the filter stays exact throughout.
    """
    conn = db.conn
    if (
        conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (SEARCH_TABLE,)
        ).fetchone()
        is None
    ):
        return  # no trigram support: nothing to defer
    cols = ", ".join(SEARCH_COLUMNS)
    new = ", ".join(f"new.{c}" for c in SEARCH_COLUMNS)
    old = ", ".join(f"old.{c}" for c in SEARCH_COLUMNS)
    t = SEARCH_TABLE
    conn.execute(f"CREATE TABLE {DEFERRALS} (job TEXT PRIMARY KEY, since FLOAT NOT NULL)")
    conn.execute(
        f"CREATE TABLE {STALE} (rowid INTEGER PRIMARY KEY, "
        + ", ".join(f"{c} TEXT" for c in SEARCH_COLUMNS)
        + ")"
    )
    conn.execute(f"DROP TRIGGER {t}_insert")
    conn.execute(f"DROP TRIGGER {t}_delete")
    conn.execute(
        f"CREATE TRIGGER {t}_insert AFTER INSERT ON sessions BEGIN "
        f"INSERT INTO {t}({t}, rowid, {cols}) "
        f"SELECT 'delete', rowid, {cols} FROM {STALE} WHERE rowid = new.rowid; "
        f"DELETE FROM {STALE} WHERE rowid = new.rowid; "
        f"INSERT INTO {t}(rowid, {cols}) VALUES (new.rowid, {new}); END"
    )
    conn.execute(
        f"CREATE TRIGGER {t}_delete AFTER DELETE ON sessions "
        f"WHEN NOT EXISTS (SELECT 1 FROM {DEFERRALS}) BEGIN "
        f"INSERT INTO {t}({t}, rowid, {cols}) VALUES ('delete', old.rowid, {old}); END"
    )
    conn.execute(
        f"CREATE TRIGGER {t}_delete_deferred AFTER DELETE ON sessions "
        f"WHEN EXISTS (SELECT 1 FROM {DEFERRALS}) BEGIN "
        f"INSERT INTO {STALE}(rowid, {cols}) VALUES (old.rowid, {old}); END"
    )


MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [
    _migrate_v1,
    _migrate_v2,
    _migrate_v3,
    _migrate_v4,
    _migrate_v5,
    _migrate_v6,
]


def translate(exc: sqlite3.Error, path: Path) -> DatabaseError:
    msg = str(exc)
    if "locked" in msg or "busy" in msg:
        return DatabaseLocked(f"database {path} is locked by another process (gave up waiting)")
    if "not a database" in msg or "malformed" in msg or "corrupt" in msg:
        return DatabaseCorrupt(f"database {path} is corrupt or not a SQLite file ({msg})")
    if "no such table" in msg:
        return DatabaseError(f"database {path} has no sessions table (not a sessionmon database)")
    if "unable to open" in msg:
        return DatabaseError(f"cannot open database {path} ({msg})")
    if "readonly" in msg:
        return DatabaseError(f"database {path} is read-only ({msg})")
    return DatabaseError(f"database {path}: {msg}")


def rebuild_index(conn: sqlite3.Connection) -> None:
    """Build the trigram index from the table, merged into one segment (caller's transaction).

    A rebuild writes the index as several segments, which FTS5 then merges a little at a time
    inside whichever writes come next: after a rebuild at 1M rows, a force-logout's p99 was
    20-30 ms for a minute or two (1.6 ms afterwards). ``optimize`` does that merge now, once
    (~0.25 s per 100,000 rows)."""
    t = SEARCH_TABLE
    conn.execute(f"INSERT INTO {t}({t}) VALUES ('rebuild')")
    conn.execute(f"INSERT INTO {t}({t}) VALUES ('optimize')")
