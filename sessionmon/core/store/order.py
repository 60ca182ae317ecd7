"""A view's order of row keys, filled in the background, the same way on every backend.

The sessions view never holds a million ``Session`` objects: it holds one ``array('q')`` of row
keys in view order (8 bytes a session), built by one ``ORDER BY`` that reads a covering index, and
reads the rows it draws by key. Reading a million keys into Python takes ~0.4 s, so a long order
is an ``Order`` filled by a thread: ``OrderReader.order`` returns once the first rows and the rows
around the cursor's session are in, and the thread fills the rest from the same read transaction
(one snapshot, so positions never disagree). The rows around the cursor are read by key (keyset,
never ``OFFSET``), and its position is counted from the nearer end of the order.

Once the reader knows roughly how many sessions are live (it counted them for an earlier order), a
new long order (a re-sort, clearing the filter) does no O(N) step before its first rows are on
screen: ``order`` returns an *estimated* ``Order`` at once, read on the reader's own connection
with a few index look-ups (the first rows, the rows around the cursor's session). Its length is
the last count and the cursor's position is estimated from its sort key, both marked
(``Order.estimated``), so nothing shows them as exact. The thread then counts, places the cursor's
rows exactly and hands the exact ``Order`` over (``when_exact``) before it fills the rest.

A backend supplies an ``OrderSnapshot`` (one connection in one read transaction), ``_run`` (a
query on the reader's own connection) and a small query for short orders; everything else here
is shared.
"""

from __future__ import annotations

import contextlib
import threading
import time
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, SupportsIndex

from sessionmon.core.errors import DatabaseError
from sessionmon.core.store import keyset
from sessionmon.core.store.schema import SORTS

FILL_CHUNK = 16_384
FILL_PAUSE = 0.002  # seconds between chunks of a background fill (the GIL goes to the UI)
RESUME_AFTER = 0.5  # a background fill starts at the latest this long after its first rows
# Orders at least this long are filled in the background (smaller ones are read at once).
PROGRESSIVE_FROM = 100_000
# Rows read before ``order`` returns: the top of the list and this many around the anchor.
WINDOW = 256


@dataclass(frozen=True)
class ViewQuery:
    """What the sessions view shows: a sort, its direction and a filter text.

    ``around`` is the row key of the session under the cursor when the query was made: the reader
    reads the rows around it first, so the cursor can stay on it before the whole order is in. It
    is a hint, not part of the query (it does not take part in ``==``).
    """

    sort: str = "access_exp"
    reverse: bool = False
    text: str = ""
    around: int | None = field(default=None, compare=False)

    @property
    def descending(self) -> bool:
        return SORTS[self.sort].descending != self.reverse

    @property
    def label(self) -> str:
        return SORTS[self.sort].label

    def reversed(self) -> ViewQuery:
        """The same list in the other direction (no anchor)."""
        return ViewQuery(self.sort, not self.reverse, self.text)


