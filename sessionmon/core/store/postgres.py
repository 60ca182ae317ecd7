"""PostgreSQL backend of the session store: psycopg 3 with a connection pool.

Every query is parameterised. The store opens one direct connection first (so a wrong password, a
missing database or a refused connection is reported as the server said it, in one line) and
migrates on it; the pool is opened after. Pooled connections are checked when taken, so a server
restart costs no request more than a reconnect. A statement that runs longer than
``statement_timeout`` is cancelled by the server.

The monitor's read model (``PostgresReader``) has its own connection, which LISTENs on the
``sessionmon_changes`` channel: the change token moves with every notification for this schema,
and with every reconnect (notifications may have been lost meanwhile).
"""

from __future__ import annotations

import contextlib
import threading
from array import array
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import psycopg
import psycopg_pool

from sessionmon.core.clock import SYSTEM_CLOCK, Clock
from sessionmon.core.errors import DatabaseError, DatabaseUnavailable
from sessionmon.core.store import keyset
from sessionmon.core.store.base import AuditEntry, AuditRow, Backend, Session
from sessionmon.core.store.order import OrderReader, ViewQuery
from sessionmon.core.store.postgres_schema import CHANNEL, SEARCH_EXPR, SEPARATOR, migrate
from sessionmon.core.store.repository import SqlRepository
from sessionmon.core.store.schema import (
    AUDIT_COLUMNS,
    SCHEMA_VERSION,
    SESSION_COLUMNS,
)
from sessionmon.core.store.url import DatabaseUrl, application_name

CONNECT_TIMEOUT = 5.0
STATEMENT_TIMEOUT_MS = 30_000
_COLS = ", ".join(SESSION_COLUMNS)
_AUDIT_COLS = ", ".join(AUDIT_COLUMNS)
_FETCH_CHUNK = 65_536
COPY_FROM = 100  # audit rows written at once from this many by COPY (a bulk job's batch)
_USER_LOCK_CLASS = 0x5E55  # pg_advisory_xact_lock(class, key): per-user login serialisation


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    line = text.splitlines()[0].strip()
    return line.removeprefix("connection failed: ")


def translate(exc: BaseException, display: str) -> DatabaseError:
    """One ``DatabaseError`` with one line for a human, from any psycopg or pool error."""
    if isinstance(exc, DatabaseError):
        return exc
    if isinstance(exc, psycopg_pool.PoolTimeout):
        return DatabaseUnavailable(
            f"PostgreSQL {display}: no connection within {CONNECT_TIMEOUT:g} s (server down?)"
        )
    if isinstance(exc, psycopg.errors.QueryCanceled):
        return DatabaseError(f"PostgreSQL {display}: query cancelled ({_first_line(exc)})")
    if isinstance(exc, psycopg.errors.UndefinedTable):
        return DatabaseError(
            f"PostgreSQL {display}: not a sessionmon database ({_first_line(exc)}; run: "
            "sessionmon migrate)"
        )
    if isinstance(exc, psycopg.OperationalError | psycopg_pool.PoolClosed):
        return DatabaseUnavailable(f"PostgreSQL {display}: {_first_line(exc)}")
    return DatabaseError(f"PostgreSQL {display}: {_first_line(exc)}")


def connect(url: DatabaseUrl, *, autocommit: bool = False) -> psycopg.Connection:
    """A direct connection (raises ``DatabaseError`` with the server's reason)."""
    try:
        conn = psycopg.connect(
            url.url,
            connect_timeout=int(CONNECT_TIMEOUT),
            autocommit=autocommit,
            application_name=application_name(url),
        )
    except psycopg.Error as exc:
        raise translate(exc, url.display) from None
    try:
        conn.execute(f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}")
        if not autocommit:
            conn.commit()
    except psycopg.Error as exc:
        conn.close()
        raise translate(exc, url.display) from None
    return conn


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped.replace(SEPARATOR, '')}%"


