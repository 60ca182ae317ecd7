"""One poll of the session store and Redis, run by the app in a worker thread (never two at once).

Sessions: the read model's change token (``PRAGMA data_version`` on SQLite, LISTEN/NOTIFY on
PostgreSQL) says whether anything was committed since the last poll; only then
(or when the query changed, or every ``reload_every`` seconds so expired sessions drop out) the
row-id order is rebuilt. A reload that took long delays the next automatic one, so a million-row
database cannot keep a core busy. A new sort or filter is never held up by counting every live
session: a new long order may come estimated (``Order.estimated``, the exact one follows from the
reader's thread) and a filter keeps the last live count; either is marked (``live_exact``) until a
later poll without a reload takes the count from the exact order, or counts.

Redis: a ping, the key count and one page of the expiry index around the blacklist view's scroll
position; when Redis is down, attempts back off (doubling up to ``backoff_cap`` seconds) forever,
and sessions are still served from SQLite. A database that cannot
be opened (missing, corrupt, locked) is retried the same way (capped at ``db_backoff_cap``), and at
once when the operator asks for a refresh. Audit rows the operator must hear of at once (a refresh
token reused: the core revoked the session) come with the snapshot in which they were first seen
(never the ones written before the monitor started). ``poll`` never raises: every failure is in the
snapshot.
"""

from __future__ import annotations

import time
from array import array
from dataclasses import dataclass, field

from sessionmon.core.auth import REUSE_DETECTED
from sessionmon.core.blacklist import Blacklist, BlacklistEntry
from sessionmon.core.clock import Clock
from sessionmon.core.errors import DatabaseError, DatabaseMissing, RedisUnavailable
from sessionmon.core.redis_health import Finding
from sessionmon.core.store import (
    AuditEntry,
    Order,
    ReadModel,
    Session,
    ViewQuery,
    open_reader,
)
from sessionmon.core.store.url import DatabaseUrl
from sessionmon.tui.failures import report_failure
from sessionmon.tui.model import find_rowid

REDIS_DOWN = "Redis unreachable: blacklist state unknown, force-logout disabled"
# Audit actions that raise a notification in every open monitor.
ALERT_ACTIONS = (REUSE_DETECTED,)


@dataclass(frozen=True)
class PollRequest:
    """What the app wants from the next poll."""

    query: ViewQuery
    reload: bool = False  # rebuild the order even if nothing changed (sort, filter, refresh now)
    paused: bool = False  # keep the current order unless ``reload``
    blacklist_offset: int = 0
    blacklist_limit: int = 200
    blacklist_descending: bool = False
    redis_now: bool = False  # try Redis now even if backing off
    top: int = 0  # the sessions view's first visible row
    rows: int = 0  # rows to read with a new order: from ``top`` and around the cursor's session


@dataclass(frozen=True)
class SessionsResult:
    """A new order for the sessions view, with the rows it will draw first. The order may be
    estimated (``Order.estimated``): the exact one follows from the reader's thread."""

    query: ViewQuery
    order: array
    live: int
    rows: dict[int, Session] = field(default_factory=dict)  # by row key
    rows_read: tuple[int, ...] = ()  # the keys read (those missing from ``rows`` are gone)


@dataclass(frozen=True)
class RedisStatus:
    """What the last poll knows about Redis."""

    ok: bool | None = None  # None: not tried yet
    latency: float | None = None
    error: str | None = None
    last_ok: float | None = None  # clock time of the last good poll
    retry_in: float | None = None  # seconds until the next attempt when down
    # What is wrong with the server for a blacklist (may evict keys, no persistence), worst first.
    findings: tuple[Finding, ...] = ()


@dataclass(frozen=True)
class BlacklistResult:
    """The key count and one window of keys ordered by expiry."""

    count: int
    offset: int
    descending: bool
    entries: list[BlacklistEntry] = field(default_factory=list)


@dataclass(frozen=True)
class Snapshot:
    """Everything one poll found. ``sessions`` is None when the order did not change."""

    at: float
    redis: RedisStatus
    sessions: SessionsResult | None = None
    blacklist: BlacklistResult | None = None
    db_error: str | None = None
    db_missing: bool = False  # the database file does not exist
    db_retry_in: float | None = None  # seconds until the next attempt to open it
    live: int | None = None
    live_exact: bool = True  # False: ``live`` is an estimate (the exact count follows)
    sessions_as_of: float | None = None  # clock time the sessions shown were last known current
    alerts: tuple[AuditEntry, ...] = ()  # new audit rows of ``ALERT_ACTIONS``, oldest first


