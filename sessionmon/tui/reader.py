"""The monitor's own read-only SQLite connection: row ids in view order, rows of the visible window.

The sessions view never holds a million ``Session`` objects: it holds one ``array('q')`` of row ids
in view order (8 bytes a session) built by one ``ORDER BY`` that reads a covering index only, and
reads the rows it draws by row id. Each reader has its own connection and lock, so a long reload in
the poller thread never makes the UI thread wait (WAL readers do not block each other or the
writer).

Reading a million row ids into Python takes ~0.4 s, so a long order is an ``Order`` filled in the
background: ``SessionReader.order`` returns once the first rows and the rows around the cursor's
session are in (~0.1 s at 1M), and a thread fills the rest from the same read transaction (one
snapshot, so positions never disagree). The rows around the cursor's session are read by key
(``WHERE (sort columns) >= (its values) ... LIMIT``, and the mirror query for the rows before it),
never with ``OFFSET``, and its position is counted from the nearer end of the order. A filter
of three characters or more goes through the FTS5 trigram index (schema v2) instead of ``LIKE``
over every row.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from array import array
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, SupportsIndex

from sessionmon.core.errors import DatabaseError, DatabaseLocked, DatabaseMissing
from sessionmon.core.store import SEARCH_COLUMNS, SEARCH_TABLE, SESSION_COLUMNS, AuditEntry, Session

# name -> (ORDER BY columns, natural direction descending?, label). Each order is exactly the
# columns of a covering index (schema v2) followed by rowid, so ``WHERE refresh_exp > ? ORDER BY``
# reads that index only, with no sort step; rowid last so ties are stable.
SORTS: dict[str, tuple[tuple[str, ...], bool, str]] = {
    "access_exp": (("access_exp", "refresh_exp", "rowid"), False, "access expiry"),
    "refresh_exp": (("refresh_exp", "rowid"), False, "refresh expiry"),
    "last_seen_at": (("last_seen_at", "refresh_exp", "rowid"), True, "last seen"),
    "created_at": (("created_at", "refresh_exp", "rowid"), True, "age"),
    "email": (("email", "refresh_exp", "rowid"), False, "email"),
}
SORT_CYCLE = tuple(SORTS)

_FETCH_CHUNK = 65_536
_FILL_CHUNK = 16_384
_FILL_PAUSE = 0.002  # seconds between chunks of a background fill (the GIL goes to the UI)
RESUME_AFTER = 0.5  # a background fill starts at the latest this long after its first rows
_FILTERED = SEARCH_COLUMNS
# Orders at least this long are filled in the background (smaller ones are read at once).
PROGRESSIVE_FROM = 100_000
# Rows read before ``order`` returns: the top of the list and this many around the anchor.
WINDOW = 256
# Filters shorter than this cannot use the trigram index.
TRIGRAM = 3
_COUNT_LIVE = "SELECT COUNT(*) FROM sessions WHERE refresh_exp > ?"


@dataclass(frozen=True)
class ViewQuery:
    """What the sessions view shows: a sort, its direction and a filter text.

    ``around`` is the row id of the session under the cursor when the query was made: the reader
    reads the rows around it first, so the cursor can stay on it before the whole order is in. It
    is a hint, not part of the query (it does not take part in ``==``).
    """

    sort: str = "access_exp"
    reverse: bool = False
    text: str = ""
    around: int | None = field(default=None, compare=False)

    @property
    def descending(self) -> bool:
        return SORTS[self.sort][1] != self.reverse

    @property
    def label(self) -> str:
        return SORTS[self.sort][2]


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _error(exc: sqlite3.Error, path: Path) -> DatabaseError:
    msg = str(exc)
    if "locked" in msg or "busy" in msg:
        return DatabaseLocked(f"database {path} is locked (gave up waiting)")
    if "not a database" in msg or "malformed" in msg:
        return DatabaseError(f"database {path} is corrupt or not a SQLite file")
    if "no such table" in msg:
        return DatabaseError(f"database {path} has no sessions table (not a sessionmon database)")
    if "unable to open" in msg:
        return DatabaseMissing(f"cannot open database {path}")
    return DatabaseError(f"database {path}: {msg}")


class Order(array):
    """Row ids in view order, of known length, possibly still being filled by a reader thread.

    A position not read yet holds 0 (SQLite never gives a row of a rowid table the id 0 unless it
    is asked to). Indexing never waits; a slice (e.g. ``order[::-1]``) waits until the order is
    complete and raises ``DatabaseError`` if filling it failed or was cancelled.
    """

    def __init__(self, typecode: str = "q", initializer: Any = b"") -> None:
        self._done = threading.Event()
        self._resume = threading.Event()
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[Order], object]] = []
        self.error: DatabaseError | None = None

    @classmethod
    def complete_from(cls, rowids: array) -> Order:
        """A complete order of these row ids."""
        order = cls("q", rowids.tobytes())
        order._finish()
        return order

    @property
    def complete(self) -> bool:
        """True once every position is filled (or filling stopped: see ``error``)."""
        return self._done.is_set()

    def resume(self) -> None:
        """Let the filling thread go on (the view calls this once it has drawn the first rows)."""
        self._resume.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until complete; False on timeout."""
        return self._done.wait(timeout)

    def when_complete(self, callback: Callable[[Order], object]) -> None:
        """Call ``callback(order)`` once complete: now if it is, else from the filling thread."""
        with self._lock:
            if not self._done.is_set():
                self._callbacks.append(callback)
                return
        callback(self)

    def _finish(self, error: DatabaseError | None = None) -> None:
        with self._lock:
            if self._done.is_set():
                return
            self.error = error
            self._done.set()
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback(self)

    def __getitem__(self, key: SupportsIndex | slice) -> Any:
        if isinstance(key, slice):
            self._done.wait()
            if self.error is not None:
                raise self.error
        return super().__getitem__(key)


