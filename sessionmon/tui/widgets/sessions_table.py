"""The sessions view: every live session, drawn row by row from an ``array`` of row keys.

Countdowns and "ago" times are computed in ``row_cells`` from the expiry timestamps and the clock:
the 1 Hz tick only repaints the visible lines, it never queries. Drawing reads memory only (a
``RowCache``): each poll brings the rows around the top and the cursor, and a row scrolled to that
is not in memory is asked for (``request_rows``, read by a worker) and drawn as "loading…" until
it arrives. An order that is still being filled shows "loading…" where its keys are not read yet;
the reader's thread posts ``OrderFilled`` when it is complete. An estimated order (a new sort at a
million rows: its length and the cursor's position are estimates) is shown at once and replaced by
the exact one when the reader's thread posts ``OrderSettled``; the title marks the count with
``~`` until then.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Mapping, Sequence

from textual.message import Message

from sessionmon.core.clock import Clock
from sessionmon.core.policy import SessionPolicy
from sessionmon.core.store import Order, Session
from sessionmon.tui.format import age, ago, countdown, short_agent, short_id
from sessionmon.tui.model import SessionList
from sessionmon.tui.poller import SessionsResult
from sessionmon.tui.rows import GONE, RowCache
from sessionmon.tui.widgets.levels import LEVEL_CLASSES, STATE_CLASSES, level_css
from sessionmon.tui.widgets.table import Cell, Column, LineTable

# On a narrow screen (80 columns) the countdowns of the tokens and the state always stay; the
# others give way by priority, lowest first: the user agent shrinks then goes, then the IP, the
# name, the generation, the age, the absolute countdown, the last seen time, the idle countdown;
# the email shrinks; the session id goes last. ``←`` / ``→`` scroll them back.
COLUMNS = (
    Column("mark", "", 1),
    Column("email", "email", 20, flex=3, sort="email", priority=60, shrink=14),
    Column("name", "name", 10, flex=1, priority=30, optional=True, shrink=8),
    Column("sid", "session", 8, priority=70, optional=True),
    Column("ip", "ip", 15, priority=20, optional=True),
    Column("agent", "user agent", 20, flex=1, priority=10, optional=True, shrink=12),
    # The live refresh token's generation: how many times the session rotated it.
    Column("gen", "gen", 4, right=True, priority=35, optional=True),
    Column("age", "age", 7, right=True, sort="created_at", priority=40, optional=True),
    Column("seen", "last seen", 11, right=True, sort="last_seen_at", priority=50, optional=True),
    Column("access", "access in", 11, right=True, sort="access_exp"),
    Column("refresh", "refresh in", 12, right=True, sort="refresh_exp"),
    Column("state", "state", 11),
)

# The lifetime policies' countdowns, beside access and refresh when the policy is configured.
IDLE_COLUMN = Column("idle", "idle in", 8, right=True, priority=55, optional=True)
ABSOLUTE_COLUMN = Column("absolute", "absolute in", 11, right=True, priority=45, optional=True)


def columns_for(policy: SessionPolicy) -> tuple[Column, ...]:
    """The sessions view's columns: the policy countdowns after refresh, when configured."""
    extra = ((IDLE_COLUMN,) if policy.idle_timeout is not None else ()) + (
        (ABSOLUTE_COLUMN,) if policy.absolute_timeout is not None else ()
    )
    keys = [c.key for c in COLUMNS]
    at = keys.index("refresh") + 1
    return COLUMNS[:at] + extra + COLUMNS[at:]


PREFETCH = 40  # rows read beyond the visible ones