class PostgresStore(SqlRepository):
    """Sessions and audit rows in one PostgreSQL database (schema: the search_path's first)."""

    backend = Backend.POSTGRES
    dialect = keyset.POSTGRES

    def __init__(
        self,
        url: DatabaseUrl | str,
        *,
        create: bool = True,
        clock: Clock = SYSTEM_CLOCK,
        pool_size: int = 8,
    ) -> None:
        self.url = DatabaseUrl.parse(url)
        self.display = self.url.display
        self.location = self.url
        self.clock = clock
        conn = connect(self.url)
        try:
            self.migrated_from = migrate(conn, self.display, create=create)
        except psycopg.Error as exc:
            raise translate(exc, self.display) from None
        finally:
            conn.close()
        self.pool = psycopg_pool.ConnectionPool(
            self.url.url,
            min_size=1,
            max_size=pool_size,
            open=False,
            timeout=CONNECT_TIMEOUT,
            check=psycopg_pool.ConnectionPool.check_connection,
            configure=self._configure,
            kwargs={
                "connect_timeout": int(CONNECT_TIMEOUT),
                "application_name": application_name(self.url),
            },
            name="sessionmon",
        )
        self.pool.open(wait=False)

    @staticmethod
    def _configure(conn: psycopg.Connection) -> None:
        conn.execute(f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}")
        conn.commit()

    # -- plumbing -------------------------------------------------------------------------------

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.pool.close(timeout=2)

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[psycopg.Connection]:
        """A pooled connection in one transaction (committed on success, else rolled back)."""
        try:
            with self.pool.connection() as conn:
                yield conn
        except (psycopg.Error, psycopg_pool.PoolTimeout, psycopg_pool.PoolClosed) as exc:
            raise translate(exc, self.display) from None

    def _query(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self.transaction() as conn:
            cur = conn.execute(query, list(params))
            return cur.fetchall() if cur.description is not None else []

    def schema_version(self) -> int:
        return int(self._one("SELECT max(version) FROM sessionmon_schema") or 0)

    def migrate(self) -> None:
        """Apply forward migrations (done on open; here for symmetry with SQLite)."""
        conn = connect(self.url)
        try:
            migrate(conn, self.display)
        finally:
            conn.close()

    def _lock_user(self, conn: psycopg.Connection, user_id: str) -> None:
        # A transaction-scoped advisory lock per (schema, user): the two-key form, a key space
        # apart from the migration lock's one-key form.
        conn.execute(
            "SELECT pg_advisory_xact_lock(%s, hashtext(current_schema() || '/' || %s))",
            (_USER_LOCK_CLASS, user_id),
        )

    def _move_to_history(
        self,
        conn: psycopg.Connection,
        ids: Sequence[str],
        at: float,
        how: str,
        actor: str,
        reason: str | None,
    ) -> int:
        # One statement: the rows deleted are exactly the rows kept (a rotation committed
        # meanwhile cannot slip between a copy and a delete).
        cur = conn.execute(
            f"WITH gone AS (DELETE FROM sessions WHERE id IN ({self._marks(len(ids))}) "
            f"RETURNING *) {self._history_insert()} FROM gone",
            (*ids, at, how, actor, reason),
        )
        return int(cur.rowcount)

    def _move_all_to_history(
        self,
        conn: psycopg.Connection,
        ids: Sequence[str],
        at: float,
        how: str,
        actor: str,
        reason: str | None,
    ) -> int:
        """A whole batch in one statement (the ids as one array parameter): one plan and one
        round trip instead of one per ``CHUNK``."""
        cur = conn.execute(
            f"WITH gone AS (DELETE FROM sessions WHERE id = ANY(%s) RETURNING *) "
            f"{self._history_insert()} FROM gone",
            (list(ids), at, how, actor, reason),
        )
        return int(cur.rowcount)

    def get_sessions(self, session_ids: Sequence[str]) -> list[Session]:
        """The sessions among ``session_ids`` that exist, in the order given (one query)."""
        ids = list(dict.fromkeys(session_ids))
        if not ids:
            return []
        rows = self._query(f"SELECT {_COLS} FROM sessions WHERE id = ANY(%s)", (ids,))
        found = {r[0]: Session(*r) for r in rows}
        return [found[i] for i in ids if i in found]

    def _insert_audit(
        self, conn: psycopg.Connection, rows: Iterable[AuditRow | dict[str, Any]]
    ) -> None:
        """Many rows (a bulk job's batch) by ``COPY``, a few by ``INSERT``."""
        params = [AuditRow.coerce(row).params() for row in rows]
        cols = ", ".join(AUDIT_COLUMNS[1:])
        if len(params) < COPY_FROM:
            if params:
                marks = self._marks(len(AUDIT_COLUMNS) - 1)
                conn.cursor().executemany(f"INSERT INTO audit ({cols}) VALUES ({marks})", params)
            return
        with conn.cursor().copy(f"COPY audit ({cols}) FROM STDIN") as copy:
            for p in params:
                copy.write_row(p)

    def _after_id_copy(self, conn: psycopg.Connection, table: str) -> None:
        # Later rows written here get ids after the copied ones.
        conn.execute(
            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))"
        )

    def database_size(self) -> int:
        """Bytes of this schema's tables with their indexes and TOAST."""
        value = self._one(
            "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = current_schema() AND c.relkind = 'r'"
        )
        return int(value or 0)

    def server_time(self) -> float | None:
        """The server's clock (``clock_timestamp()``), in epoch seconds."""
        return float(self._one("SELECT extract(epoch FROM clock_timestamp())"))

    # -- the monitor -----------------------------------------------------------------------------

    def open_reader(self) -> PostgresReader:
        return PostgresReader(self.url)


