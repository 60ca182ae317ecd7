"""The monitor's own read-only SQLite connection: row ids in view order, rows of the visible window.

The sessions view never holds a million ``Session`` objects: it holds one ``array('q')`` of row ids
in view order (8 bytes a session) built by one indexed ``ORDER BY`` query, and reads the rows it
draws by row id. Each reader has its own connection and lock, so a long reload in the poller thread
never makes the UI thread wait (WAL readers do not block each other or the writer).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from array import array
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from sessionmon.core.errors import DatabaseError, DatabaseLocked, DatabaseMissing
from sessionmon.core.store import SESSION_COLUMNS, AuditEntry, Session

# name -> (ORDER BY columns, natural direction descending?, label). Every order is index-backed;
# rowid last so ties are stable.
SORTS: dict[str, tuple[tuple[str, ...], bool, str]] = {
    "access_exp": (("access_exp", "refresh_exp", "rowid"), False, "access expiry"),
    "refresh_exp": (("refresh_exp", "rowid"), False, "refresh expiry"),
    "last_seen_at": (("last_seen_at", "rowid"), True, "last seen"),
    "created_at": (("created_at", "rowid"), True, "age"),
    "email": (("email", "rowid"), False, "email"),
}
SORT_CYCLE = tuple(SORTS)

_FETCH_CHUNK = 65_536
_FILTERED = ("email", "name", "id", "ip")


@dataclass(frozen=True)
class ViewQuery:
    """What the sessions view shows: a sort, its direction and a filter text."""

    sort: str = "access_exp"
    reverse: bool = False
    text: str = ""

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


class SessionReader:
    """Read-only queries for the monitor; every ``sqlite3.Error`` becomes a ``DatabaseError``."""

    def __init__(self, path: str | Path, *, busy_timeout: float = 1.0) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise DatabaseMissing(f"database not found: {self.path}")
        self._lock = threading.Lock()
        try:
            self.conn = sqlite3.connect(
                f"file:{self.path}?mode=ro",
                uri=True,
                timeout=busy_timeout,
                check_same_thread=False,
                isolation_level=None,
            )
            self.conn.execute("SELECT 1 FROM sessions LIMIT 0")
        except sqlite3.Error as exc:
            raise _error(exc, self.path) from None

    def close(self) -> None:
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
        return int(self._all("SELECT COUNT(*) FROM sessions WHERE refresh_exp > ?", (now,))[0][0])

    def order(self, query: ViewQuery, now: float) -> array:
        """Row ids of the live sessions matching ``query.text``, in the query's order."""
        columns, _, _ = SORTS[query.sort]
        direction = " DESC" if query.descending else ""
        sql = "SELECT rowid FROM sessions WHERE refresh_exp > :now"
        params: dict[str, object] = {"now": now}
        text = query.text.strip()
        if text:
            sql += " AND (" + " OR ".join(f"{c} LIKE :pat ESCAPE '\\'" for c in _FILTERED) + ")"
            params["pat"] = _like(text)
        sql += " ORDER BY " + ", ".join(c + direction for c in columns)
        out = array("q")
        with self._lock:
            try:
                cur = self.conn.execute(sql, params)
                while rows := cur.fetchmany(_FETCH_CHUNK):
                    out.extend(r[0] for r in rows)
            except sqlite3.Error as exc:
                raise _error(exc, self.path) from None
        return out

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
        out = []
        for r in rows:
            try:
                revoked = json.loads(r[8]) if r[8] else []
            except ValueError:
                revoked = []
            out.append(AuditEntry(*r[:8], revoked=revoked, outcome=r[9]))
        return out
