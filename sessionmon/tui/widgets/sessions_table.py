"""The sessions view: every live session, drawn row by row from an ``array`` of row ids.

Countdowns and "ago" times are computed in ``row_cells`` from the expiry timestamps and the clock:
the 1 Hz tick only repaints the visible lines, it never queries. Rows are read from SQLite by row id
for the visible window only (a few dozen at a time), through the view's own read-only connection.
An order that is still being filled shows "loading…" where its row ids are not read yet; the
reader's thread posts ``OrderFilled`` when it is complete.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable

from textual.message import Message

from sessionmon.core.clock import Clock
from sessionmon.core.errors import DatabaseError
from sessionmon.core.store import Session
from sessionmon.tui.format import age, ago, countdown, short_agent, short_id
from sessionmon.tui.model import SessionList
from sessionmon.tui.poller import SessionsResult
from sessionmon.tui.reader import SORTS, Order, SessionReader
from sessionmon.tui.widgets.table import Cell, Column, LineTable

# On a narrow screen (80 columns) the countdowns and the state always stay; the others give way
# by priority, lowest first: the user agent shrinks then goes, then the IP, the name, the age,
# the last seen time; the email shrinks; the session id goes last. ``←`` / ``→`` scroll them back.
COLUMNS = (
    Column("mark", "", 1),
    Column("email", "email", 20, flex=3, sort="email", priority=60, shrink=14),
    Column("name", "name", 10, flex=1, priority=30, optional=True, shrink=8),
    Column("sid", "session", 8, priority=70, optional=True),
    Column("ip", "ip", 15, priority=20, optional=True),
    Column("agent", "user agent", 20, flex=1, priority=10, optional=True, shrink=12),
    Column("age", "age", 7, right=True, sort="created_at", priority=40, optional=True),
    Column("seen", "last seen", 11, right=True, sort="last_seen_at", priority=50, optional=True),
    Column("access", "access in", 11, right=True, sort="access_exp"),
    Column("refresh", "refresh in", 12, right=True, sort="refresh_exp"),
    Column("state", "state", 11),
)

STATE_STYLES = {"active": "state--active", "refresh due": "state--due", "expired": "state--expired"}
_GONE = object()  # a row id whose session was deleted after the order was read
_PREFETCH = 40


class SessionsTable(LineTable):
    """Live sessions with countdowns; the cursor stays on its session across reloads."""

    COMPONENT_CLASSES = LineTable.COMPONENT_CLASSES | {
        "countdown--plenty",
        "countdown--low",
        "countdown--critical",
        "countdown--expired",
        "state--active",
        "state--due",
        "state--expired",
        "session--mark",
        "session--dim",
    }

    DEFAULT_CSS = """
    SessionsTable > .countdown--plenty { color: $success; }
    SessionsTable > .countdown--low { color: $warning; }
    SessionsTable > .countdown--critical { color: $error; text-style: bold; }
    SessionsTable > .countdown--expired { color: $error 70%; }
    SessionsTable > .state--active { color: $success; }
    SessionsTable > .state--due { color: $warning; }
    SessionsTable > .state--expired { color: $error 70%; }
    SessionsTable > .session--mark { color: $accent; text-style: bold; }
    SessionsTable > .session--dim { color: $text-muted; }
    """

    columns = COLUMNS
    ticking_from = "age"  # age, last seen, both countdowns and the state move with the clock

    class OrderFilled(Message):
        """A filling order is complete (posted from the reader's thread)."""

        def __init__(self, order: array) -> None:
            super().__init__()
            self.order = order

    def __init__(
        self,
        model: SessionList,
        open_reader: Callable[[], SessionReader],
        clock: Clock,
        *,
        access_life: float,
        id: str | None = None,
    ) -> None:
        super().__init__(id=id)
        self.model = model
        self._open_reader = open_reader
        self._reader: SessionReader | None = None
        self._cache: dict[int, object] = {}
        self._read_failed = False
        self.clock = clock
        self.access_life = access_life

    # -- data -------------------------------------------------------------------------------

    @property
    def row_count(self) -> int:
        return len(self.model)

    @property
    def cursor(self) -> int:
        return self.model.cursor

    def set_cursor(self, index: int) -> None:
        self.model.move_to(index)

    def now(self) -> float:
        return self.clock.now()

    def sorted_column(self) -> tuple[str | None, bool]:
        return self.model.query.sort, self.model.query.reverse

    def apply(self, result: SessionsResult) -> bool:
        """Show a new order; returns True when the cursor is now on another session."""
        before = self.model.cursor_rowid
        old_cursor, old_top = self.model.cursor, self.top
        self.model.set_order(result.order, result.query)
        self._cache.clear()
        self._read_failed = False
        self.update_size()
        self.keep_cursor_on_screen_row(old_cursor, old_top)
        self.refresh()
        order = result.order
        if isinstance(order, Order) and not order.complete:
            order.when_complete(lambda done: self.post_message(self.OrderFilled(done)))
            self.call_after_refresh(order.resume)  # the rest is read once these rows are drawn
        return self.model.cursor_rowid != before

    def on_sessions_table_order_filled(self, message: OrderFilled) -> None:
        if message.order is not self.model.order:
            return  # replaced by a newer order meanwhile
        old_cursor, old_top = self.model.cursor, self.top
        before = self.model.cursor_rowid
        if self.model.order_completed(message.order):
            self.keep_cursor_on_screen_row(old_cursor, old_top)
        self.refresh()
        if self.model.cursor_rowid != before:
            self.post_message(self.CursorMoved(self, self.model.cursor))

    def refresh_clock(self) -> None:
        """Only the cells that move with the clock, unless rows may have come in since the last
        repaint (an order still filling shows "loading…" where it is not read yet)."""
        if self.model.complete:
            super().refresh_clock()
        else:
            self.refresh()

    def forget_rows(self) -> None:
        """Drop cached rows (they are read again when drawn)."""
        self._cache.clear()
        self._read_failed = False
        self.refresh()

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def _fetch(self, indexes: range) -> None:
        order = self.model.order
        size = len(order)
        wanted = [r for i in indexes if 0 <= i < size and (r := order[i]) and r not in self._cache]
        if not wanted or self._read_failed:
            return
        try:
            if self._reader is None:
                self._reader = self._open_reader()
            found = self._reader.rows(wanted)
        except DatabaseError:
            self._read_failed = True  # the poller reports it; retried after the next reload
            self.close()
            return
        if len(self._cache) > 4 * (self.page_height + _PREFETCH) + 1000:
            self._cache.clear()
        for rowid in wanted:
            self._cache[rowid] = found.get(rowid, _GONE)

    def session_at(self, index: int) -> Session | None:
        """The session on row ``index`` (read with its neighbours when not cached)."""
        rowid = self.model.rowid_at(index)
        if rowid is None:
            return None
        row = self._cache.get(rowid)
        if row is None:
            # The visible rows and a few more; or, for a row elsewhere (the cursor's, before the
            # view has scrolled to it), that row and the ones after it: never the rows between
            # (at 1M they can be hundreds of thousands).
            top, span = self.top, self.page_height + _PREFETCH
            start = top if top <= index < top + span else index
            self._fetch(range(start, start + span))
            row = self._cache.get(rowid)
        return row if isinstance(row, Session) else None

    def is_gone(self, index: int) -> bool:
        rowid = self.model.rowid_at(index)
        return rowid is not None and self._cache.get(rowid) is _GONE

    @property
    def selected(self) -> Session | None:
        return self.session_at(self.model.cursor) if len(self.model) else None

    # -- drawing ----------------------------------------------------------------------------

    def row_cells(self, index: int, now: float) -> list[Cell] | None:
        session = self.session_at(index)
        if session is None:
            if self.is_gone(index):
                return [("", None), ("(ended)", "session--dim")] + [("", None)] * 9
            return None
        access, access_level = countdown(session.access_exp, now, self.access_life)
        refresh_life = (session.refresh_exp or now) - session.created_at
        refresh, refresh_level = countdown(session.refresh_exp, now, refresh_life)
        state = session.state(now)
        marked = session.id in self.model.marks
        return [
            ("●" if marked else "", "session--mark"),
            (session.email or "-", None),
            (session.name or "-", None),
            (short_id(session.id), "session--dim"),
            (session.ip or "-", None),
            (short_agent(session.user_agent), "session--dim"),
            (age(session.created_at, now), None),
            (ago(session.last_seen_at, now), None),
            (access, f"countdown--{access_level}"),
            (refresh, f"countdown--{refresh_level}"),
            (state, STATE_STYLES.get(state)),
        ]

    def title(self) -> str:
        """``Sessions · 1,234 · sorted by access expiry ▲ · filter "ann"``."""
        q = self.model.query
        parts = [
            f"Sessions · {len(self.model):,}",
            f"sorted by {q.label} {'▼' if q.reverse else '▲'}",
        ]
        if q.text.strip():
            parts.append(f'filter "{q.text.strip()}"')
        return " · ".join(parts)


def sort_label(sort: str) -> str:
    return SORTS[sort][2]