class SessionsTable(LineTable):
    """Live sessions with countdowns; the cursor stays on its session across reloads."""

    COMPONENT_CLASSES = (
        LineTable.COMPONENT_CLASSES
        | LEVEL_CLASSES
        | {
            "session--mark",
            "session--dim",
        }
    )

    DEFAULT_CSS = (
        level_css("SessionsTable")
        + """
    SessionsTable > .session--mark { color: $accent; text-style: bold; }
    SessionsTable > .session--dim { color: $text-muted; }
    """
    )

    columns: tuple[Column, ...] = COLUMNS
    ticking_from = "age"  # age, last seen, both countdowns and the state move with the clock

    class OrderFilled(Message):
        """A filling order is complete (posted from the reader's thread)."""

        def __init__(self, order: array) -> None:
            super().__init__()
            self.order = order

    class OrderSettled(Message):
        """The exact order of an estimated one is read (posted from the reader's thread)."""

        def __init__(self, estimated: array, exact: Order | None) -> None:
            super().__init__()
            self.estimated = estimated
            self.exact = exact

    def __init__(
        self,
        model: SessionList,
        request_rows: Callable[[list[int], int], None],
        clock: Clock,
        *,
        access_life: float,
        policy: SessionPolicy | None = None,
        id: str | None = None,
    ) -> None:
        super().__init__(id=id)
        self.policy = policy or SessionPolicy()
        self.columns = columns_for(self.policy)
        self.model = model
        self._request_rows = request_rows  # (keys, generation): read them off the UI thread
        self.rows = RowCache()
        self._requested: set[int] = set()  # asked for in this generation, not arrived yet
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
        self.model.set_order(result.order)
        generation = self.rows.new_generation()
        self.rows.put(result.rows_read, result.rows, generation)
        self._requested.clear()
        self._read_failed = False
        self.update_size()
        self.keep_cursor_on_screen_row(old_cursor, old_top)
        self.refresh()
        self._follow(result.order)
        return self.model.cursor_rowid != before

    def _follow(self, order: array) -> None:
        """Hear when a filling order is complete, or an estimated one's exact order is read (at
        once if it is already: it may even be complete before the estimated one is shown)."""
        if not isinstance(order, Order):
            return
        if order.estimated:

            def settled(exact: Order | None) -> None:
                self.post_message(self.OrderSettled(order, exact))

            order.when_exact(settled)
            return
        if order.complete:
            return

        def filled(done: Order) -> None:
            self.post_message(self.OrderFilled(done))

        order.when_complete(filled)
        self.call_after_refresh(order.resume)  # the rest is read once these rows are drawn

    def on_sessions_table_order_settled(self, message: OrderSettled) -> None:
        """The exact order replaces the estimated one on screen (the cursor stays on its row;
        the rows read stay in the cache). Not if another order is shown meanwhile."""
        if message.estimated is not self.model.order or message.exact is None:
            return
        old_cursor, old_top = self.model.cursor, self.top
        before = self.model.cursor_rowid
        self.model.set_order(message.exact)
        self.update_size()
        self.keep_cursor_on_screen_row(old_cursor, old_top)
        self.refresh()
        self._follow(message.exact)
        if self.model.cursor_rowid != before:
            self.post_message(self.CursorMoved(self, self.model.cursor))

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

    def rows_loaded(
        self, keys: Sequence[int], found: Mapping[int, Session] | None, generation: int
    ) -> None:
        """Rows a worker read for ``request_rows`` (``found`` None: the read failed)."""
        self._requested.difference_update(keys)
        if found is None:
            self._read_failed = True  # the poller reports why; asked again after the next reload
            return
        self.rows.put(keys, found, generation)
        self.refresh()

    def _want(self, index: int) -> None:
        """Ask for the rows to draw around ``index``: the visible rows and a few more; or, for
        a row elsewhere (the cursor's, before the view has scrolled to it), that row and the
        ones after it: never the rows between (at 1M they can be hundreds of thousands)."""
        if self._read_failed:
            return
        order = self.model.order
        size = len(order)
        top, span = self.top, self.page_height + PREFETCH
        start = top if top <= index < top + span else index
        wanted = [
            key
            for i in range(start, min(size, start + span))
            if (key := order[i]) and not self.rows.fresh(key) and key not in self._requested
        ]
        if wanted:
            self._requested.update(wanted)
            self._request_rows(wanted, self.rows.generation)

    def session_at(self, index: int) -> Session | None:
        """The session on row ``index`` from memory (a row read for an earlier order is shown
        while it is read again); None while it has not been read."""
        key = self.model.rowid_at(index)
        if key is None:
            return None
        if not self.rows.fresh(key):
            self._want(index)
        row = self.rows.get(key)
        return row if isinstance(row, Session) else None

    def is_gone(self, index: int) -> bool:
        key = self.model.rowid_at(index)
        return key is not None and self.rows.get(key) is GONE

    @property
    def selected(self) -> Session | None:
        return self.session_at(self.model.cursor) if len(self.model) else None

    # -- drawing ----------------------------------------------------------------------------

    def row_cells(self, index: int, now: float) -> list[Cell] | None:
        session = self.session_at(index)
        if session is None:
            if self.is_gone(index):
                return [("", None), ("(ended)", "session--dim")] + [("", None)] * (
                    len(self.columns) - 2
                )
            return None
        access, access_level = countdown(session.access_exp, now, self.access_life)
        refresh_life = (session.refresh_exp or now) - session.created_at
        refresh, refresh_level = countdown(session.refresh_exp, now, refresh_life)
        state = session.state(now)
        marked = session.id in self.model.marks
        policy = self.policy
        deadlines: list[Cell] = []
        if policy.idle_timeout is not None:
            text, level = countdown(policy.idle_deadline(session), now, policy.idle_timeout)
            deadlines.append((text, f"countdown--{level}"))
        if policy.absolute_timeout is not None:
            when = policy.absolute_deadline(session)
            text, level = countdown(when, now, policy.absolute_timeout)
            deadlines.append((text, f"countdown--{level}"))
        return [
            ("●" if marked else "", "session--mark"),
            (session.email or "-", None),
            (session.name or "-", None),
            (short_id(session.id), "session--dim"),
            (session.ip or "-", None),
            (short_agent(session.user_agent), "session--dim"),
            (str(session.generation), "session--dim"),
            (age(session.created_at, now), None),
            (ago(session.last_seen_at, now), None),
            (access, f"countdown--{access_level}"),
            (refresh, f"countdown--{refresh_level}"),
            *deadlines,
            (state, STATE_CLASSES.get(state)),
        ]

    def title(self) -> str:
        """``Sessions · 1,234 · sorted by access expiry ▲ · filter "ann"`` (``~1,234`` while the
        order is estimated)."""
        q = self.model.query
        parts = [
            f"Sessions · {'~' if self.model.estimated else ''}{len(self.model):,}",
            f"sorted by {q.label} {'▼' if q.reverse else '▲'}",
        ]
        if q.text.strip():
            parts.append(f'filter "{q.text.strip()}"')
        return " · ".join(parts)
