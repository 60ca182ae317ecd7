"""The session store's interface and domain types, shared by the SQLite and PostgreSQL backends.

``SessionStore`` is what the auth core, the CLI, the demo and the monitor's actions write and read
through. ``ReadModel`` is the monitor's read path: a cheap change token, the live count, the
order of a view (row keys, possibly still filling) and the rows of the window on screen. Each
backend implements both; neither the TUI nor the web code ever sees SQL.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, Protocol

from sessionmon.core.store.order import Order, ViewQuery

if TYPE_CHECKING:
    from sessionmon.core.store.history import EndedSession, HistoryQuery
    from sessionmon.core.store.url import DatabaseUrl


class Backend(Enum):
    """Where sessions live."""

    SQLITE = "sqlite"
    POSTGRES = "postgresql"


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
    generation: int = 0
    prev_refresh_jti: str | None = None
    rotated_at: float | None = None
    rotated_ip: str | None = None
    rotated_ua: str | None = None
    access_kid: str | None = None  # the key that signed the live access token (None: unknown)
    refresh_kid: str | None = None  # ... and the live refresh token
    rotations: str | None = None  # the last rotations, JSON as stored (see ``rotation_history``)

    def to_dict(self) -> dict[str, Any]:
        """Every column, as stored (in column order)."""
        return asdict(self)

    def to_json(self) -> dict[str, Any]:
        """What ``ls --json`` shows: every column, ``rotations`` as a list of objects (oldest
        first)."""
        out = asdict(self)
        out["rotations"] = [r.to_dict() for r in self.rotation_history()]
        return out

    def rotation_history(self) -> list[RotationRecord]:
        """The recorded rotations, oldest first (unreadable JSON reads as none)."""
        return RotationRecord.parse_list(self.rotations)

    def signed_with(self, kid: str) -> bool:
        """True when the live access or refresh token was signed with the key ``kid``."""
        return kid in (self.access_kid, self.refresh_kid)

    def state(self, now: float) -> str:
        """``active``, ``refresh due`` (access expired, refresh valid) or ``expired``."""
        if self.refresh_exp is not None and self.refresh_exp <= now:
            return "expired"
        if self.access_exp is None or self.access_exp <= now:
            return "refresh due" if self.refresh_exp is not None else "expired"
        return "active"


@dataclass(frozen=True)
class AuditRow:
    """An audit row to write: who did what to which session, and how it went."""

    at: float
    actor: str
    action: str
    session_id: str | None = None
    user_id: str | None = None
    email: str | None = None
    reason: str | None = None
    revoked: Sequence[str] = ()
    outcome: str = "ok"
    detail: Mapping[str, Any] | None = None

    @classmethod
    def coerce(cls, row: AuditRow | dict[str, Any]) -> AuditRow:
        """An ``AuditRow`` from itself or from a dict of its fields."""
        return row if isinstance(row, AuditRow) else cls(**row)

    @classmethod
    def of_entry(cls, e: AuditEntry) -> AuditRow:
        """The row an existing entry was written from (to copy it elsewhere)."""
        return cls(e.at, e.actor, e.action, e.session_id, e.user_id, e.email, e.reason,
                   e.revoked, e.outcome, e.detail)  # fmt: skip

    def params(self) -> tuple[Any, ...]:
        """Values in ``AUDIT_COLUMNS`` order without ``id`` (``revoked`` as a JSON list)."""
        return (
            self.at,
            self.actor,
            self.action,
            self.session_id,
            self.user_id,
            self.email,
            self.reason,
            json.dumps(list(self.revoked)),
            self.outcome,
            None if self.detail is None else json.dumps(dict(self.detail), sort_keys=True),
        )


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
    detail: dict[str, Any] | None = None

    @classmethod
    def from_row(cls, r: Sequence[Any]) -> AuditEntry:
        """From a row in ``AUDIT_COLUMNS`` order."""
        try:
            revoked = json.loads(r[8]) if r[8] else []
        except ValueError:
            revoked = []
        detail: dict[str, Any] | None = None
        if len(r) > 10 and r[10]:
            try:
                loaded = json.loads(r[10])
            except ValueError:
                loaded = None
            detail = loaded if isinstance(loaded, dict) else None
        id_, at, actor, action, session_id, user_id, email, reason = r[:8]
        return cls(
            id_, at, actor, action, session_id, user_id, email, reason, revoked, r[9], detail
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def detail_text(self) -> str:
        """One line for a human of what ``detail`` recorded ("" when nothing)."""
        d = self.detail or {}
        if "presented_generation" in d:

            def where(side: Any) -> str:
                side = side if isinstance(side, dict) else {}
                agent = side.get("user_agent")
                return f"{side.get('ip') or '?'}" + (f" ({agent})" if agent else "")

            return (
                f"generation {d.get('presented_generation')} presented, "
                f"{d.get('live_generation')} live; legitimate {where(d.get('legitimate'))}, "
                f"reuse {where(d.get('reuse'))}"
            )
        return ", ".join(f"{k}={v}" for k, v in sorted(d.items()))


@dataclass(frozen=True)
class RotationRecord:
    """One rotation in a session's history: the generation it moved to, when, and from where."""

    generation: int
    at: float
    ip: str | None = None
    user_agent: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def parse_list(cls, text: str | None) -> list[RotationRecord]:
        """The records of a ``rotations`` column (NULL, or anything unreadable: none)."""
        if not text:
            return []
        try:
            items = json.loads(text)
        except ValueError:
            return []
        out = []
        for item in items if isinstance(items, list) else []:
            if not isinstance(item, dict):
                continue
            gen, at = item.get("generation"), item.get("at")
            if type(gen) is not int or isinstance(at, bool) or not isinstance(at, int | float):
                continue
            ip, ua = item.get("ip"), item.get("user_agent")
            out.append(
                cls(
                    gen,
                    float(at),
                    ip if isinstance(ip, str) else None,
                    ua if isinstance(ua, str) else None,
                )
            )
        return out

    @staticmethod
    def dump_list(records: Sequence[RotationRecord]) -> str:
        return json.dumps([r.to_dict() for r in records], separators=(",", ":"))


