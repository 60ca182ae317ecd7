"""SQLite backend of the session store: one connection (WAL mode, busy timeout) per store.

Safe to share between threads: every call takes the store's lock. Writes that belong together
run in one ``BEGIN IMMEDIATE``. The schema and its migrations are in ``sqlite_schema``, the WAL
checkpoints in ``sqlite_checkpoint``, the monitor's read model in ``sqlite_reader``.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import sqlite_utils

from sessionmon.core.clock import SYSTEM_CLOCK, Clock
from sessionmon.core.errors import DatabaseError, DatabaseMissing
from sessionmon.core.store.base import AuditEntry, AuditRow, Backend, Session
from sessionmon.core.store.schema import AUDIT_COLUMNS, SCHEMA_VERSION, SESSION_COLUMNS, SORTS
from sessionmon.core.store.sqlite_check import check_sqlite_file
from sessionmon.core.store.sqlite_checkpoint import Checkpointer
from sessionmon.core.store.sqlite_reader import SqliteReader
from sessionmon.core.store.sqlite_schema import MIGRATIONS, translate
from sessionmon.core.store.url import DatabaseUrl


class SqliteStore:
    """Sessions and audit rows in one SQLite file."""

    backend = Backend.SQLITE

    def __init__(
        self,
        path: str | Path,
        *,
        create: bool = True,
        busy_timeout: float = 5.0,
        clock: Clock = SYSTEM_CLOCK,
        readonly: bool = False,
        checkpoint_interval: float | None = 0.5,
    ) -> None:
        """Open (and migrate) the database.

        ``checkpoint_interval``: WAL checkpoints run in a background thread this often instead
        of inside whichever commit crosses SQLite's auto-checkpoint threshold (a ~10 ms stall at
        1M sessions, paid by a force-logout); ``None`` keeps SQLite's automatic checkpoints.
        """
        self.path = Path(path)
        self.display = str(self.path)
        self.location = DatabaseUrl(Backend.SQLITE, self.path)
        self._checkpointer: Checkpointer | None = None
        self.clock = clock
        self.busy_timeout = busy_timeout
        self._lock = threading.RLock()
        if not self.path.exists():
            if not create:
                raise DatabaseMissing(f"database not found: {self.path}")
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise DatabaseError(f"cannot create {self.path.parent}: {exc.strerror}") from None
        elif self.path.is_dir():
            raise DatabaseError(f"database path {self.path} is a directory")
        check_sqlite_file(self.path, may_initialise=create and not readonly)
        try:
            if readonly:
                uri = f"file:{self.path}?mode=ro"
                conn = sqlite3.connect(
                    uri,
                    uri=True,
                    timeout=busy_timeout,
                    check_same_thread=False,
                    isolation_level=None,
                )
            else:
                conn = sqlite3.connect(
                    str(self.path),
                    timeout=busy_timeout,
                    check_same_thread=False,
                    isolation_level=None,
                )
        except sqlite3.Error as exc:
            raise translate(exc, self.path) from None
        self.conn = conn
        self.db = sqlite_utils.Database(conn)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            if not readonly:
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            self.migrate(readonly=readonly)
            if not readonly and checkpoint_interval is not None:
                self._checkpointer = Checkpointer.acquire(self.path, checkpoint_interval)
                conn.execute("PRAGMA wal_autocheckpoint = 0")
        except sqlite3.Error as exc:
            conn.close()
            raise translate(exc, self.path) from None

    # -- plumbing -------------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            self.conn.close()
            if self._checkpointer is not None:
                self._checkpointer.release()
                self._checkpointer = None

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _guard(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self.conn
            except sqlite3.Error as exc:
                raise translate(exc, self.path) from None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` (rolled back on any error)."""
        with self._guard() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def schema_version(self) -> int:
        with self._guard() as conn:
            return int(conn.execute("PRAGMA user_version").fetchone()[0])

    def migrate(self, readonly: bool = False) -> None:
        """Apply forward migrations up to ``SCHEMA_VERSION``."""
        version = self.schema_version()
        self.migrated_from = version
        if version > SCHEMA_VERSION:
            raise DatabaseError(
                f"database {self.path} has schema version {version}; this sessionmon knows "
                f"{SCHEMA_VERSION} (upgrade sessionmon)"
            )
        if version == SCHEMA_VERSION:
            return
        if readonly:
            raise DatabaseError(f"database {self.path} needs a migration but is opened read-only")
        with self.transaction() as conn:
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            for number in range(version, SCHEMA_VERSION):
                MIGRATIONS[number](self.db)
                conn.execute(f"PRAGMA user_version = {number + 1}")

    def data_version(self) -> int:
        """Changes whenever another connection commits: a near-free "did anything change?"."""
        with self._guard() as conn:
            return int(conn.execute("PRAGMA data_version").fetchone()[0])

    # -- sessions --------------------------------------------------------------------------------

    def insert_session(self, session: Session) -> None:
        with self.transaction() as conn:
            conn.execute(
                f"INSERT INTO sessions ({', '.join(SESSION_COLUMNS)}) "
                f"VALUES ({', '.join('?' for _ in SESSION_COLUMNS)})",
                [getattr(session, c) for c in SESSION_COLUMNS],
            )

    def get_session(self, session_id: str) -> Session | None:
        with self._guard() as conn:
            row = conn.execute(
                f"SELECT {', '.join(SESSION_COLUMNS)} FROM sessions WHERE id = ?", (session_id,)
            ).fetchone()
        return Session(*row) if row else None

    def get_sessions(self, session_ids: Sequence[str]) -> list[Session]:
        """The sessions among ``session_ids`` that exist, in the order given."""
        found: dict[str, Session] = {}
        ids = list(dict.fromkeys(session_ids))
        with self._guard() as conn:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                rows = conn.execute(
                    f"SELECT {', '.join(SESSION_COLUMNS)} FROM sessions "
                    f"WHERE id IN ({', '.join('?' for _ in chunk)})",
                    chunk,
                ).fetchall()
                found.update((r[0], Session(*r)) for r in rows)
        return [found[i] for i in ids if i in found]

    def sessions_for_user(self, user: str) -> list[Session]:
        """Every session whose user id or email is ``user`` (email case-insensitive)."""
        with self._guard() as conn:
            rows = conn.execute(
                f"SELECT {', '.join(SESSION_COLUMNS)} FROM sessions "
                f"WHERE user_id = ? OR email = ? OR email = ? ORDER BY created_at",
                (user, user, user.lower()),
            ).fetchall()
        return [Session(*r) for r in rows]

    def update_access(
        self, session_id: str, access_jti: str, access_exp: float, now: float
    ) -> bool:
        """Record a silent refresh; False when the session no longer exists."""
        with self.transaction() as conn:
            cur = conn.execute(
                "UPDATE sessions SET access_jti = ?, access_exp = ?, last_seen_at = ?, "
                "refresh_count = refresh_count + 1 WHERE id = ?",
                (access_jti, access_exp, now, session_id),
            )
            return cur.rowcount == 1

    def touch(self, session_id: str, now: float) -> bool:
        """Update ``last_seen_at``; False when the session no longer exists."""
        with self.transaction() as conn:
            cur = conn.execute(
                "UPDATE sessions SET last_seen_at = ? WHERE id = ?", (now, session_id)
            )
            return cur.rowcount == 1

    def list_sessions(
        self,
        *,
        now: float | None = None,
        include_expired: bool = False,
        user: str | None = None,
        order: str = "access_exp",
        descending: bool = False,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[Session]:
        """Sessions (live ones unless ``include_expired``), ordered by an indexed column."""
        now = self.clock.now() if now is None else now
        where, params = [], []
        if not include_expired:
            where.append("refresh_exp > ?")
            params.append(now)
        if user:
            where.append("(user_id = ? OR email = ? OR email = ?)")
            params += [user, user, user.lower()]
        sql = f"SELECT {', '.join(SESSION_COLUMNS)} FROM sessions"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sort = SORTS.get(order)
        if sort is None:
            raise ValueError(f"unknown order {order!r}")
        direction = " DESC" if descending else ""
        sql += " ORDER BY " + ", ".join(c + direction for c in sort.keys)
        if limit is not None:
            sql += " LIMIT ? OFFSET ?"
            params += [limit, offset]
        with self._guard() as conn:
            rows = conn.execute(sql, params).fetchall()
        return [Session(*r) for r in rows]

    def count_sessions(self, *, now: float | None = None, include_expired: bool = False) -> int:
        now = self.clock.now() if now is None else now
        with self._guard() as conn:
            if include_expired:
                return int(conn.execute("SELECT COUNT(*) FROM sessions").fetchone()[0])
            return int(
                conn.execute(
                    "SELECT COUNT(*) FROM sessions WHERE refresh_exp > ?", (now,)
                ).fetchone()[0]
            )

    def has_foreign_sessions(self, source: str) -> bool:
        """True if any session was created by someone other than ``source``."""
        with self._guard() as conn:
            row = conn.execute(
                "SELECT 1 FROM sessions WHERE source IS NULL OR source != ? LIMIT 1", (source,)
            ).fetchone()
        return row is not None

    def delete_sessions_with_audit(
        self, session_ids: Sequence[str], audit_rows: Iterable[AuditRow | dict[str, Any]]
    ) -> int:
        """Delete sessions and write their audit rows in one transaction; returns rows deleted."""
        deleted = 0
        with self.transaction() as conn:
            for start in range(0, len(session_ids), 500):
                chunk = list(session_ids[start : start + 500])
                cur = conn.execute(
                    f"DELETE FROM sessions WHERE id IN ({', '.join('?' for _ in chunk)})", chunk
                )
                deleted += cur.rowcount
            self._insert_audit(conn, audit_rows)
        return deleted

    def purge_expired(self, before: float) -> int:
        """Delete sessions whose refresh token expired before ``before``."""
        with self.transaction() as conn:
            return conn.execute("DELETE FROM sessions WHERE refresh_exp <= ?", (before,)).rowcount

    # -- audit -----------------------------------------------------------------------------------

    @staticmethod
    def _insert_audit(conn: sqlite3.Connection, rows: Iterable[AuditRow | dict[str, Any]]) -> None:
        cols = AUDIT_COLUMNS[1:]
        conn.executemany(
            f"INSERT INTO audit ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)})",
            [AuditRow.coerce(row).params() for row in rows],
        )

    def write_audit(self, rows: Iterable[AuditRow | dict[str, Any]]) -> None:
        """Append audit rows."""
        with self.transaction() as conn:
            self._insert_audit(conn, rows)

    def audit(
        self, *, limit: int = 50, session_id: str | None = None, user: str | None = None
    ) -> list[AuditEntry]:
        """Newest audit rows first."""
        sql = f"SELECT {', '.join(AUDIT_COLUMNS)} FROM audit"
        where, params = [], []
        if session_id:
            where.append("session_id = ?")
            params.append(session_id)
        if user:
            where.append("(user_id = ? OR email = ? OR email = ?)")
            params += [user, user, user.lower()]
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        params.append(limit)
        with self._guard() as conn:
            rows = conn.execute(sql, params).fetchall()
        return [AuditEntry.from_row(r) for r in rows]

    def last_session_id(self) -> str | None:
        with self._guard() as conn:
            return conn.execute("SELECT max(id) FROM sessions").fetchone()[0]  # type: ignore[no-any-return]

    def audit_count(self) -> int:
        with self._guard() as conn:
            return int(conn.execute("SELECT COUNT(*) FROM audit").fetchone()[0])

    # -- bulk (sessionmon copy) ------------------------------------------------------------------

    def iter_session_batches(self, after: str | None, size: int) -> list[Session]:
        """Up to ``size`` sessions with an id greater than ``after``, by id."""
        with self._guard() as conn:
            rows = conn.execute(
                f"SELECT {', '.join(SESSION_COLUMNS)} FROM sessions WHERE id > ? "
                "ORDER BY id LIMIT ?",
                (after or "", size),
            ).fetchall()
        return [Session(*r) for r in rows]

    def iter_audit_batches(self, after: int, size: int) -> list[AuditEntry]:
        """Up to ``size`` audit entries with an id greater than ``after``, by id."""
        with self._guard() as conn:
            rows = conn.execute(
                f"SELECT {', '.join(AUDIT_COLUMNS)} FROM audit WHERE id > ? ORDER BY id LIMIT ?",
                (after, size),
            ).fetchall()
        return [AuditEntry.from_row(r) for r in rows]

    def copy_in(self, sessions: Sequence[Session], audit: Sequence[AuditEntry]) -> None:
        """Insert sessions and audit entries (ids kept); existing rows are left as they are."""
        with self.transaction() as conn:
            conn.executemany(
                f"INSERT OR IGNORE INTO sessions ({', '.join(SESSION_COLUMNS)}) "
                f"VALUES ({', '.join('?' for _ in SESSION_COLUMNS)})",
                [[getattr(s, c) for c in SESSION_COLUMNS] for s in sessions],
            )
            conn.executemany(
                f"INSERT OR IGNORE INTO audit ({', '.join(AUDIT_COLUMNS)}) "
                f"VALUES ({', '.join('?' for _ in AUDIT_COLUMNS)})",
                [
                    (
                        e.id,
                        *AuditRow(**{k: v for k, v in e.to_dict().items() if k != "id"}).params(),
                    )
                    for e in audit
                ],
            )

    # -- the monitor -----------------------------------------------------------------------------

    def open_reader(self) -> SqliteReader:
        """The monitor's read model on its own read-only connection."""
        return SqliteReader(self.path)
