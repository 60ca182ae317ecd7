"""The monitor's read model on SQLite: its own read-only connection, orders by covering index.

Each reader has its own connection and lock, so a long reload in the poller thread never makes the
UI thread wait (WAL readers do not block each other or the writer). The change token is
``PRAGMA data_version`` (changes whenever another connection commits). An order is read as
``order.py`` describes; the rows around the cursor's session are read by key (``WHERE (sort
columns) >= (its values) ... LIMIT``, and the mirror query for the rows before it), never with
``OFFSET``. A filter of three characters or more goes through the FTS5 trigram index (schema v2)
instead of ``LIKE`` over every row.
"""

from __future__ import annotations

import sqlite3
import threading
from array import array
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from sessionmon.core.errors import DatabaseError, DatabaseMissing
from sessionmon.core.store import keyset
from sessionmon.core.store.base import AuditEntry, Session
from sessionmon.core.store.order import OrderReader, ViewQuery
from sessionmon.core.store.schema import AUDIT_COLUMNS, SEARCH_COLUMNS, SESSION_COLUMNS, TRIGRAM
from sessionmon.core.store.sqlite_schema import SEARCH_TABLE, translate

_FETCH_CHUNK = 65_536
_COUNT_LIVE = "SELECT COUNT(*) FROM sessions WHERE refresh_exp > ?"


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class _Snapshot:
    """One order on a connection of its own, inside one read transaction."""

    def __init__(self, reader: SqliteReader, query: ViewQuery, now: float) -> None:
        self.query = query
        self.now = now
        self.sql, self.params = reader.order_sql(query, now)
        self.conn = reader.connect()
        self.conn.execute("BEGIN")  # one snapshot for the count, the windows and the rest

    def _run(self, sql: str, params: Sequence[object]) -> list[tuple[Any, ...]]:
        return self.conn.execute(sql, list(params)).fetchall()

    def count(self) -> int:
        return int(self.conn.execute(_COUNT_LIVE, (self.now,)).fetchone()[0])

    def top(self, limit: int) -> list[int]:
        rows = self.conn.execute(self.sql + " LIMIT :limit", {**self.params, "limit": limit})
        return [r[0] for r in rows]

    def position(self, key: int, n: int) -> int | None:
        q = self.query
        return keyset.position_in(self._run, keyset.SQLITE, q.sort, q.descending, self.now, key, n)

    def window(self, key: int, size: int) -> tuple[list[int], list[int]]:
        q = self.query
        return keyset.window(self._run, keyset.SQLITE, q.sort, q.descending, self.now, key, size)

    def chunks(self, size: int) -> Iterator[list[int]]:
        cur = self.conn.execute(self.sql, self.params)
        while rows := cur.fetchmany(size):
            yield [r[0] for r in rows]

    def interrupt(self) -> None:
        self.conn.interrupt()

    def close(self) -> None:
        self.conn.close()


_AUDIT_COLS = ", ".join(AUDIT_COLUMNS)


