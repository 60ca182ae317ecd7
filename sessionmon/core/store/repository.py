"""The session and audit queries of ``SessionStore``, written once for both backends.

A backend subclasses ``SqlRepository`` and supplies how a statement runs: ``dialect`` (the
placeholder, ``INSERT``-if-absent), ``_query`` (a read on its connection), ``transaction`` (one
write transaction, every driver error translated to a ``DatabaseError``) and, if it needs one, a
step after copied audit rows (``_after_audit_copy``). Ids go into ``IN`` lists of at most
``CHUNK`` (SQLite's parameter limit is far away; PostgreSQL's plans stay the same).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from sessionmon.core.clock import Clock
from sessionmon.core.store import keyset
from sessionmon.core.store.base import (
    AuditEntry,
    AuditRow,
    CatchUp,
    LimitedInsert,
    Rotation,
    Session,
)
from sessionmon.core.store.history import (
    DEFAULT_RETENTION,
    ENDED_COLUMNS,
    PRUNE_EVERY,
    EndedSession,
    EndHow,
    HistoryQuery,
)
from sessionmon.core.store.schema import AUDIT_COLUMNS, ROTATION_HISTORY, SESSION_COLUMNS, SORTS

CHUNK = 500
_COLS = ", ".join(SESSION_COLUMNS)
_AUDIT_COLS = ", ".join(AUDIT_COLUMNS)
_ENDED_COLS = ", ".join(ENDED_COLUMNS)
# What a purge copies from ``sessions`` into ``ended_sessions`` (same order as ENDED_COLUMNS,
# with placeholders for ended_at, how, actor and reason; kids only where the sessions have them).
_PURGE_SOURCE = [
    c
    if c in SESSION_COLUMNS
    else ("{mark}" if c in ("ended_at", "how", "actor", "reason") else "NULL")
    for c in ENDED_COLUMNS
]
_PURGE_SOURCE[0] = "id"


class SqlRepository:
    """Sessions and audit rows over a DB-API connection of the backend's."""

    dialect: keyset.Dialect
    clock: Clock
    # How long ended sessions are kept (seconds; ``--history-retention``).
    history_retention: float = DEFAULT_RETENTION
    _history_pruned_at: float = 0.0

    # -- what a backend supplies -----------------------------------------------------------------

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        raise TypeError(f"{type(self).__name__} must define _query")

    def transaction(self) -> contextlib.AbstractContextManager[Any]:
        raise TypeError(f"{type(self).__name__} must define transaction")

    def _after_audit_copy(self, conn: Any) -> None:
        """Called in the transaction that copied audit rows with their ids."""
        self._after_id_copy(conn, "audit")

    def _after_id_copy(self, conn: Any, table: str) -> None:
        """Called in the transaction that copied rows of ``table`` with their ids: later rows
        must get ids after them (SQLite's ``INTEGER PRIMARY KEY`` does so by itself)."""

    def _lock_user(self, conn: Any, user_id: str) -> None:
        """Serialise this transaction with every other one that locks ``user_id`` (until it
        ends). SQLite's ``BEGIN IMMEDIATE`` already serialises every writer: nothing to do."""

    # -- helpers -----------------------------------------------------------------------------------

    def _marks(self, n: int) -> str:
        return ", ".join(self.dialect.mark for _ in range(n))

    def _one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        rows = self._query(sql, params)
        return rows[0][0] if rows else None

    def _insert_ignoring(self, table: str, columns: Sequence[str], *, keep_id: bool = False) -> str:
        """``INSERT`` that leaves a row whose key exists as it is; ``keep_id``: the ``id`` given
        is written even into an identity column that generates its own."""
        d = self.dialect
        keep = d.keep_ids if keep_id else ""
        return (
            f"INSERT {d.ignore_prefix}INTO {table} ({', '.join(columns)}){keep} "
            f"VALUES ({self._marks(len(columns))}){d.ignore_suffix}"
        )

    @staticmethod
    def _chunks(ids: Sequence[str]) -> Iterator[list[str]]:
        for start in range(0, len(ids), CHUNK):
            yield list(ids[start : start + CHUNK])

    def _insert_audit(self, conn: Any, rows: Iterable[AuditRow | dict[str, Any]]) -> None:
        params = [AuditRow.coerce(row).params() for row in rows]
        if params:
            cols = AUDIT_COLUMNS[1:]
            sql = f"INSERT INTO audit ({', '.join(cols)}) VALUES ({self._marks(len(cols))})"
            conn.cursor().executemany(sql, params)

    # -- sessions --------------------------------------------------------------------------------

    def insert_session(self, session: Session) -> None:
        with self.transaction() as conn:
            conn.execute(
                f"INSERT INTO sessions ({_COLS}) VALUES ({self._marks(len(SESSION_COLUMNS))})",
                [getattr(session, c) for c in SESSION_COLUMNS],
            )

    def get_session(self, session_id: str) -> Session | None:
        m = self.dialect.mark
        rows = self._query(f"SELECT {_COLS} FROM sessions WHERE id = {m}", (session_id,))
        return Session(*rows[0]) if rows else None

    def get_sessions(self, session_ids: Sequence[str]) -> list[Session]:
        """The sessions among ``session_ids`` that exist, in the order given."""
        ids = list(dict.fromkeys(session_ids))
        found: dict[str, Session] = {}
        for chunk in self._chunks(ids):
            sql = f"SELECT {_COLS} FROM sessions WHERE id IN ({self._marks(len(chunk))})"
            found.update((r[0], Session(*r)) for r in self._query(sql, chunk))
        return [found[i] for i in ids if i in found]

    def sessions_for_user(self, user: str) -> list[Session]:
        """Every session whose user id or email is ``user`` (email case-insensitive)."""
        m = self.dialect.mark
        rows = self._query(
            f"SELECT {_COLS} FROM sessions WHERE user_id = {m} OR email = {m} OR email = {m} "
            "ORDER BY created_at",
            (user, user, user.lower()),
        )
        return [Session(*r) for r in rows]

    def update_access(
        self,
        session_id: str,
        access_jti: str,
        access_exp: float,
        now: float,
        access_kid: str | None = None,
    ) -> bool:
        """Record a silent refresh; False when the session no longer exists."""
        m = self.dialect.mark
        with self.transaction() as conn:
            cur = conn.execute(
                f"UPDATE sessions SET access_jti = {m}, access_exp = {m}, last_seen_at = {m}, "
                f"access_kid = {m}, refresh_count = refresh_count + 1 WHERE id = {m}",
                (access_jti, access_exp, now, access_kid, session_id),
            )
            return bool(cur.rowcount == 1)

    def rotate_refresh(self, session_id: str, rotation: Rotation) -> bool:
        """The rotation's compare-and-set (see ``SessionStore.rotate_refresh``). The family's
        refresh expiry does not move (every index of the monitor's sorts holds it)."""
        m = self.dialect.mark
        r = rotation
        history = self.dialect.append_rotation.format(keep=ROTATION_HISTORY)
        with self.transaction() as conn:
            cur = conn.execute(
                f"UPDATE sessions SET generation = {m}, prev_refresh_jti = refresh_jti, "
                f"refresh_jti = {m}, access_jti = {m}, access_exp = {m}, "
                f"last_seen_at = {m}, rotated_at = {m}, rotated_ip = {m}, rotated_ua = {m}, "
                f"access_kid = {m}, refresh_kid = {m}, rotations = {history}, "
                "refresh_count = refresh_count + 1 "
                f"WHERE id = {m} AND generation = {m} AND refresh_jti = {m}",
                (
                    r.generation + 1,
                    r.refresh_jti,
                    r.access_jti,
                    r.access_exp,
                    r.at,
                    r.at,
                    r.ip,
                    r.user_agent,
                    r.access_kid,
                    r.refresh_kid,
                    r.generation + 1,
                    r.at,
                    r.ip,
                    r.user_agent,
                    session_id,
                    r.generation,
                    r.presented_jti,
                ),
            )
            return bool(cur.rowcount == 1)

    def insert_session_limited(
        self,
        session: Session,
        *,
        limit: int,
        now: float,
        evict: Callable[[list[Session]], Sequence[AuditRow]] | None,
    ) -> LimitedInsert:
        """Insert unless the user is at ``limit`` live sessions (see ``SessionStore``)."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        m = self.dialect.mark
        with self.transaction() as conn:
            self._lock_user(conn, session.user_id)
            rows = conn.execute(
                f"SELECT {_COLS} FROM sessions WHERE user_id = {m} AND refresh_exp > {m} "
                "ORDER BY created_at, id",
                (session.user_id, now),
            ).fetchall()
            live = [Session(*r) for r in rows]
            victims: list[Session] = []
            if len(live) >= limit:
                if evict is None:
                    return LimitedInsert(False, [], len(live))
                victims = live[: len(live) - limit + 1]
                audit_rows = list(evict(victims))
                for chunk in self._chunks([v.id for v in victims]):
                    sql = f"DELETE FROM sessions WHERE id IN ({self._marks(len(chunk))})"
                    conn.execute(sql, chunk)
                self._insert_audit(conn, audit_rows)
                by_session = {r.session_id: r for r in audit_rows if r.session_id}
                self._record_endings(conn, [self._ending(v, by_session.get(v.id)) for v in victims])
            conn.execute(
                f"INSERT INTO sessions ({_COLS}) VALUES ({self._marks(len(SESSION_COLUMNS))})",
                [getattr(session, c) for c in SESSION_COLUMNS],
            )
        return LimitedInsert(True, victims, len(live))

    def touch(self, session_id: str, now: float) -> bool:
        """Update ``last_seen_at``; False when the session no longer exists."""
        m = self.dialect.mark
        with self.transaction() as conn:
            cur = conn.execute(
                f"UPDATE sessions SET last_seen_at = {m} WHERE id = {m}", (now, session_id)
            )
            return bool(cur.rowcount == 1)

    def touch_many(self, seen: Sequence[tuple[str, float]]) -> int:
        """Set ``last_seen_at`` of several sessions in one transaction, never moving one back
        (another process may have written a later time); rows updated."""
        if not seen:
            return 0
        m = self.dialect.mark
        sql = (
            f"UPDATE sessions SET last_seen_at = {m} "
            f"WHERE id = {m} AND (last_seen_at IS NULL OR last_seen_at < {m})"
        )
        n = 0
        with self.transaction() as conn:
            for session_id, at in seen:
                n += max(conn.execute(sql, (at, session_id, at)).rowcount, 0)
        return n

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
        """Sessions (live ones unless ``include_expired``), ordered by a sort's index."""
        if order not in SORTS:
            raise ValueError(f"unknown order {order!r}")
        now = self.clock.now() if now is None else now
        m = self.dialect.mark
        where: list[str] = []
        params: list[Any] = []
        if not include_expired:
            where.append(f"refresh_exp > {m}")
            params.append(now)
        if user:
            where.append(f"(user_id = {m} OR email = {m} OR email = {m})")
            params += [user, user, user.lower()]
        sql = f"SELECT {_COLS} FROM sessions"
        if where:
            sql += " WHERE " + " AND ".join(where)
        d = self.dialect
        sql += " ORDER BY " + d.order_by(d.columns(order), descending)
        if limit is not None:
            sql += f" LIMIT {m} OFFSET {m}"
            params += [limit, offset]
        return [Session(*r) for r in self._query(sql, params)]

    def count_sessions(self, *, now: float | None = None, include_expired: bool = False) -> int:
        if include_expired:
            return int(self._one("SELECT COUNT(*) FROM sessions"))
        now = self.clock.now() if now is None else now
        m = self.dialect.mark
        return int(self._one(f"SELECT COUNT(*) FROM sessions WHERE refresh_exp > {m}", (now,)))

    def has_foreign_sessions(self, source: str) -> bool:
        """True if any session was created by someone other than ``source``."""
        m = self.dialect.mark
        sql = f"SELECT 1 FROM sessions WHERE source IS NULL OR source <> {m} LIMIT 1"
        return bool(self._query(sql, (source,)))

    def begin_bulk_ending(self, job: str) -> None:
        """Nothing to prepare (PostgreSQL: a GIN index's deletes are already lazy)."""

    def end_bulk_ending(self, job: str) -> CatchUp:
        return CatchUp()

    def delete_sessions_with_audit(
        self, session_ids: Sequence[str], audit_rows: Iterable[AuditRow | dict[str, Any]]
    ) -> int:
        """Delete sessions and write their audit rows in one transaction; returns rows deleted."""
        rows = [AuditRow.coerce(r) for r in audit_rows]
        by_session = {r.session_id: r for r in rows if r.session_id}
        deleted = 0
        groups = _endings(session_ids, by_session)
        with self.transaction() as conn:
            if groups is not None:
                # A few ways of ending (an operator's action on many, written in chunks): the
                # database moves the rows into the history itself, with no row through Python.
                for ending, ids in groups.items():
                    deleted += self._move_all_to_history(conn, ids, *ending)
                self._insert_audit(conn, rows)
                self._record_endings(conn, [])
                return deleted
            ended: list[EndedSession] = []
            for chunk in self._chunks(session_ids):
                sql = (
                    f"DELETE FROM sessions WHERE id IN ({self._marks(len(chunk))}) "
                    f"RETURNING {_COLS}"
                )
                gone = [Session(*r) for r in conn.execute(sql, chunk).fetchall()]
                deleted += len(gone)
                ended += [self._ending(s, by_session.get(s.id)) for s in gone]
            self._insert_audit(conn, rows)
            self._record_endings(conn, ended)
        return deleted

    def _move_all_to_history(
        self, conn: Any, ids: Sequence[str], at: float, how: str, actor: str, reason: str | None
    ) -> int:
        """``_move_to_history`` of ``ids``, ``CHUNK`` at a time; how many were deleted."""
        return sum(
            self._move_to_history(conn, chunk, at, how, actor, reason)
            for chunk in self._chunks(ids)
        )

    def _move_to_history(
        self, conn: Any, ids: Sequence[str], at: float, how: str, actor: str, reason: str | None
    ) -> int:
        """Copy sessions ``ids`` into ``ended_sessions`` (as ended ``how``), then delete them,
        in the caller's transaction; returns how many were deleted. SQLite's ``BEGIN
        IMMEDIATE`` keeps every other writer out between the two statements."""
        marks = self._marks(len(ids))
        conn.execute(
            f"{self._history_insert()} FROM sessions WHERE id IN ({marks})",
            (at, how, actor, reason, *ids),
        )
        return int(conn.execute(f"DELETE FROM sessions WHERE id IN ({marks})", ids).rowcount)

    def _history_insert(self) -> str:
        """``INSERT INTO ended_sessions (...) SELECT ...`` of session rows (add ``FROM``), with
        four placeholders: ended at, how, actor, reason."""
        source = ", ".join(c.format(mark=self.dialect.mark) for c in _PURGE_SOURCE)
        return f"INSERT INTO ended_sessions ({_ENDED_COLS}) SELECT {source}"

    def _ending(self, s: Session, row: AuditRow | None) -> EndedSession:
        if row is None:  # deleted without an audit row of its own: an operator's
            return EndedSession.of(
                s, ended_at=self.clock.now(), how=EndHow.FORCE_LOGOUT, actor=None, reason=None
            )
        return EndedSession.of_audit(s, row)

    # -- history of ended sessions -----------------------------------------------------------------

    def _record_endings(self, conn: Any, ended: Sequence[EndedSession]) -> None:
        """Write ``ended_sessions`` rows (in the deleting transaction), and now and then delete
        the rows older than the retention (indexed by ``ended_at``)."""
        if ended:
            sql = (
                f"INSERT INTO ended_sessions ({_ENDED_COLS}) "
                f"VALUES ({self._marks(len(ENDED_COLUMNS))})"
            )
            conn.cursor().executemany(sql, [e.params() for e in ended])
        now = self.clock.now()
        if now - self._history_pruned_at >= PRUNE_EVERY:
            self._history_pruned_at = now
            self._prune_history(conn, now)

    def _prune_history(self, conn: Any, now: float) -> int:
        m = self.dialect.mark
        cur = conn.execute(
            f"DELETE FROM ended_sessions WHERE ended_at < {m}", (now - self.history_retention,)
        )
        return int(cur.rowcount)

    def prune_history(self, now: float | None = None) -> int:
        """Delete the ended sessions older than the retention; returns how many."""
        now = self.clock.now() if now is None else now
        with self.transaction() as conn:
            self._history_pruned_at = now
            return self._prune_history(conn, now)

    def ended_sessions(self, query: HistoryQuery) -> list[EndedSession]:
        """Ended sessions matching ``query``, newest first."""
        m = self.dialect.mark
        where: list[str] = []
        params: list[Any] = []
        if query.user:
            where.append(f"(user_id = {m} OR email = {m} OR email = {m})")
            params += [query.user, query.user, query.user.lower()]
        if query.text:
            like = (
                "%"
                + query.text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                + "%"
            )
            cols = ("email", "name", "user_id", "session_id", "reason", "actor")
            where.append("(" + " OR ".join(f"lower({c}) LIKE {m} ESCAPE '\\'" for c in cols) + ")")
            params += [like] * len(cols)
        if query.since is not None:
            where.append(f"ended_at >= {m}")
            params.append(query.since)
        if query.until is not None:
            where.append(f"ended_at <= {m}")
            params.append(query.until)
        if query.how is not None:
            where.append(f"how = {m}")
            params.append(query.how.value)
        sql = f"SELECT id, {_ENDED_COLS} FROM ended_sessions"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY ended_at DESC, id DESC LIMIT {m}"
        params.append(query.limit)
        return [EndedSession.from_row(r) for r in self._query(sql, params)]

    def revoked_with_live_tokens(self, now: float, after: int, size: int) -> list[EndedSession]:
        """Up to ``size`` ended sessions (id > ``after``, by id) whose ending revoked them and
        one of whose tokens has not expired at ``now``."""
        m = self.dialect.mark
        sql = (
            f"SELECT id, {_ENDED_COLS} FROM ended_sessions WHERE id > {m} AND how <> {m} "
            f"AND (refresh_exp > {m} OR access_exp > {m}) ORDER BY id LIMIT {m}"
        )
        rows = self._query(sql, (after, EndHow.EXPIRED.value, now, now, size))
        return [EndedSession.from_row(r) for r in rows]

    def ended_count(self, *, since: float | None = None) -> int:
        if since is None:
            return int(self._one("SELECT COUNT(*) FROM ended_sessions"))
        m = self.dialect.mark
        return int(
            self._one(f"SELECT COUNT(*) FROM ended_sessions WHERE ended_at >= {m}", (since,))
        )

    # -- figures for doctor ------------------------------------------------------------------------

    def expired_summary(self, now: float) -> tuple[int, float | None]:
        """How many sessions have an expired refresh token (waiting for purge), and the oldest
        such expiry."""
        m = self.dialect.mark
        rows = self._query(
            f"SELECT COUNT(*), MIN(refresh_exp) FROM sessions WHERE refresh_exp <= {m}", (now,)
        )
        count, oldest = rows[0] if rows else (0, None)
        return int(count or 0), None if oldest is None else float(oldest)

    def issued_after(self, at: float, limit: int) -> tuple[list[str], int]:
        """Sessions whose tokens were issued after ``at`` (login or last rotation): up to
        ``limit`` ids and the total."""
        m = self.dialect.mark
        cond = f"created_at > {m} OR rotated_at > {m}"
        total = int(self._one(f"SELECT COUNT(*) FROM sessions WHERE {cond}", (at, at)))
        rows = self._query(
            f"SELECT id FROM sessions WHERE {cond} ORDER BY id LIMIT {m}", (at, at, limit)
        )
        return [str(r[0]) for r in rows], total

    def created_since(self, since: float) -> int:
        m = self.dialect.mark
        return int(self._one(f"SELECT COUNT(*) FROM sessions WHERE created_at >= {m}", (since,)))

    def database_size(self) -> int:
        """Bytes the database takes (its files; PostgreSQL: this schema's tables)."""
        raise TypeError(f"{type(self).__name__} must define database_size")

    def server_time(self) -> float | None:
        """The database server's clock (epoch seconds), None when it is this host's."""
        return None

    def purge_expired(self, before: float, *, actor: str | None = None) -> int:
        """Delete sessions whose refresh token expired before ``before``; each is kept in the
        history (``expired``), in the same transaction."""
        m = self.dialect.mark
        with self.transaction() as conn:
            conn.execute(
                f"{self._history_insert()} FROM sessions WHERE refresh_exp <= {m}",
                (self.clock.now(), EndHow.EXPIRED.value, actor, "refresh expired", before),
            )
            deleted = int(
                conn.execute(f"DELETE FROM sessions WHERE refresh_exp <= {m}", (before,)).rowcount
            )
            self._record_endings(conn, [])
            return deleted

    def last_session_id(self) -> str | None:
        """The largest session id (ids compare as bytes on both backends)."""
        value = self._one("SELECT max(id) FROM sessions")
        return None if value is None else str(value)

    # -- audit -----------------------------------------------------------------------------------

    def write_audit(self, rows: Iterable[AuditRow | dict[str, Any]]) -> None:
        """Append audit rows."""
        with self.transaction() as conn:
            self._insert_audit(conn, rows)

    def audit(
        self, *, limit: int = 50, session_id: str | None = None, user: str | None = None
    ) -> list[AuditEntry]:
        """Newest audit rows first."""
        m = self.dialect.mark
        where: list[str] = []
        params: list[Any] = []
        if session_id:
            where.append(f"session_id = {m}")
            params.append(session_id)
        if user:
            where.append(f"(user_id = {m} OR email = {m} OR email = {m})")
            params += [user, user, user.lower()]
        sql = f"SELECT {_AUDIT_COLS} FROM audit"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY id DESC LIMIT {m}"
        params.append(limit)
        return [AuditEntry.from_row(r) for r in self._query(sql, params)]

    def audit_count(self) -> int:
        return int(self._one("SELECT COUNT(*) FROM audit"))

    # -- bulk (sessionmon copy) ------------------------------------------------------------------

    def iter_session_batches(self, after: str | None, size: int) -> list[Session]:
        """Up to ``size`` sessions with an id greater than ``after``, by id."""
        m = self.dialect.mark
        rows = self._query(
            f"SELECT {_COLS} FROM sessions WHERE id > {m} ORDER BY id LIMIT {m}",
            (after or "", size),
        )
        return [Session(*r) for r in rows]

    def iter_audit_batches(self, after: int, size: int) -> list[AuditEntry]:
        """Up to ``size`` audit entries with an id greater than ``after``, by id."""
        m = self.dialect.mark
        rows = self._query(
            f"SELECT {_AUDIT_COLS} FROM audit WHERE id > {m} ORDER BY id LIMIT {m}", (after, size)
        )
        return [AuditEntry.from_row(r) for r in rows]

    def iter_ended_batches(self, after: int, size: int) -> list[EndedSession]:
        """Up to ``size`` ended sessions with an id greater than ``after``, by id."""
        m = self.dialect.mark
        rows = self._query(
            f"SELECT id, {_ENDED_COLS} FROM ended_sessions WHERE id > {m} ORDER BY id LIMIT {m}",
            (after, size),
        )
        return [EndedSession.from_row(r) for r in rows]

    def last_ended_id(self) -> int:
        """The largest ``ended_sessions`` id (0 when the history is empty)."""
        return int(self._one("SELECT max(id) FROM ended_sessions") or 0)

    def copy_in(
        self,
        sessions: Sequence[Session],
        audit: Sequence[AuditEntry],
        ended: Sequence[EndedSession] = (),
    ) -> None:
        """Insert sessions, audit entries and ended sessions (ids kept) in one transaction;
        rows that exist already are left as they are (a resumed copy). Copied history rows are
        not pruned here (the retention applies as this store writes endings and at purge)."""
        with self.transaction() as conn:
            if ended:
                conn.cursor().executemany(
                    self._insert_ignoring("ended_sessions", ("id", *ENDED_COLUMNS), keep_id=True),
                    [(e.id, *e.params()) for e in ended],
                )
                self._after_id_copy(conn, "ended_sessions")
            cur = conn.cursor()
            if sessions:
                cur.executemany(
                    self._insert_ignoring("sessions", SESSION_COLUMNS),
                    [[getattr(s, c) for c in SESSION_COLUMNS] for s in sessions],
                )
            if audit:
                cur.executemany(
                    self._insert_ignoring("audit", AUDIT_COLUMNS),
                    [(e.id, *AuditRow.of_entry(e).params()) for e in audit],
                )
                self._after_audit_copy(conn)


# More ways of ending than this in one deletion: the rows go through Python instead.
MAX_ENDINGS = 16


def _endings(
    session_ids: Sequence[str], by_session: dict[str, AuditRow]
) -> dict[tuple[float, str, str, str | None], list[str]] | None:
    """The sessions by how they end, (ended at, how, actor, reason), when every session has an
    audit row and there are at most ``MAX_ENDINGS`` such ways (an operator's action on many:
    a bulk job's batch is blacklisted in chunks, each at its own time), else None."""
    if not session_ids:
        return None
    groups: dict[tuple[float, str, str, str | None], list[str]] = {}
    for sid in session_ids:
        row = by_session.get(sid)
        if row is None:
            return None
        key = (row.at, row.action, row.actor, row.reason)
        ids = groups.get(key)
        if ids is None:
            if len(groups) == MAX_ENDINGS:
                return None
            groups[key] = ids = []
        ids.append(sid)
    endings: dict[tuple[float, str, str, str | None], list[str]] = {}
    for (at, action, actor, reason), ids in groups.items():  # two actions may end alike
        how = EndHow.of_audit(action, reason).value
        endings.setdefault((at, how, actor, reason), []).extend(ids)
    return endings
