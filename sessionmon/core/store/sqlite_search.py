"""SQLite's trigram index during a bulk ending: deletes deferred, then caught up (schema v6).

An external-content FTS5 index pays for each deleted row with the row's text tokenized again and
its entries merged out of the index: ~50 us a row, 4x the row's own delete. A logout job that
ends a million sessions defers that work (``defer``): while a deferral row exists, the delete
trigger copies the row's search text into the stale table instead. ``catch_up`` then makes the
index exact again in the cheaper of two ways: the stale entries deleted in large chunks (~20 us
a row), or the index rebuilt from the rows left (~20 us a row left), when fewer rows are left
than went and a rebuild stays short (one transaction).

Throughout, the filter stays exact: a stale entry names a rowid no session has (the filter's
``rowid IN (... MATCH ...)`` finds nothing for it), and the insert trigger removes the stale
entries of a rowid SQLite hands out again before it indexes the new row.
"""

from __future__ import annotations

import sqlite3
import time

from sessionmon.core.store.base import CatchUp, CatchUpHow
from sessionmon.core.store.schema import SEARCH_COLUMNS
from sessionmon.core.store.sqlite_schema import DEFERRALS, SEARCH_TABLE, STALE, rebuild_index

# A rebuild re-indexes every row left in one transaction: only up to this many (~5 s).
REBUILD_MAX = 250_000
# Stale entries deleted from the index per transaction (~0.4 s of the write lock).
DELETE_CHUNK = 20_000


def deferrable(conn: sqlite3.Connection) -> bool:
    """True when the database has the deferral table (schema v6 with a trigram index)."""
    sql = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
    return conn.execute(sql, (DEFERRALS,)).fetchone() is not None


def defer(conn: sqlite3.Connection, job: str, now: float) -> None:
    """From now on, sessions deleted by anyone leave their index entries to ``catch_up``."""
    conn.execute(f"INSERT OR REPLACE INTO {DEFERRALS} (job, since) VALUES (?, ?)", (job, now))


def end_deferral(conn: sqlite3.Connection, job: str) -> tuple[int, int, bool]:
    """Remove ``job``'s deferral (in the caller's transaction): (stale entries, rows left,
    whether another deferral is still on)."""
    conn.execute(f"DELETE FROM {DEFERRALS} WHERE job = ?", (job,))
    stale = int(conn.execute(f"SELECT count(*) FROM {STALE}").fetchone()[0])
    left = int(conn.execute("SELECT count(*) FROM sessions").fetchone()[0]) if stale else 0
    others = conn.execute(f"SELECT 1 FROM {DEFERRALS} LIMIT 1").fetchone() is not None
    return stale, left, others


def rebuild(conn: sqlite3.Connection) -> None:
    """Rebuild the index from the rows left and forget every stale entry (caller's
    transaction)."""
    rebuild_index(conn)
    conn.execute(f"DELETE FROM {STALE}")


def delete_stale(conn: sqlite3.Connection, limit: int) -> int:
    """Delete up to ``limit`` stale entries from the index (caller's transaction); how many."""
    cols = ", ".join(SEARCH_COLUMNS)
    t = SEARCH_TABLE
    first = f"SELECT rowid FROM {STALE} ORDER BY rowid LIMIT {int(limit)}"
    conn.execute(
        f"INSERT INTO {t}({t}, rowid, {cols}) SELECT 'delete', rowid, {cols} FROM {STALE} "
        f"WHERE rowid IN ({first})"
    )
    return int(conn.execute(f"DELETE FROM {STALE} WHERE rowid IN ({first})").rowcount)


def should_rebuild(stale: int, left: int) -> bool:
    """A rebuild when it re-indexes fewer rows than there are stale entries, and stays short."""
    return left <= stale and left <= REBUILD_MAX


def timed(how: CatchUpHow, stale: int, started: float) -> CatchUp:
    return CatchUp(how, stale, time.perf_counter() - started)