@dataclass(frozen=True)
class Rotation:
    """A refresh-token rotation to record: the session moves from ``generation`` (whose refresh
    token is ``presented_jti``) to ``generation + 1`` with the successor pair described here.

    Tokens are never stored: the ids, expiries and ``at`` (the successor's ``iat``) are enough to
    mint the same pair again for a request that presents the previous token within the grace
    window. ``refresh_exp`` is the family's: rotation does not extend a session's life."""

    generation: int
    presented_jti: str
    access_jti: str
    access_exp: float
    refresh_jti: str
    refresh_exp: float
    at: float
    ip: str | None = None
    user_agent: str | None = None
    access_kid: str | None = None  # the keys that signed the successor pair
    refresh_kid: str | None = None


@dataclass(frozen=True)
class LimitedInsert:
    """What ``insert_session_limited`` did: inserted or not (denied), and whom it evicted."""

    inserted: bool
    evicted: list[Session] = field(default_factory=list)
    live_before: int = 0


class CatchUpHow(Enum):
    """How a bulk ending's catch-up (SQLite's trigram index) made the index exact."""

    NOTHING = "nothing"  # no stale entries (or no trigram index)
    DELETED = "deleted"  # the stale entries deleted from the index
    REBUILT = "rebuilt"  # the index rebuilt from the rows left


@dataclass(frozen=True)
class CatchUp:
    """What a bulk ending's catch-up did: how, how many stale entries it removed, how long
    it took."""

    how: CatchUpHow = CatchUpHow.NOTHING
    stale: int = 0
    seconds: float = 0.0