class Poller:
    """Polls one session store and one blacklist. Call ``poll`` from one thread at a time."""

    def __init__(
        self,
        db: DatabaseUrl,
        blacklist: Blacklist,
        clock: Clock,
        *,
        reload_every: float = 15.0,
        backoff_start: float = 0.5,
        backoff_cap: float = 10.0,
        db_backoff_cap: float = 5.0,
        max_duty: float = 0.25,
    ) -> None:
        self.db = DatabaseUrl.parse(db)
        self.blacklist = blacklist
        self.clock = clock
        self.reload_every = reload_every
        self.backoff_start = backoff_start
        self.backoff_cap = backoff_cap
        self.db_backoff_cap = db_backoff_cap
        self.max_duty = max_duty
        self._reader: ReadModel | None = None
        self._data_version: object = None
        self._loaded_query: ViewQuery | None = None
        self._last_reload = 0.0  # monotonic
        self._reload_cost = 0.0
        self._live: int | None = None
        self._live_exact = True
        self._order: array | None = None
        self._redis = RedisStatus()
        self._backoff = backoff_start
        self._next_redis = 0.0  # monotonic
        self._db_error: DatabaseError | None = None  # why the database could not be read
        self._read_at: float | None = None  # clock time of the last good read
        self._db_backoff = backoff_start
        self._next_db = 0.0  # monotonic
        self._audit_seen: int | None = None  # the newest audit id looked at for alerts

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    # -- sessions -----------------------------------------------------------------------------

    def _sessions(self, req: PollRequest) -> SessionsResult | None:
        backing_off = self._db_error is not None and self._next_db > time.monotonic()
        if self._reader is None and backing_off and not req.reload:
            return None  # the last attempt to open it failed: wait a little
        try:
            try:
                result = self._read_sessions(req)
            except DatabaseError:
                raise
            except Exception as exc:  # a bug: logged, shown as one line, retried like an outage
                raise DatabaseError(str(report_failure("reading the sessions", exc))) from None
        except DatabaseError as exc:
            self.close()
            self._data_version = None
            self._db_error = exc
            self._next_db = time.monotonic() + self._db_backoff
            self._db_backoff = min(self._db_backoff * 2, self.db_backoff_cap)
            return None
        self._db_error = None
        self._read_at = self.clock.now()  # what the screen shows is current as of now
        self._db_backoff = self.backoff_start
        return result

    def _read_sessions(self, req: PollRequest) -> SessionsResult | None:
        if self._reader is None:
            self._reader = open_reader(self.db)
            self._data_version = None
        reader = self._reader
        version = reader.change_token()
        mono = time.monotonic()
        changed = version != self._data_version or req.query != self._loaded_query
        stale = mono - self._last_reload >= self.reload_every
        # A reload that costs a lot waits longer: at most ``max_duty`` of the time reloading.
        cooled = mono - self._last_reload >= self._reload_cost / self.max_duty
        due = (changed or stale) and cooled and not req.paused
        if not (req.reload or due):
            self._settle_live(reader)
            return None
        now = self.clock.now()
        started = time.perf_counter()
        last = self._loaded_query
        previous = self._order.settled if isinstance(self._order, Order) else self._order
        if (
            previous is not None
            and (not isinstance(previous, Order) or previous.complete)
            and last is not None
            and version == self._data_version
            and not stale
            and req.query == ViewQuery(last.sort, not last.reverse, last.text)
        ):
            order = previous[::-1]  # only the direction changed: no query at all
        else:
            order = reader.order(req.query, now)
        self._order = order
        keys = _window_keys(order, req)
        rows = reader.rows(keys) if keys else {}
        if not req.query.text.strip():
            self._live = len(order)
            self._live_exact = not (isinstance(order, Order) and order.estimated)
        elif self._live is None or req.query == last:
            self._live = reader.count_live(now)
            self._live_exact = True
        else:
            # A filter changes what is shown, not how many are live: the count of the last poll
            # until the next poll counts again (never O(N) before the matches are on screen).
            self._live_exact = False
        self._reload_cost = time.perf_counter() - started
        self._last_reload = time.monotonic()
        self._data_version = version
        self._loaded_query = req.query
        return SessionsResult(req.query, order, self._live, rows, tuple(keys))

    def _settle_live(self, reader: ReadModel) -> None:
        """A poll with no reload makes an estimated live count exact: from the exact order once
        the reader has it, or by counting (filtered)."""
        if self._live_exact:
            return
        order = self._order
        if self._loaded_query is not None and not self._loaded_query.text.strip():
            exact = order.settled if isinstance(order, Order) else order
            if exact is not None:
                self._live, self._live_exact = len(exact), True
            return
        self._live, self._live_exact = reader.count_live(self.clock.now()), True

    def _alerts(self) -> tuple[AuditEntry, ...]:
        """New alert rows since the last poll (none at the first: they are history)."""
        reader = self._reader
        if reader is None or self._db_error is not None:
            return ()
        try:
            if self._audit_seen is None:
                self._audit_seen = reader.last_audit_id()
                return ()
            found = reader.audit_after(self._audit_seen, ALERT_ACTIONS)
        except DatabaseError:
            return ()  # the next sessions read reports the database's trouble
        if found:
            self._audit_seen = found[-1].id
        return tuple(found)

    # -- Redis ------------------------------------------------------------------------------

    def _redis_poll(self, req: PollRequest) -> BlacklistResult | None:
        if self._redis.ok is False and not req.redis_now:
            wait = self._next_redis - time.monotonic()
            if wait > 0:
                self._redis = RedisStatus(
                    False, None, self._redis.error, self._redis.last_ok, retry_in=wait
                )
                return None
        try:
            latency = self.blacklist.ping()
            count = self.blacklist.count()
            offset = max(0, min(req.blacklist_offset, max(0, count - 1)))
            entries = self.blacklist.page(
                offset, req.blacklist_limit, descending=req.blacklist_descending
            )
            guard = self.blacklist.guard
            # Read on every (re)connect and once a minute, not on every poll.
            findings = tuple(guard.findings()) if guard is not None else ()
        except Exception as exc:  # RedisUnavailable, or a bug (e.g. a key of the wrong type)
            error = str(exc) if isinstance(exc, RedisUnavailable) else None
            if error is None:
                error = str(report_failure("reading the blacklist", exc))
            self._next_redis = time.monotonic() + self._backoff
            retry = self._backoff
            self._backoff = min(self._backoff * 2, self.backoff_cap)
            self._redis = RedisStatus(False, None, error, self._redis.last_ok, retry_in=retry)
            return None
        self._backoff = self.backoff_start
        self._redis = RedisStatus(True, latency, None, self.clock.now(), findings=findings)
        return BlacklistResult(count, offset, req.blacklist_descending, entries)

    # -- both -------------------------------------------------------------------------------

    def poll(self, req: PollRequest) -> Snapshot:
        """One poll; never raises: an unreachable Redis or a bad database is in the snapshot."""
        sessions = self._sessions(req)
        alerts = self._alerts()
        blacklist = self._redis_poll(req)
        db_error = self._db_error
        db_retry = None
        if db_error is not None:
            db_retry = max(0.0, self._next_db - time.monotonic())
        return Snapshot(
            at=self.clock.now(),
            redis=self._redis,
            sessions=sessions,
            blacklist=blacklist,
            db_error=str(db_error) if db_error is not None else None,
            db_missing=isinstance(db_error, DatabaseMissing) and not self.db.exists(),
            db_retry_in=db_retry,
            live=self._live,
            live_exact=self._live_exact,
            sessions_as_of=self._read_at,
            alerts=alerts,
        )


def _window_keys(order: array, req: PollRequest) -> list[int]:
    """The keys of the rows a new order is drawn with: ``req.rows`` from ``req.top`` and as many
    from the cursor's session on (where it is in the new order), skipping keys not read yet."""
    if req.rows <= 0 or not len(order):
        return []
    spans = [range(req.top, min(len(order), req.top + req.rows))]
    anchor = req.query.around
    if anchor is not None:
        at = find_rowid(order, anchor)
        if at >= 0:
            start = max(0, at - req.rows // 2)
            spans.append(range(start, min(len(order), start + req.rows)))
    return list(dict.fromkeys(k for span in spans for i in span if (k := order[i])))