class Order(array):
    """Row keys in view order, of known length, possibly still being filled by a reader thread.

    A position not read yet holds 0 (no backend hands out the row key 0). Indexing never waits;
    a slice (e.g. ``order[::-1]``) waits until the order is complete and raises
    ``DatabaseError`` if filling it failed or was cancelled.

    An ``estimated`` order is a first look, never filled: its length is an estimate and so is
    the position of the rows around the cursor's session (its first rows are exact). The exact
    order follows (``when_exact``); the estimated one completes when that one does, and a slice
    of it is a slice of that one.
    """

    def __init__(self, typecode: str = "q", initializer: Any = b"") -> None:
        self._done = threading.Event()
        self._resume = threading.Event()
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[Order], None]] = []
        self.error: DatabaseError | None = None
        self.estimated = False
        self.anchor: tuple[int, int] | None = None  # (row key, its index) of the cursor's row
        self._exact: Order | None = None
        self._exact_known = threading.Event()
        self._exact_callbacks: list[Callable[[Order | None], None]] = []

    @classmethod
    def complete_from(cls, keys: array) -> Order:
        """A complete order of these row keys."""
        order = cls("q", keys.tobytes())
        order._finish()
        return order

    @property
    def complete(self) -> bool:
        """True once every position is filled (or filling stopped: see ``error``)."""
        return self._done.is_set()

    def resume(self) -> None:
        """Let the filling thread go on (the view calls this once it has drawn the first rows);
        for an estimated order: the exact one's, once it is there."""
        self._resume.set()
        exact = self._exact
        if exact is not None:
            exact.resume()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until complete; False on timeout."""
        return self._done.wait(timeout)

    def when_complete(self, callback: Callable[[Order], None]) -> None:
        """Call ``callback(order)`` once complete: now if it is, else from the filling thread."""
        with self._lock:
            if not self._done.is_set():
                self._callbacks.append(callback)
                return
        callback(self)

    @property
    def settled(self) -> Order | None:
        """The exact order: this one unless estimated; else the one that followed (None until it
        is there, or if reading it failed)."""
        return self if not self.estimated else self._exact

    def when_exact(self, callback: Callable[[Order | None], None]) -> None:
        """Call ``callback(exact)`` once the exact order has its first rows (None: reading it
        failed or was cancelled): now if known, else from the reader's thread."""
        if not self.estimated:
            callback(self)
            return
        with self._lock:
            if not self._exact_known.is_set():
                self._exact_callbacks.append(callback)
                return
        callback(self._exact)

    def _settle(self, exact: Order | None, error: DatabaseError | None = None) -> None:
        """The exact order of an estimated one is known (or will never be)."""
        with self._lock:
            if self._exact_known.is_set():
                return
            self._exact = exact
            self._exact_known.set()
            callbacks, self._exact_callbacks = self._exact_callbacks, []
        for callback in callbacks:
            callback(exact)
        if exact is None:
            self._finish(error or DatabaseError("session order cancelled"))
            return
        if self._resume.is_set():
            exact.resume()
        exact.when_complete(lambda done: self._finish(done.error))

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
            if self._exact is not None:
                return self._exact[key]
        return super().__getitem__(key)


class OrderSnapshot(Protocol):
    """One query's order on one connection, inside one read transaction."""

    def count(self) -> int:
        """Live rows matching the query."""
        ...

    def top(self, limit: int) -> list[int]:
        """The first ``limit`` keys."""
        ...

    def position(self, key: int, n: int) -> int | None:
        """Index of ``key`` among the ``n`` rows (None if it is not live)."""
        ...

    def window(self, key: int, size: int) -> tuple[list[int], list[int]]:
        """Up to ``size`` keys before ``key`` and ``2 * size`` from it on, in view order."""
        ...

    def chunks(self, size: int) -> Iterator[list[int]]:
        """Every key in view order, ``size`` at a time."""
        ...

    def interrupt(self) -> None:
        """Stop the query running on the connection (from another thread)."""
        ...

    def close(self) -> None: ...