class SessionStore(Protocol):
    """Sessions and their audit log, in one database. Every method is safe to call from any
    thread; every driver error comes out as a ``DatabaseError`` with one line for a human."""

    backend: Backend
    display: str  # where it is, safe to show (no password)
    location: DatabaseUrl  # to open it again (another connection, another process)
    migrated_from: int  # the schema version found when it was opened (0: created now)
    history_retention: float  # seconds ended sessions are kept (``--history-retention``)

    def close(self) -> None: ...

    def begin_bulk_ending(self, job: str) -> None:
        """Job ``job`` starts ending many sessions: make its deletes cheap (SQLite: a larger
        page cache on this connection, the trigram index's deletes deferred)."""
        ...

    def end_bulk_ending(self, job: str) -> CatchUp:
        """Job ``job`` has stopped: undo ``begin_bulk_ending`` and bring what it deferred up
        to date (SQLite: the trigram index exact again)."""
        ...

    def schema_version(self) -> int: ...

    def insert_session(self, session: Session) -> None: ...

    def get_session(self, session_id: str) -> Session | None: ...

    def get_sessions(self, session_ids: Sequence[str]) -> list[Session]:
        """The sessions among ``session_ids`` that exist, in the order given."""
        ...

    def sessions_for_user(self, user: str) -> list[Session]:
        """Every session whose user id or email is ``user`` (email case-insensitive)."""
        ...

    def update_access(
        self,
        session_id: str,
        access_jti: str,
        access_exp: float,
        now: float,
        access_kid: str | None = None,
    ) -> bool:
        """Record a silent refresh (and the kid of the new access token); False when the
        session no longer exists."""
        ...

    def rotate_refresh(self, session_id: str, rotation: Rotation) -> bool:
        """The rotation's compare-and-set: one ``UPDATE ... WHERE id AND generation AND
        refresh_jti`` in one transaction, which also writes the successor pair's kids and
        appends the rotation to the ``rotations`` history (the last ``ROTATION_HISTORY``).
        False when the session is gone or another request rotated it first (then nothing
        changed)."""
        ...

    def insert_session_limited(
        self,
        session: Session,
        *,
        limit: int,
        now: float,
        evict: Callable[[list[Session]], Sequence[AuditRow]] | None,
    ) -> LimitedInsert:
        """Insert ``session`` unless its user already has ``limit`` live sessions, serialised
        per user (exact under concurrency). When full: with ``evict`` the oldest sessions that
        make room are passed to it (it revokes them and returns their audit rows; if it raises,
        nothing changes) and deleted in the same transaction; without, nothing is inserted."""
        ...

    def touch(self, session_id: str, now: float) -> bool: ...

    def touch_many(self, seen: Sequence[tuple[str, float]]) -> int:
        """Set ``last_seen_at`` of several sessions in one transaction, never moving one back
        (another process may have written a later time); rows updated."""
        ...

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
    ) -> list[Session]: ...

    def count_sessions(self, *, now: float | None = None, include_expired: bool = False) -> int: ...

    def has_foreign_sessions(self, source: str) -> bool:
        """True if any session was created by someone other than ``source``."""
        ...

    def delete_sessions_with_audit(
        self, session_ids: Sequence[str], audit_rows: Iterable[AuditRow | dict[str, Any]]
    ) -> int:
        """Delete sessions and write their audit rows in one transaction; rows deleted."""
        ...

    def purge_expired(self, before: float, *, actor: str | None = None) -> int:
        """Delete sessions whose refresh token expired before ``before`` (kept in the history
        as ``expired``)."""
        ...

    # -- history of ended sessions and the figures ``doctor`` reads ---------------------------

    def prune_history(self, now: float | None = None) -> int:
        """Delete the ended sessions older than the retention; returns how many."""
        ...

    def ended_sessions(self, query: HistoryQuery) -> list[EndedSession]:
        """Ended sessions matching ``query``, newest first."""
        ...

    def revoked_with_live_tokens(self, now: float, after: int, size: int) -> list[EndedSession]:
        """Up to ``size`` ended sessions (id > ``after``, by id) whose ending revoked them and
        one of whose tokens has not expired at ``now``."""
        ...

    def ended_count(self, *, since: float | None = None) -> int: ...

    def expired_summary(self, now: float) -> tuple[int, float | None]:
        """Sessions whose refresh token expired (waiting for purge) and the oldest expiry."""
        ...

    def issued_after(self, at: float, limit: int) -> tuple[list[str], int]:
        """Sessions whose tokens were issued after ``at``: up to ``limit`` ids, the total."""
        ...

    def created_since(self, since: float) -> int: ...

    def database_size(self) -> int:
        """Bytes the database takes."""
        ...

    def server_time(self) -> float | None:
        """The database server's clock, None when it is this host's (SQLite)."""
        ...

    def write_audit(self, rows: Iterable[AuditRow | dict[str, Any]]) -> None: ...

    def audit(
        self, *, limit: int = 50, session_id: str | None = None, user: str | None = None
    ) -> list[AuditEntry]:
        """Newest audit rows first."""
        ...

    # -- bulk, for ``sessionmon copy`` --------------------------------------------------------

    def iter_session_batches(self, after: str | None, size: int) -> list[Session]:
        """Up to ``size`` sessions with an id greater than ``after``, by id (every session,
        expired ones included)."""
        ...

    def iter_audit_batches(self, after: int, size: int) -> list[AuditEntry]:
        """Up to ``size`` audit entries with an id greater than ``after``, by id."""
        ...

    def iter_ended_batches(self, after: int, size: int) -> list[EndedSession]:
        """Up to ``size`` ended sessions (the history) with an id greater than ``after``, by
        id."""
        ...

    def copy_in(
        self,
        sessions: Sequence[Session],
        audit: Sequence[AuditEntry],
        ended: Sequence[EndedSession] = (),
    ) -> None:
        """Insert sessions, audit entries and ended sessions (ids kept) in one transaction;
        rows that exist already are left as they are (a resumed copy)."""
        ...

    def audit_count(self) -> int: ...

    def last_session_id(self) -> str | None:
        """The largest session id (ids compare as bytes on both backends)."""
        ...

    def last_ended_id(self) -> int:
        """The largest ``ended_sessions`` id (0 when the history is empty)."""
        ...

    def open_reader(self) -> ReadModel:
        """A read model on its own connection (the monitor's poller owns it)."""
        ...


class ReadModel(Protocol):
    """The monitor's read path. Row keys are positive integers (0 marks "not read yet")."""

    def change_token(self) -> object:
        """Differs from the last value whenever anything may have been committed since."""
        ...

    def count_live(self, now: float) -> int: ...

    def order(self, query: ViewQuery, now: float) -> Order:
        """Row keys of the live sessions matching ``query.text``, in the query's order; a long
        order comes back with its first rows and the rows around ``query.around`` and fills in
        the background. A new long query (another sort, the filter cleared) comes back
        ``estimated`` (length and the cursor row's position from the last count and its sort
        key, no O(N) step) and the exact order follows (``Order.when_exact``)."""
        ...

    def rows(self, keys: Iterable[int]) -> dict[int, Session]:
        """The sessions with these row keys that still exist, by key."""
        ...

    def audit_after(self, after: int, actions: Sequence[str], limit: int = 50) -> list[AuditEntry]:
        """Audit rows with an id greater than ``after`` and one of ``actions``, oldest first
        (``after`` -1: none, only the newest id: see ``last_audit_id``)."""
        ...

    def last_audit_id(self) -> int:
        """The newest audit row's id (0 when there is none)."""
        ...

    def close(self) -> None: ...
