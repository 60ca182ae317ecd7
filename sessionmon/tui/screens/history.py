"""The history screen: sessions that ended, newest first, searchable by user or reason, date range
and how they ended. Read through the core (``MonitorBackend.history``) in a worker, never on the
UI thread; the filters apply as they are typed (debounced)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import DataTable, Input, Select, Static

from sessionmon.core.clock import Clock
from sessionmon.core.errors import ConfigError, SessionmonError
from sessionmon.core.session_query import parse_time
from sessionmon.core.store.history import EndedSession, EndHow, HistoryQuery

LIMIT = 500
DEBOUNCE = 0.2
HOW_STYLES = {
    EndHow.LOGOUT: "green",
    EndHow.EXPIRED: "dim",
    EndHow.REUSE_DETECTED: "bold red",
    EndHow.FORCE_LOGOUT: "yellow",
    EndHow.FORCE_LOGOUT_QUERY: "yellow",
}
COLUMNS = ("ended", "how", "user", "session", "by", "reason", "ip", "started")


def when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def build_query(text: str, since: str, until: str, how: EndHow | None, now: float) -> HistoryQuery:
    """The query the filters say; raises ``ConfigError`` naming the field that is wrong."""
    try:
        start = parse_time(since, now) if since.strip() else None
    except ConfigError as exc:
        raise ConfigError(f"since: {exc}") from None
    try:
        end = parse_time(until, now) if until.strip() else None
    except ConfigError as exc:
        raise ConfigError(f"until: {exc}") from None
    return HistoryQuery(text=text.strip() or None, since=start, until=end, how=how, limit=LIMIT)


class HistoryScreen(Screen[None]):
    """Ended sessions; Escape (or H outside a field) closes it."""

    DEFAULT_CSS = """
    HistoryScreen { layout: vertical; }
    HistoryScreen #history-title { text-style: bold; padding: 0 1; }
    HistoryScreen #history-filters { height: 3; }
    HistoryScreen #history-text { width: 2fr; }
    HistoryScreen #history-since, HistoryScreen #history-until { width: 1fr; }
    HistoryScreen #history-how { width: 28; }
    HistoryScreen #history-table { height: 1fr; }
    HistoryScreen #history-status { padding: 0 1; color: $text-muted; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,H", "close", "Close", id="history.close"),
        Binding("r", "reload", "Reload", id="history.reload"),
    ]

    def __init__(self, load: Callable[[HistoryQuery], list[EndedSession]], clock: Clock) -> None:
        super().__init__()
        self.load = load
        self.clock = clock
        self.rows: list[EndedSession] = []
        self.query_shown: HistoryQuery | None = None
        self.error: str | None = None
        self.loads = 0  # completed reads (tests wait on it)
        self._timer: Timer | None = None

    def compose(self) -> ComposeResult:
        yield Static("Ended sessions (newest first)", id="history-title")
        with Horizontal(id="history-filters"):
            yield Input(placeholder="user, email, session id or reason", id="history-text")
            yield Input(placeholder="since (2h, 2026-11-30)", id="history-since")
            yield Input(placeholder="until", id="history-until")
            yield Select(
                [(h.value.replace("_", " "), h) for h in EndHow],
                prompt="any way of ending",
                id="history-how",
            )
        yield DataTable(id="history-table", cursor_type="row", zebra_stripes=True)
        yield Static("reading…", id="history-status")

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for name in COLUMNS:
            table.add_column(name, key=name)
        self.reload()
        self.query_one("#history-text", Input).focus()

    # -- filters -----------------------------------------------------------------------------

    def current_query(self) -> HistoryQuery:
        how = self.query_one("#history-how", Select).value
        return build_query(
            self.query_one("#history-text", Input).value,
            self.query_one("#history-since", Input).value,
            self.query_one("#history-until", Input).value,
            how if isinstance(how, EndHow) else None,
            self.clock.now(),
        )

    @on(Input.Changed)
    @on(Select.Changed)
    def _changed(self) -> None:
        if self._timer is not None:
            self._timer.stop()
        self._timer = self.set_timer(DEBOUNCE, self.reload)

    @on(Input.Submitted)
    def _submitted(self) -> None:
        self.reload()
        self.query_one(DataTable).focus()

    def reload(self) -> None:
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        try:
            query = self.current_query()
        except ConfigError as exc:
            self._status(Text(str(exc), style="red"))
            return
        self._read(query)

    def action_reload(self) -> None:
        self.reload()

    @work(thread=True, group="history", exclusive=True, exit_on_error=False)
    def _read(self, query: HistoryQuery) -> None:
        try:
            rows, error = self.load(query), None
        except SessionmonError as exc:
            rows, error = [], str(exc)
        self.app.call_from_thread(self._show, query, rows, error)

    def _show(self, query: HistoryQuery, rows: list[EndedSession], error: str | None) -> None:
        self.rows, self.query_shown, self.error = rows, query, error
        self.loads += 1
        table = self.query_one(DataTable)
        table.clear()
        for r in rows:
            reason = r.reason or "-"
            table.add_row(
                when(r.ended_at),
                Text(r.how.value, style=HOW_STYLES.get(r.how, "")),
                r.email or r.user_id,
                r.session_id,
                r.actor or "-",
                reason,
                r.ip or "-",
                when(r.created_at),
            )
        if error is not None:
            self._status(Text(f"cannot read the history: {error}", style="red"))
            return
        more = f" (the newest {LIMIT}: narrow the search)" if len(rows) >= LIMIT else ""
        noun = "ended session" + ("" if len(rows) == 1 else "s")
        self._status(f"{len(rows)} {noun}{more} · kept for --history-retention · Escape closes")

    def _status(self, text: Text | str) -> None:
        self.query_one("#history-status", Static).update(text)

    def action_close(self) -> None:
        self.dismiss(None)