class _Fill:
    """One order read from an ``OrderSnapshot`` in a thread.

    With an estimated ``preview`` the caller does not wait: the exact order is handed to it
    (``Order._settle``) once its first rows are in. ``counted`` hears every exact count.
    """

    def __init__(
        self,
        open_snapshot: Callable[[], OrderSnapshot],
        query: ViewQuery,
        progressive_from: int,
        describe: Callable[[BaseException], DatabaseError],
        counted: Callable[[int], None],
        preview: Order | None = None,
    ) -> None:
        self.open_snapshot = open_snapshot
        self.query = query
        self.progressive_from = progressive_from
        self.describe = describe
        self.counted = counted
        self.preview = preview
        self.order: Order | None = None
        self.error: DatabaseError | None = None
        self.ready = threading.Event()  # the first rows are in (or it failed)
        self.cancelled = False
        self.snap: OrderSnapshot | None = None
        self.thread = threading.Thread(target=self._run, name="sessionmon-order", daemon=True)

    def start(self) -> Order:
        """Start the thread; return the order once its first rows are in."""
        self.thread.start()
        self.ready.wait()
        if self.error is not None:
            raise self.error
        if self.order is None:  # the thread always sets one or the other
            raise DatabaseError("reading the session order stopped without a result")
        return self.order

    def _fail(self, error: DatabaseError) -> None:
        if self.order is None:
            self.error = error
            if self.preview is not None:
                self.preview._settle(None, error)
        else:
            self.order._finish(error)

    def cancel(self) -> None:
        """Stop filling (the order completes with an error); a query running on the server is
        interrupted, so a count nobody waits for does not hold a core."""
        self.cancelled = True
        if self.order is not None:
            self.order.resume()
        snap = self.snap
        if snap is not None and self.thread.is_alive():
            # Off the caller's thread: PostgreSQL's cancel request opens a connection of its own.
            threading.Thread(target=_interrupt, args=(snap,), daemon=True).start()

    def _run(self) -> None:
        snap: OrderSnapshot | None = None
        try:
            snap = self.snap = self.open_snapshot()
            if self.cancelled:
                raise DatabaseError("session order cancelled")
            n = snap.count()
            self.counted(n)
            order = Order("q", bytes(8 * n))
            if n >= self.progressive_from or self.preview is not None:
                self._first_rows(snap, order)
                if self.cancelled:
                    raise DatabaseError("session order cancelled")
                self.order = order
                self.ready.set()
                if self.preview is not None:
                    self.preview._settle(order)
                # The rest competes with the UI thread for the GIL: start once the first rows are
                # on screen, and pause between chunks so drawing and keys never wait long.
                order._resume.wait(RESUME_AFTER)
            filled = 0
            for keys in snap.chunks(FILL_CHUNK):
                if self.cancelled or filled + len(keys) > n:
                    break
                order[filled : filled + len(keys)] = array("q", keys)
                filled += len(keys)
                if self.order is not None:
                    time.sleep(FILL_PAUSE)
            if filled != n:
                why = "cancelled" if self.cancelled else "changed while it was read"
                order._finish(DatabaseError(f"session order {why}"))
            else:
                order._finish()
            if self.order is None:
                self.order = order
                if self.preview is not None:
                    self.preview._settle(order)
        except Exception as exc:  # a driver error, or a bug: one clear error, never a hang
            if self.cancelled:  # the interrupted query's own error says less than this
                self._fail(DatabaseError("session order cancelled"))
            elif isinstance(exc, DatabaseError):
                self._fail(exc)
            else:
                self._fail(self.describe(exc))
        finally:
            self.ready.set()
            self.snap = None
            if snap is not None:
                with contextlib.suppress(Exception):
                    snap.close()

    def _first_rows(self, snap: OrderSnapshot, order: Order) -> None:
        """The top of the list and the rows around ``query.around``, into ``order``."""
        top = snap.top(WINDOW)
        order[0 : len(top)] = array("q", top)
        around = self.query.around
        if around is None:
            return
        n = len(order)
        at = snap.position(around, n)
        if at is None:
            return
        order.anchor = (around, at)
        if at < len(top):
            return
        before, after = snap.window(around, WINDOW // 2)
        before = before[-at:] if at else []
        after = after[: n - at]
        order[at - len(before) : at] = array("q", before)
        order[at : at + len(after)] = array("q", after)


def _interrupt(snap: OrderSnapshot) -> None:
    with contextlib.suppress(Exception):  # it may have finished (and closed) meanwhile
        snap.interrupt()


def estimate(
    run: keyset.Run,
    d: keyset.Dialect,
    query: ViewQuery,
    now: float,
    top: list[int],
    live: int,
) -> Order:
    """An estimated order of about ``live`` rows from a few index look-ups on ``run``'s
    connection: ``top`` (its first rows, exact) and the rows around ``query.around`` at the
    position its first sort key suggests (exact when the look-ups show it: in ``top``, right after
    it, or near the end)."""
    before: list[int] = []
    after: list[int] = []
    at: int | None = None
    around = query.around
    if around is not None and around in top:
        at = top.index(around)
    elif around is not None:
        before, after = keyset.window(
            run, d, query.sort, query.descending, now, around, WINDOW // 2
        )
    n = max(live, len(top) + len(before) + len(after))
    if around is not None and after and at is None:
        if top and top[-1] in before:  # right after the top rows: its place is known
            cut = before.index(top[-1]) + 1
            before = before[cut:]
            at = len(top) + len(before)
        elif len(before) < WINDOW // 2:  # fewer rows before it than asked: near the top
            at = len(before)
        elif len(after) < WINDOW:  # the last rows: counted from the (estimated) end
            at = n - len(after)
        else:
            share = keyset.estimate_share(run, d, query.sort, query.descending, around)
            at = min(n - len(after), max(len(top) + len(before), round(share * (n - 1))))
    order = Order("q", bytes(8 * n))
    order.estimated = True
    order[0 : len(top)] = array("q", top)
    if at is not None and around is not None:
        order.anchor = (around, at)
        order[at - len(before) : at] = array("q", before)
        order[at : at + len(after)] = array("q", after)
    return order


class OrderReader:
    """The shared ``ReadModel.order``: short orders at once, long ones in the background.

    A subclass gives ``_snapshot`` (for long unfiltered orders), ``_read_all`` (everything else),
    ``_live_at_least``, ``_run`` and ``_top`` (queries on its own connection, for an estimated
    order) and ``_describe`` (a driver exception as one ``DatabaseError``).
    """

    dialect: keyset.Dialect

    def __init__(self, progressive_from: int | None = None) -> None:
        self.progressive_from = PROGRESSIVE_FROM if progressive_from is None else progressive_from
        self._fill: _Fill | None = None
        # Live rows the last time an unfiltered order was counted: a new long order starts from
        # it (estimated) instead of counting first.
        self.last_count: int | None = None
        self._last_query: ViewQuery | None = None

    def _snapshot(self, query: ViewQuery, now: float) -> OrderSnapshot:
        raise TypeError(f"{type(self).__name__} must define _snapshot")

    def _read_all(self, query: ViewQuery, now: float) -> array:
        raise TypeError(f"{type(self).__name__} must define _read_all")

    def _live_at_least(self, now: float, n: int) -> bool:
        raise TypeError(f"{type(self).__name__} must define _live_at_least")

    def _run(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        raise TypeError(f"{type(self).__name__} must define _run")

    def _top(self, query: ViewQuery, now: float, limit: int) -> list[int]:
        raise TypeError(f"{type(self).__name__} must define _top")

    def _describe(self, exc: BaseException) -> DatabaseError:
        return DatabaseError(f"reading the session order failed ({exc!r})")

    def _counted(self, n: int) -> None:
        self.last_count = n

    def cancel_fill(self) -> None:
        if self._fill is not None:
            self._fill.cancel()
            self._fill = None

    def order(self, query: ViewQuery, now: float) -> Order:
        """As ``ReadModel.order``: estimated first when the query is not the last one read and the
        last count says the order is long (a reload of the same list is read exactly)."""
        changed, self._last_query = query != self._last_query, query
        previous = self._fill
        if previous is not None:
            if previous.query == query:
                previous.thread.join()  # a reload: never two fills of the same list at once
            else:
                previous.cancel()  # the operator asked for another list
            self._fill = None
        if query.text.strip():
            return Order.complete_from(self._read_all(query, now))
        known = self.last_count
        if changed and known is not None and known >= self.progressive_from:
            # Known to be long: the estimated order now, the exact one from the thread.
            try:
                preview = estimate(
                    self._run, self.dialect, query, now, self._top(query, now, WINDOW), known
                )
            except DatabaseError:
                raise
            except Exception as exc:
                raise self._describe(exc) from None
            fill = _Fill(
                lambda: self._snapshot(query, now),
                query,
                self.progressive_from,
                self._describe,
                self._counted,
                preview,
            )
            self._fill = fill
            fill.thread.start()
            return preview
        # A reload of a long list, or not known to be long: is it (at most ``progressive_from``
        # rows counted, and not even that when the last count says so)?
        if (known is not None and known >= self.progressive_from) or self._live_at_least(
            now, self.progressive_from
        ):
            fill = _Fill(
                lambda: self._snapshot(query, now),
                query,
                self.progressive_from,
                self._describe,
                self._counted,
            )
            self._fill = fill
            return fill.start()
        keys = self._read_all(query, now)
        self.last_count = len(keys)
        return Order.complete_from(keys)
