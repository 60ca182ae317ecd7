"""SQLite store: schema and forward migrations, session and audit queries, cheap change detection.

One ``Store`` wraps one connection (WAL mode, busy timeout). It is safe to share between threads:
every call takes the store's lock. Writes that belong together run in one ``BEGIN IMMEDIATE``.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import sqlite_utils

from sessionmon.core.clock import SYSTEM_CLOCK, Clock
from sessionmon.core.errors import DatabaseError, DatabaseLocked, DatabaseMissing

SCHEMA_VERSION = 2

SESSION_COLUMNS = (
    "id",
    "user_id",
    "email",
    "name",
    "created_at",
    "last_seen_at",
    "ip",
    "user_agent",
    "access_jti",
    "access_exp",
    "refresh_jti",
    "refresh_exp",
    "refresh_count",
    "source",
)

# Sort keys the monitor offers, each backed by an index (see EXPLAIN QUERY PLAN in the tests).
SESSION_ORDERS = {
    "access_exp": "access_exp, refresh_exp",
    "refresh_exp": "refresh_exp",
    "last_seen_at": "last_seen_at",
    "created_at": "created_at",
    "email": "email, access_exp",
}


@dataclass(frozen=True)
class Session:
    """One row of the ``sessions`` table."""

    id: str
    user_id: str
    email: str | None
    name: str | None
    created_at: float
    last_seen_at: float
    ip: str | None
    user_agent: str | None
    access_jti: str | None
    access_exp: float | None
    refresh_jti: str | None
    refresh_exp: float | None
    refresh_count: int = 0
    source: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def state(self, now: float) -> str:
        """``active``, ``refresh due`` (access expired, refresh valid) or ``expired``."""
        if self.refresh_exp is not None and self.refresh_exp <= now:
            return "expired"
        if self.access_exp is None or self.access_exp <= now:
            return "refresh due" if self.refresh_exp is not None else "expired"
        return "active"


@dataclass(frozen=True)
class AuditEntry:
    """One row of the ``audit`` table."""

    id: int
    at: float
    actor: str
    action: str
    session_id: str | None
    user_id: str | None
    email: str | None
    reason: str | None
    revoked: list[str] = field(default_factory=list)
    outcome: str = "ok"

    @classmethod
    def from_row(cls, r: Sequence[Any]) -> AuditEntry:
        """From ``SELECT id, at, actor, action, session_id, user_id, email, reason, revoked,
        outcome``."""
        try:
            revoked = json.loads(r[8]) if r[8] else []
        except ValueError:
            revoked = []
        id_, at, actor, action, session_id, user_id, email, reason = r[:8]
        return cls(id_, at, actor, action, session_id, user_id, email, reason, revoked, r[9])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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


# The monitor's filter: case-insensitive substring search over these columns.
SEARCH_COLUMNS = ("email", "name", "id", "ip")
SEARCH_TABLE = "sessions_search"


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
    conn.execute(f"INSERT INTO {t}({t}) VALUES ('rebuild')")
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


MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [_migrate_v1, _migrate_v2]


def _translate(exc: sqlite3.Error, path: Path) -> DatabaseError:
    msg = str(exc)
    if "locked" in msg or "busy" in msg:
        return DatabaseLocked(f"database {path} is locked by another process (gave up waiting)")
    if "not a database" in msg or "malformed" in msg or "corrupt" in msg:
        return DatabaseError(f"database {path} is corrupt or not a SQLite file ({msg})")
    if "unable to open" in msg:
        return DatabaseError(f"cannot open database {path} ({msg})")
    if "readonly" in msg:
        return DatabaseError(f"database {path} is read-only ({msg})")
    return DatabaseError(f"database {path}: {msg}")


class Checkpointer:
    """PASSIVE WAL checkpoints off the request path: one thread per database file per process.

    PASSIVE never waits for readers or writers, so the stall a checkpoint costs is no longer
    paid by the commit that happens to cross the auto-checkpoint threshold.
    """

    _registry: ClassVar[dict[Path, Checkpointer]] = {}
    _registry_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, path: Path, interval: float) -> None:
        self.path = path
        self.interval = interval
        self.users = 0
        self.passes_with_work = 0  # checkpoints that found frames to copy
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"sessionmon-checkpoint-{path.name}", daemon=True
        )

    @classmethod
    def acquire(cls, path: Path, interval: float) -> Checkpointer:
        key = path.resolve()
        with cls._registry_lock:
            cp = cls._registry.get(key)
            if cp is None:
                cp = cls._registry[key] = cls(key, interval)
                cp._thread.start()
            cp.users += 1
            return cp

    def release(self) -> None:
        with self._registry_lock:
            self.users -= 1
            if self.users > 0:
                return
            self._registry.pop(self.path, None)
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        try:
            conn = sqlite3.connect(str(self.path), timeout=0.05, check_same_thread=False)
        except sqlite3.Error:
            return
        try:
            while not self._stop.wait(self.interval):
                try:
                    _, _, done = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except sqlite3.Error:
                    continue  # busy (another checkpoint) or the file went away: next time
                if done > 0:
                    self.passes_with_work += 1
        finally:
            # One last pass, so a short-lived process leaves no WAL behind it.
            with contextlib.suppress(sqlite3.Error):
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            conn.close()


class Store:
    """Sessions and audit rows in one SQLite file."""

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
            raise _translate(exc, self.path) from None
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
            raise _translate(exc, self.path) from None

    # -- plumbing -------------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            self.conn.close()
            if self._checkpointer is not None:
                self._checkpointer.release()
                self._checkpointer = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _guard(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self.conn
            except sqlite3.Error as exc:
                raise _translate(exc, self.path) from None

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
        where: list[str] = []
        params: list[Any] = []
        if not include_expired:
            where.append("refresh_exp > ?")
            params.append(now)
        if user:
            where.append("(user_id = ? OR email = ? OR email = ?)")
            params += [user, user, user.lower()]
        sql = f"SELECT {', '.join(SESSION_COLUMNS)} FROM sessions"
        if where:
            sql += " WHERE " + " AND ".join(where)
        cols = SESSION_ORDERS.get(order)
        if cols is None:
            raise ValueError(f"unknown order {order!r}")
        direction = " DESC" if descending else ""
        sql += " ORDER BY " + ", ".join(c + direction for c in cols.split(", "))
        if limit is not None:
            sql += " LIMIT ? OFFSET ?"
            params += [limit, offset]
        with self._guard() as conn:
            rows = conn.execute(sql, params).fetchall()
        return [Session(*r) for r in rows]

    def iter_sessions_columns(
        self, columns: Sequence[str], *, now: float | None = None, include_expired: bool = False
    ) -> list[tuple[Any, ...]]:
        """Selected columns of every (live) session, for the monitor's in-memory index."""
        for c in columns:
            if c not in SESSION_COLUMNS:
                raise ValueError(f"unknown column {c!r}")
        now = self.clock.now() if now is None else now
        sql = f"SELECT {', '.join(columns)} FROM sessions"
        params: list[Any] = []
        if not include_expired:
            sql += " WHERE refresh_exp > ?"
            params.append(now)
        with self._guard() as conn:
            return conn.execute(sql, params).fetchall()

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
        self, session_ids: Sequence[str], audit_rows: Iterable[dict[str, Any]]
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
    def _insert_audit(conn: sqlite3.Connection, rows: Iterable[dict[str, Any]]) -> None:
        conn.executemany(
            "INSERT INTO audit (at, actor, action, session_id, user_id, email, reason, revoked, "
            "outcome) VALUES (:at, :actor, :action, :session_id, :user_id, :email, :reason, "
            ":revoked, :outcome)",
            [
                {
                    "session_id": None,
                    "user_id": None,
                    "email": None,
                    "reason": None,
                    "outcome": "ok",
                    **row,
                    "revoked": json.dumps(list(row.get("revoked") or [])),
                }
                for row in rows
            ],
        )

    def write_audit(self, rows: Iterable[dict[str, Any]]) -> None:
        """Append audit rows (``at``, ``actor``, ``action`` required)."""
        with self.transaction() as conn:
            self._insert_audit(conn, rows)

    def audit(
        self, *, limit: int = 50, session_id: str | None = None, user: str | None = None
    ) -> list[AuditEntry]:
        """Newest audit rows first."""
        sql = (
            "SELECT id, at, actor, action, session_id, user_id, email, reason, revoked, outcome "
            "FROM audit"
        )
        where: list[str] = []
        params: list[Any] = []
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