class _Snapshot:
    """One order in one REPEATABLE READ, READ ONLY transaction on a connection of its own."""

    def __init__(self, reader: PostgresReader, query: ViewQuery, now: float) -> None:
        self.query = query
        self.now = now
        self.sql, self.params = reader.order_sql(query, now)
        self.conn = connect(reader.url)
        self.conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")

    def _run(self, query: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        return self.conn.execute(query, list(params)).fetchall()

    def count(self) -> int:
        row = self._run("SELECT count(*) FROM sessions WHERE refresh_exp > %s", (self.now,))
        return int(row[0][0])

    def top(self, limit: int) -> list[int]:
        return [r[0] for r in self._run(self.sql + " LIMIT %s", [*self.params, limit])]

    def position(self, key: int, n: int) -> int | None:
        q = self.query
        return keyset.position_in(
            self._run, keyset.POSTGRES, q.sort, q.descending, self.now, key, n
        )

    def window(self, key: int, size: int) -> tuple[list[int], list[int]]:
        q = self.query
        return keyset.window(self._run, keyset.POSTGRES, q.sort, q.descending, self.now, key, size)

    def chunks(self, size: int) -> Iterator[list[int]]:
        with self.conn.cursor(name="sessionmon_order") as cur:
            cur.itersize = size
            cur.execute(self.sql, self.params)
            while rows := cur.fetchmany(size):
                yield [r[0] for r in rows]

    def interrupt(self) -> None:
        self.conn.cancel()

    def close(self) -> None:
        self.conn.close()


class PostgresReader(OrderReader):
    """The monitor's read model on PostgreSQL (row keys: the ``seq`` column)."""

    dialect = keyset.POSTGRES

    def __init__(self, url: DatabaseUrl | str, *, progressive_from: int | None = None) -> None:
        super().__init__(progressive_from)
        self.url = DatabaseUrl.parse(url)
        self.display = self.url.display
        self._lock = threading.Lock()
        self._generation = 0
        self._notified = 0
        self._conn: psycopg.Connection | None = None
        self._schema = ""
        self._ensure()

    def _ensure(self) -> psycopg.Connection:
        """The LISTENing connection, (re)opened if it is gone; every reopen moves the token."""
        conn = self._conn
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()
            self._conn = None
        conn = connect(self.url, autocommit=True)
        try:
            row = conn.execute(
                "SELECT current_schema(), to_regclass('sessions') IS NOT NULL"
            ).fetchone()
            if row is None or row[0] is None or not row[1]:
                raise DatabaseError(
                    f"PostgreSQL {self.display}: not a sessionmon database (no sessions table; "
                    "run: sessionmon migrate)"
                )
            self._schema = str(row[0])
            conn.add_notify_handler(self._on_notify)
            conn.execute(f"LISTEN {CHANNEL}")
        except psycopg.Error as exc:
            conn.close()
            raise translate(exc, self.display) from None
        except DatabaseError:
            conn.close()
            raise
        self._conn = conn
        self._generation += 1
        return conn

    def _on_notify(self, notify: psycopg.Notify) -> None:
        if notify.payload == self._schema:
            self._notified += 1

    def _all(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                conn = self._ensure()
                cur = conn.execute(query, list(params))
                return cur.fetchall() if cur.description is not None else []
            except psycopg.Error as exc:
                raise translate(exc, self.display) from None

    def change_token(self) -> tuple[int, int]:
        """(connection generation, notifications seen): one cheap round trip, which also
        delivers the notifications that arrived since the last call."""
        self._all("SELECT 1")
        return self._generation, self._notified

    def count_live(self, now: float) -> int:
        return int(self._all("SELECT count(*) FROM sessions WHERE refresh_exp > %s", (now,))[0][0])

    def _live_at_least(self, now: float, n: int) -> bool:
        rows = self._all(
            "SELECT count(*) FROM (SELECT 1 FROM sessions WHERE refresh_exp > %s LIMIT %s) t",
            (now, n),
        )
        return int(rows[0][0]) >= n

    def order_sql(self, query: ViewQuery, now: float) -> tuple[str, list[Any]]:
        """The ``SELECT seq ... ORDER BY`` of ``query`` and its parameters."""
        text = query.text.strip()
        sql = "SELECT seq FROM sessions WHERE refresh_exp > %s"
        params: list[Any] = [now]
        if text:
            # Through the pg_trgm index (from three characters on: the planner scans for less).
            sql += f" AND {SEARCH_EXPR} ILIKE %s"
            params.append(_like(text))
        columns = keyset.POSTGRES.columns(query.sort)
        sql += " ORDER BY " + keyset.POSTGRES.order_by(columns, query.descending)
        return sql, params

    def _snapshot(self, query: ViewQuery, now: float) -> _Snapshot:
        return _Snapshot(self, query, now)

    def _run(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        return self._all(sql, params)

    def _top(self, query: ViewQuery, now: float, limit: int) -> list[int]:
        sql, params = self.order_sql(query, now)
        return [r[0] for r in self._all(sql + " LIMIT %s", [*params, limit])]

    def _describe(self, exc: BaseException) -> DatabaseError:
        if isinstance(exc, psycopg.Error):
            return translate(exc, self.display)
        return DatabaseError(f"PostgreSQL {self.display}: reading the session order failed")

    def _read_all(self, query: ViewQuery, now: float) -> array:
        sql, params = self.order_sql(query, now)
        return array("q", (r[0] for r in self._all(sql, params)))

    def audit_after(self, after: int, actions: Sequence[str], limit: int = 50) -> list[AuditEntry]:
        """Audit rows newer than id ``after`` with one of ``actions``, oldest first."""
        if not actions:
            return []
        marks = ", ".join("%s" for _ in actions)
        rows = self._all(
            f"SELECT {_AUDIT_COLS} FROM audit WHERE id > %s AND action IN ({marks}) "
            "ORDER BY id LIMIT %s",
            (after, *actions, limit),
        )
        return [AuditEntry.from_row(r) for r in rows]

    def last_audit_id(self) -> int:
        return int(self._all("SELECT coalesce(max(id), 0) FROM audit")[0][0])

    def rows(self, keys: Iterable[int]) -> dict[int, Session]:
        ids = list(keys)
        if not ids:
            return {}
        rows = self._all(f"SELECT seq, {_COLS} FROM sessions WHERE seq = ANY(%s)", (ids,))
        return {r[0]: Session(*r[1:]) for r in rows}

    def close(self) -> None:
        self.cancel_fill()
        with self._lock:
            if self._conn is not None:
                with contextlib.suppress(Exception):
                    self._conn.close()
                self._conn = None


__all__ = ["SCHEMA_VERSION", "PostgresReader", "PostgresStore", "translate"]
