"""SQLite backend of the session store: one connection (WAL mode, busy timeout) per store.

Safe to share between threads: every call takes the store's lock. Writes that belong together
run in one ``BEGIN IMMEDIATE``. The schema and its migrations are in ``sqlite_schema``, the WAL
checkpoints in ``sqlite_checkpoint``, the monitor's read model in ``sqlite_reader``.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import sqlite_utils

from sessionmon.core.clock import SYSTEM_CLOCK, Clock
from sessionmon.core.errors import DatabaseError, DatabaseMissing
from sessionmon.core.store import keyset, sqlite_search
from sessionmon.core.store.base import Backend, CatchUp, CatchUpHow
from sessionmon.core.store.repository import SqlRepository
from sessionmon.core.store.schema import SCHEMA_VERSION
from sessionmon.core.store.sqlite_check import check_sqlite_file
from sessionmon.core.store.sqlite_checkpoint import Checkpointer
from sessionmon.core.store.sqlite_reader import SqliteReader
from sessionmon.core.store.sqlite_schema import MIGRATIONS, translate
from sessionmon.core.store.url import DatabaseUrl

# The page cache of a connection during a bulk ending, KiB (otherwise SQLite's default, 2 MiB):
# a logout job's deletes touch the 7 indexes of a million-session table at random, and with the
# default cache reread most pages from the OS at every batch. Pages are allocated as used.
BULK_CACHE_KIB = 64 * 1024


class SqliteStore(SqlRepository):
    """Sessions and audit rows in one SQLite file."""

    backend = Backend.SQLITE
    dialect = keyset.SQLITE

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
        self._cache_before: int | None = None  # the page cache to restore after a bulk ending
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

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._guard() as conn:
            return conn.execute(sql, list(params)).fetchall()

    def database_size(self) -> int:
        """Bytes of the database file and its write-ahead log."""
        total = 0
        for path in (self.path, self.path.with_name(self.path.name + "-wal")):
            with contextlib.suppress(OSError):
                total += path.stat().st_size
        return total

    # -- bulk endings (a logout job) -------------------------------------------------------------

    def begin_bulk_ending(self, job: str) -> None:
        """A larger page cache on this connection, and the trigram index's deletes deferred
        (``sqlite_search``) until ``end_bulk_ending``."""
        with self.transaction() as conn:
            if self._cache_before is None:
                self._cache_before = int(conn.execute("PRAGMA cache_size").fetchone()[0])
                conn.execute(f"PRAGMA cache_size = -{BULK_CACHE_KIB}")
            if sqlite_search.deferrable(conn):
                sqlite_search.defer(conn, job, self.clock.now())

    def end_bulk_ending(self, job: str) -> CatchUp:
        """End ``job``'s deferral and make the trigram index exact again: the stale entries
        deleted ``DELETE_CHUNK`` per transaction, or the index rebuilt from the rows left when
        that is cheaper (``sqlite_search.should_rebuild``). A failure leaves the deferral on
        (the filter stays exact; a resumed job catches up)."""
        started = time.perf_counter()
        try:
            with self.transaction() as conn:
                if not sqlite_search.deferrable(conn):
                    return CatchUp()
                stale, left, _ = sqlite_search.end_deferral(conn, job)
                if stale and sqlite_search.should_rebuild(stale, left):
                    sqlite_search.rebuild(conn)
                    return sqlite_search.timed(CatchUpHow.REBUILT, stale, started)
            total = 0
            while stale:
                with self.transaction() as conn:
                    n = sqlite_search.delete_stale(conn, sqlite_search.DELETE_CHUNK)
                total += n
                if n < sqlite_search.DELETE_CHUNK:
                    break
            how = CatchUpHow.DELETED if total else CatchUpHow.NOTHING
            return sqlite_search.timed(how, total, started)
        finally:
            if self._cache_before is not None:
                with self._guard() as conn:
                    conn.execute(f"PRAGMA cache_size = {self._cache_before}")
                self._cache_before = None

    # -- the monitor -----------------------------------------------------------------------------

    def open_reader(self) -> SqliteReader:
        """The monitor's read model on its own read-only connection."""
        return SqliteReader(self.path)