class _Fill:
    """One order read on its own connection in one read transaction, in a thread."""

    def __init__(self, reader: SessionReader, query: ViewQuery, now: float) -> None:
        self.reader = reader
        self.query = query
        self.now = now
        self.order: Order | None = None
        self.error: DatabaseError | None = None
        self.ready = threading.Event()  # the first rows are in (or it failed)
        self.cancelled = False
        self.thread = threading.Thread(target=self._run, name="sessionmon-order", daemon=True)

    def start(self) -> Order:
        """Start the thread; return the order once its first rows are in."""
        self.thread.start()
        self.ready.wait()
        if self.error is not None:
            raise self.error
        assert self.order is not None
        return self.order

    def _fail(self, error: DatabaseError) -> None:
        if self.order is None:
            self.error = error
        else:
            self.order._finish(error)

    def cancel(self) -> None:
        """Stop filling (the order completes with an error)."""
        self.cancelled = True
        if self.order is not None:
            self.order.resume()

    def _run(self) -> None:
        reader, query, now = self.reader, self.query, self.now
        conn: sqlite3.Connection | None = None
        try:
            sql, params = reader.order_sql(query, now)
            conn = reader.connect()
            conn.execute("BEGIN")  # one snapshot for the count, the windows and the rest
            n = int(conn.execute(_COUNT_LIVE, (now,)).fetchone()[0])
            order = Order("q", bytes(8 * n))
            if n >= reader.progressive_from:
                self._first_rows(conn, order, sql, params)
                self.order = order
                self.ready.set()
                # The rest competes with the UI thread for the GIL: start once the first rows are
                # on screen, and pause between chunks so drawing and keys never wait long.
                order._resume.wait(RESUME_AFTER)
            cur = conn.execute(sql, params)
            filled = 0
            while rows := cur.fetchmany(_FILL_CHUNK):
                if self.cancelled or filled + len(rows) > n:
                    break
                order[filled : filled + len(rows)] = array("q", (r[0] for r in rows))
                filled += len(rows)
                if self.order is not None:
                    time.sleep(_FILL_PAUSE)
            if filled != n:
                why = "cancelled" if self.cancelled else "changed while it was read"
                order._finish(DatabaseError(f"database {reader.path}: session order {why}"))
            else:
                order._finish()
            self.order = order
        except sqlite3.Error as exc:
            self._fail(_error(exc, reader.path))
        except Exception as exc:  # a bug: still one clear error for the poller, never a hang
            self._fail(
                DatabaseError(f"database {reader.path}: reading the session order failed ({exc!r})")
            )
        finally:
            self.ready.set()
            if conn is not None:
                conn.close()

    def _first_rows(
        self, conn: sqlite3.Connection, order: Order, sql: str, params: dict[str, object]
    ) -> None:
        """Read the top of the list and the rows around ``query.around`` into ``order``.

        The rows around the anchor are read by key (``SessionReader.window``), never with
        ``OFFSET`` (which walks the index up to it); its position is counted from the nearer end.
        """
        query = self.query
        top = [r[0] for r in conn.execute(sql + " LIMIT :limit", {**params, "limit": WINDOW})]
        order[0 : len(top)] = array("q", top)
        if query.around is None:
            return
        n = len(order)
        at = self.reader.position_in(conn, query, self.now, query.around, n)
        if at is None or at < len(top):
            return
        before, after = self.reader.window(conn, query, self.now, query.around, WINDOW // 2)
        before = before[-at:] if at else []
        after = after[: n - at]
        order[at - len(before) : at] = array("q", before)
        order[at : at + len(after)] = array("q", after)


class SessionReader:
    """Read-only queries for the monitor; every ``sqlite3.Error`` becomes a ``DatabaseError``."""

    def __init__(
        self,
        path: str | Path,
        *,
        busy_timeout: float = 1.0,
        progressive_from: int | None = None,
    ) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise DatabaseMissing(f"database not found: {self.path}")
        self.busy_timeout = busy_timeout
        self.progressive_from = PROGRESSIVE_FROM if progressive_from is None else progressive_from
        self._lock = threading.Lock()
        self._fill: _Fill | None = None
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
            raise _error(exc, self.path) from None

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
        if self._fill is not None:
            self._fill.cancel()
        with self._lock:
            self.conn.close()

    def _all(self, sql: str, params: Iterable[object] = ()) -> list[tuple]:
        with self._lock:
            try:
                return self.conn.execute(sql, list(params)).fetchall()
            except sqlite3.Error as exc:
                raise _error(exc, self.path) from None

    def data_version(self) -> int:
        """Changes whenever another connection commits."""
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
        columns, _, _ = SORTS[query.sort]
        direction = " DESC" if query.descending else ""
        sql = "SELECT rowid FROM sessions WHERE refresh_exp > :now"
        params: dict[str, object] = {"now": now}
        text = query.text.strip()
        if text and self.searchable and len(text) >= TRIGRAM:
            # A phrase of trigrams: a case-insensitive substring of any of the four columns.
            sql += f" AND rowid IN (SELECT rowid FROM {SEARCH_TABLE} WHERE {SEARCH_TABLE} MATCH :q)"
            params["q"] = '"' + text.replace('"', '""') + '"'
        elif text:
            sql += " AND (" + " OR ".join(f"{c} LIKE :pat ESCAPE '\\'" for c in _FILTERED) + ")"
            params["pat"] = _like(text)
        sql += " ORDER BY " + ", ".join(c + direction for c in columns)
        return sql, params

    def order(self, query: ViewQuery, now: float) -> Order:
        """Row ids of the live sessions matching ``query.text``, in the query's order.

        An unfiltered order of ``progressive_from`` sessions or more is read by a thread on its own
        connection, and returned as soon as its first rows and the rows around ``query.around``
        are in; the thread fills in the rest.
        """
        previous = self._fill
        if previous is not None:
            if previous.query == query:
                previous.thread.join()  # a reload: never two fills of the same list at once
            else:
                previous.cancel()  # the operator asked for another list
            self._fill = None
        if not query.text.strip() and self._live_at_least(now, self.progressive_from):
            fill = _Fill(self, query, now)
            self._fill = fill
            return fill.start()
        sql, params = self.order_sql(query, now)
        out = array("q")
        with self._lock:
            try:
                cur = self.conn.execute(sql, params)
                while rows := cur.fetchmany(_FETCH_CHUNK):
                    out.extend(r[0] for r in rows)
            except sqlite3.Error as exc:
                raise _error(exc, self.path) from None
        return Order.complete_from(out)

    @staticmethod
    def position(conn: sqlite3.Connection, query: ViewQuery, now: float, rowid: int) -> int | None:
        """Index of row ``rowid`` in the unfiltered order of ``query``; None if it is not live.

        Counted on the sort's covering index: for each column, the rows equal on the columns
        before it and before the anchor on this one (NULLs sort first ascending, last descending).
        """
        columns, _, _ = SORTS[query.sort]
        keys = columns[:-1]
        row = conn.execute(
            f"SELECT {', '.join(keys)}, refresh_exp > ? FROM sessions WHERE rowid = ?",
            (now, rowid),
        ).fetchone()
        if row is None or not row[-1]:
            return None
        values = (*row[:-1], rowid)
        # ``+``: the live test must not pick the refresh_exp index over the sort's own index.
        live = "refresh_exp > ?" if keys[0] == "refresh_exp" else "+refresh_exp > ?"
        total = 0
        for i, (column, value) in enumerate(zip(columns, values, strict=True)):
            equal = [f"{c} IS ?" for c in columns[:i]]
            args = [now, *values[:i]]
            tests: list[tuple[str, list[object]]] = []
            if query.descending:
                if value is None:
                    tests.append((f"{column} IS NOT NULL", []))
                else:
                    tests.append((f"{column} > ?", [value]))
            elif value is not None:
                tests.append((f"{column} < ?", [value]))
                if column != "rowid":
                    tests.append((f"{column} IS NULL", []))
            for test, extra in tests:
                where = " AND ".join([live, *equal, test])
                sql = f"SELECT COUNT(*) FROM sessions WHERE {where}"
                total += int(conn.execute(sql, [*args, *extra]).fetchone()[0])
        return total

    @classmethod
    def position_in(
        cls, conn: sqlite3.Connection, query: ViewQuery, now: float, rowid: int, n: int
    ) -> int | None:
        """``position`` of ``rowid`` among the ``n`` live rows, counted from the nearer end.

        Counting walks the index from one end to the row, so a row estimated to be in the second
        half is counted from the end (its position in the reversed order). The estimate only
        chooses the end; the count is exact either way.
        """
        if n > 1 and _estimate(conn, query, rowid) > 0.5:
            reverse = ViewQuery(query.sort, not query.reverse, query.text)
            after = cls.position(conn, reverse, now, rowid)
            return None if after is None else n - 1 - after
        return cls.position(conn, query, now, rowid)

    @staticmethod
    def window(
        conn: sqlite3.Connection, query: ViewQuery, now: float, rowid: int, size: int
    ) -> tuple[list[int], list[int]]:
        """Up to ``size`` row ids before live row ``rowid`` and ``2 * size`` from it on, in view
        order, read by key (keyset pagination on the sort's covering index, no ``OFFSET``).

        Each side is one or two range scans over the index, ordered as the index is: rows whose
        first sort column is NULL (first ascending, last descending) are a block of their own.
        Empty lists when the row is not live.
        """
        columns, _, _ = SORTS[query.sort]
        row = conn.execute(
            f"SELECT {', '.join(columns[:-1])}, refresh_exp > ? FROM sessions WHERE rowid = ?",
            (now, rowid),
        ).fetchone()
        if row is None or not row[-1]:
            return [], []
        values = (*row[:-1], rowid)
        live = "refresh_exp > :now" if columns[0] == "refresh_exp" else "+refresh_exp > :now"
        # In view order, the rows from the anchor on are the keys above it when ascending (below
        # it when descending); the rows before it are the others, read towards the anchor's
        # other side and reversed.
        up = not query.descending
        after = _scan(conn, columns, values, up, True, live, now, 2 * size)
        before = _scan(conn, columns, values, not up, False, live, now, size)
        before.reverse()
        return before, after

    def rows(self, rowids: Iterable[int]) -> dict[int, Session]:
        """The sessions with these row ids that still exist, by row id."""
        ids = list(rowids)
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

    def sessions_of_user(self, user_id: str) -> list[str]:
        """Ids of every session of one user (through the user_id index)."""
        return [r[0] for r in self._all("SELECT id FROM sessions WHERE user_id = ?", (user_id,))]

    def audit(self, session_id: str, limit: int = 8) -> list[AuditEntry]:
        """Newest audit rows about this session (through the audit_by_session index)."""
        rows = self._all(
            "SELECT id, at, actor, action, session_id, user_id, email, reason, revoked, outcome "
            "FROM audit WHERE session_id = ? ORDER BY id DESC LIMIT ?",
            (session_id, limit),
        )
        return [AuditEntry.from_row(r) for r in rows]


def _scan(
    conn: sqlite3.Connection,
    columns: tuple[str, ...],
    values: tuple[object, ...],
    up: bool,
    inclusive: bool,
    live: str,
    now: float,
    limit: int,
) -> list[int]:
    """Row ids of up to ``limit`` live rows from the anchor ``values`` (itself if ``inclusive``)
    going up (ascending keys) or down, in that direction. NULLs sort lowest (SQLite's order);
    only the first column may be NULL (the others are ``refresh_exp`` of a live row and rowid)."""
    first, rest = columns[0], columns[1:]
    op = (">" if up else "<") + ("=" if inclusive else "")
    marks = ", ".join("?" for _ in columns)
    whole = (f"({', '.join(columns)}) {op} ({marks})", list(values))
    tail = (
        f"{first} IS NULL AND ({', '.join(rest)}) {op} ({', '.join('?' for _ in rest)})",
        list(values[1:]),
    )
    if values[0] is None:
        segments = [tail, (f"{first} IS NOT NULL", [])] if up else [tail]
    else:
        segments = [whole] if up else [whole, (f"{first} IS NULL", [])]
    direction = "" if up else " DESC"
    order_by = ", ".join(c + direction for c in columns)
    out: list[int] = []
    for where, args in segments:
        if len(out) >= limit:
            break
        sql = (
            f"SELECT rowid FROM sessions WHERE {live.replace(':now', '?')} AND {where} "
            f"ORDER BY {order_by} LIMIT ?"
        )
        out.extend(r[0] for r in conn.execute(sql, [now, *args, limit - len(out)]))
    return out


def _as_number(value: object) -> float:
    """A number that orders like ``value`` does in SQLite (roughly, for text: its first bytes)."""
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        return float(int.from_bytes(value.encode()[:7].ljust(7, b"\0"), "big"))
    return float("-inf")  # NULL sorts first


def _estimate(conn: sqlite3.Connection, query: ViewQuery, rowid: int) -> float:
    """Roughly how far into the order of ``query`` row ``rowid`` is (0 top, 1 bottom), from its
    first sort key between the smallest and the largest (two index look-ups)."""
    column = SORTS[query.sort][0][0]
    row = conn.execute(
        f"SELECT (SELECT {column} FROM sessions WHERE rowid = ?), "
        f"(SELECT MIN({column}) FROM sessions), (SELECT MAX({column}) FROM sessions)",
        (rowid,),
    ).fetchone()
    value, low, high = row
    if value is None:
        share = 0.0
    elif low is None or high is None:
        share = 0.5
    else:
        lo, hi, v = _as_number(low), _as_number(high), _as_number(value)
        share = 0.5 if hi <= lo else min(1.0, max(0.0, (v - lo) / (hi - lo)))
    return 1.0 - share if query.descending else share