class SqliteReader(OrderReader):
    """Read-only queries for the monitor; every ``sqlite3.Error`` becomes a ``DatabaseError``."""

    dialect = keyset.SQLITE

    def __init__(
        self,
        path: str | Path,
        *,
        busy_timeout: float = 1.0,
        progressive_from: int | None = None,
    ) -> None:
        super().__init__(progressive_from)
        self.path = Path(path)
        if not self.path.exists():
            raise DatabaseMissing(f"database not found: {self.path}")
        if self.path.is_dir():  # SQLite would only say "disk I/O error"
            raise DatabaseError(f"database path {self.path} is a directory")
        self.busy_timeout = busy_timeout
        self._lock = threading.Lock()
        try:
            self.conn = self.connect()
            self.conn.execute("SELECT 1 FROM sessions LIMIT 0")
            self.searchable = (
                self.conn.execute(
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                    (SEARCH_TABLE,),
                ).fetchone()
                is not None
            )
        except sqlite3.Error as exc:
            raise translate(exc, self.path) from None

    def connect(self) -> sqlite3.Connection:
        """A new read-only connection to the database."""
        return sqlite3.connect(
            f"file:{self.path}?mode=ro",
            uri=True,
            timeout=self.busy_timeout,
            check_same_thread=False,
            isolation_level=None,
        )

    def close(self) -> None:
        self.cancel_fill()
        with self._lock:
            self.conn.close()

    def _all(self, sql: str, params: Iterable[object] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self.conn.execute(sql, list(params)).fetchall()
            except sqlite3.Error as exc:
                raise translate(exc, self.path) from None

    def change_token(self) -> int:
        """``PRAGMA data_version``: changes whenever another connection commits."""
        return int(self._all("PRAGMA data_version")[0][0])

    def count_live(self, now: float) -> int:
        """Sessions whose refresh token is still valid (through the refresh_exp index)."""
        return int(self._all(_COUNT_LIVE, (now,))[0][0])

    def _live_at_least(self, now: float, n: int) -> bool:
        """True if ``n`` sessions or more are live (counts at most ``n``: cheap at 1M)."""
        sql = "SELECT COUNT(*) FROM (SELECT 1 FROM sessions WHERE refresh_exp > ? LIMIT ?)"
        return int(self._all(sql, (now, n))[0][0]) >= n

    def order_sql(self, query: ViewQuery, now: float) -> tuple[str, dict[str, object]]:
        """The ``SELECT rowid ... ORDER BY`` of ``query`` and its parameters."""
        sql = "SELECT rowid FROM sessions WHERE refresh_exp > :now"
        params: dict[str, object] = {"now": now}
        text = query.text.strip()
        if text and self.searchable and len(text) >= TRIGRAM:
            # A phrase of trigrams: a case-insensitive substring of any of the four columns.
            sql += f" AND rowid IN (SELECT rowid FROM {SEARCH_TABLE} WHERE {SEARCH_TABLE} MATCH :q)"
            params["q"] = '"' + text.replace('"', '""') + '"'
        elif text:
            sql += (
                " AND (" + " OR ".join(f"{c} LIKE :pat ESCAPE '\\'" for c in SEARCH_COLUMNS) + ")"
            )
            params["pat"] = _like(text)
        columns = keyset.SQLITE.columns(query.sort)
        sql += " ORDER BY " + keyset.SQLITE.order_by(columns, query.descending)
        return sql, params

    def _snapshot(self, query: ViewQuery, now: float) -> _Snapshot:
        try:
            return _Snapshot(self, query, now)
        except sqlite3.Error as exc:
            raise translate(exc, self.path) from None

    def _run(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        return self._all(sql, params)

    def _top(self, query: ViewQuery, now: float, limit: int) -> list[int]:
        sql, params = self.order_sql(query, now)
        return [r[0] for r in self._all_named(sql + " LIMIT :limit", {**params, "limit": limit})]

    def _all_named(self, sql: str, params: dict[str, object]) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self.conn.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise translate(exc, self.path) from None

    def _describe(self, exc: BaseException) -> DatabaseError:
        if isinstance(exc, sqlite3.Error):
            return translate(exc, self.path)
        return DatabaseError(f"database {self.path}: reading the session order failed ({exc!r})")

    def _read_all(self, query: ViewQuery, now: float) -> array:
        sql, params = self.order_sql(query, now)
        out = array("q")
        with self._lock:
            try:
                cur = self.conn.execute(sql, params)
                while rows := cur.fetchmany(_FETCH_CHUNK):
                    out.extend(r[0] for r in rows)
            except sqlite3.Error as exc:
                raise translate(exc, self.path) from None
        return out

    def audit_after(self, after: int, actions: Sequence[str], limit: int = 50) -> list[AuditEntry]:
        """Audit rows newer than id ``after`` with one of ``actions``, oldest first."""
        if not actions:
            return []
        marks = ", ".join("?" for _ in actions)
        rows = self._all(
            f"SELECT {_AUDIT_COLS} FROM audit WHERE id > ? AND action IN ({marks}) "
            "ORDER BY id LIMIT ?",
            (after, *actions, limit),
        )
        return [AuditEntry.from_row(r) for r in rows]

    def last_audit_id(self) -> int:
        return int(self._all("SELECT coalesce(max(id), 0) FROM audit")[0][0])

    def rows(self, keys: Iterable[int]) -> dict[int, Session]:
        """The sessions with these row ids that still exist, by row id."""
        ids = list(keys)
        found: dict[int, Session] = {}
        cols = ", ".join(SESSION_COLUMNS)
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ", ".join("?" for _ in chunk)
            for row in self._all(
                f"SELECT rowid, {cols} FROM sessions WHERE rowid IN ({marks})", chunk
            ):
                found[row[0]] = Session(*row[1:])
        return found
