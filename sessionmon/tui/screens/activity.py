"""The activity view: the live feed (every process's logins, refreshes, logouts, rejections, ...),
per-second sparklines of the last 5 minutes and the current rates.

A worker thread follows the feed through the core's ``StreamReader`` (``XREAD BLOCK``, never on
the UI thread, never a Redis command here). When Redis goes away the view says so in one line and
the worker resumes after the last event it saw once Redis is back: nothing lost, nothing twice.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Input, RichLog, Sparkline, Static

from sessionmon.core.clock import Clock
from sessionmon.core.errors import SessionmonError
from sessionmon.core.event_stream import StreamReader
from sessionmon.core.events import Event, EventKind
from sessionmon.tui.activity import (
    ALARMING,
    LOGINS,
    REFRESHES,
    REJECTED,
    REJECTIONS,
    REVOCATIONS,
    WINDOW,
    ActivityModel,
    FeedFilter,
)

RETRY_PAUSE = 1.0  # seconds between attempts while Redis is down
HISTORY_PAGE = 1000
FEED_CONTEXT = 200  # events older than the window shown in the feed at start

KIND_STYLES = {
    EventKind.LOGIN: "green",
    EventKind.REFRESH: "cyan",
    EventKind.ROTATION: "cyan",
    EventKind.LOGOUT: "yellow",
    EventKind.FORCE_LOGOUT: "bold yellow",
    EventKind.REJECTION: "red",
    EventKind.REUSE_DETECTED: "bold red",
    EventKind.SESSION_ENDED: "yellow",
    EventKind.KEY_ROTATION: "magenta",
    EventKind.LOGOUT_JOB: "bold yellow",
    EventKind.DOCTOR_REPAIR: "magenta",
}
# The kind filter cycles through these ("k"); None is every kind.
KIND_CYCLE: tuple[EventKind | None, ...] = (None, *EventKind)


def event_text(e: Event) -> Text:
    """One feed line: time, kind, who, session, count, reason, actor, address (never a token)."""
    line = Text(time.strftime("%H:%M:%S ", time.localtime(e.at)), style="dim")
    style = KIND_STYLES.get(e.kind, "")
    if e.kind is EventKind.REJECTION and e.reason in ALARMING:
        style = "bold red"
    line.append(e.kind.value.ljust(15), style=style)
    line.append((e.email or e.user_id or "-").ljust(28)[:28] + " ")
    line.append((e.session_id or "-")[:12].ljust(13), style="dim")
    if e.count != 1:
        line.append(f"x{e.count} ", style="bold")
    for label, value in (("", e.reason), ("by ", e.actor), ("ip ", e.ip)):
        if value:
            line.append(f"{label}{value}  ", style=style if not label else "")
    return line


class SeriesRow(Horizontal):
    """One sparkline with its name and its last-5-minutes total."""

    DEFAULT_CSS = """
    SeriesRow { height: 1; }
    SeriesRow > .series-label { width: 38; }
    SeriesRow > Sparkline { width: 1fr; }
    SeriesRow.alarm > .series-label { color: $error; text-style: bold; }
    SeriesRow.alarm > Sparkline > .sparkline--max-color { color: $error; }
    """

    def __init__(self, name: str, label: str) -> None:
        super().__init__(id="series-" + name.replace(":", "-").replace("_", "-"))
        self.series = name
        self.label = label

    def compose(self) -> ComposeResult:
        yield Static(self.label, classes="series-label")
        yield Sparkline([0] * WINDOW, summary_function=max)

    def show(self, data: list[int], total: int, alarm: bool) -> None:
        self.query_one(Static).update(f"{self.label:<24} {total:>7,} /5m")
        self.query_one(Sparkline).data = data
        self.set_class(alarm, "alarm")


class ActivityScreen(Screen[None]):
    """The feed and its sparklines; Escape (with no filter), q or e goes back."""

    DEFAULT_CSS = """
    ActivityScreen { layout: vertical; }
    ActivityScreen #activity-title { height: 1; text-style: bold; background: $primary-background; }
    ActivityScreen #activity-alert { height: auto; }
    ActivityScreen #activity-alert.alarm { background: $error; color: $text; text-style: bold; }
    ActivityScreen #activity-state { height: 1; }
    ActivityScreen #activity-state.down { color: $error; text-style: bold; }
    ActivityScreen #activity-series { height: auto; border: round $primary; padding: 0 1; }
    ActivityScreen #activity-feed { height: 1fr; border: round $primary; }
    ActivityScreen #activity-filter { display: none; }
    ActivityScreen #activity-filter.shown { display: block; }
    ActivityScreen #activity-status { height: 1; background: $panel; }
    ActivityScreen #activity-keys { height: 1; color: $text-muted; }
    """

    AUTO_FOCUS = "#activity-feed"  # never the hidden filter box
    BINDINGS = [
        Binding("k", "cycle_kind", "Kind", id="activity.kind"),
        Binding("slash", "filter_user", "User", id="activity.user"),
        Binding("escape", "clear_or_close", "Clear/Back", id="activity.escape"),
        Binding("e,q", "close", "Back", id="activity.close"),
    ]

    def __init__(
        self,
        open_reader: Callable[[], tuple[StreamReader, int]],
        clock: Clock,
        *,
        retry_pause: float = RETRY_PAUSE,
    ) -> None:
        super().__init__()
        self.open_reader = open_reader
        self.clock = clock
        self.retry_pause = retry_pause
        self.model = ActivityModel()
        self.filter = FeedFilter()
        self.down: str | None = None  # why the feed cannot be read now
        self.outages = 0  # how many times it went down (tests)
        self.batches = 0  # batches applied (tests wait on it)
        self.live = False  # the history is loaded and the worker follows the feed
        self._stop = threading.Event()
        self._rows: dict[str, SeriesRow] = {}

    def compose(self) -> ComposeResult:
        yield Static(
            "Activity: every process's logins, refreshes, logouts and rejections",
            id="activity-title",
        )
        yield Static("", id="activity-alert")
        yield Static("reading the feed…", id="activity-state")
        with Vertical(id="activity-series"):
            for name, label in self._fixed_series():
                yield self._row(name, label)
        yield Input(
            placeholder="user: email or id (Enter applies, Escape clears)", id="activity-filter"
        )
        yield RichLog(id="activity-feed", max_lines=2000, wrap=False, markup=False)
        yield Static("", id="activity-status")
        yield Static(
            "k kind filter · / user filter · Escape clears the filter (then goes back) · e, q back",
            id="activity-keys",
        )

    @staticmethod
    def _fixed_series() -> list[tuple[str, str]]:
        return [
            (LOGINS, "logins"),
            (REFRESHES, "refreshes"),
            (REVOCATIONS, "revocations"),
            *[(REJECTED + r, f"rejected: {r}") for r in ALARMING],
        ]

    def _row(self, name: str, label: str) -> SeriesRow:
        row = SeriesRow(name, label)
        self._rows[name] = row
        return row

    def on_mount(self) -> None:
        self.query_one("#activity-feed", RichLog).border_title = "feed: all events"
        self.query_one("#activity-series", Vertical).border_title = "per second, last 5 minutes"
        self.redraw()
        self.set_interval(1.0, self.redraw)
        self._follow()

    def on_unmount(self) -> None:
        self._stop.set()

    # -- the worker --------------------------------------------------------------------------

    @work(thread=True, group="activity", exclusive=True, exit_on_error=False)
    def _follow(self) -> None:
        """Load the last 5 minutes, then follow the feed; survive Redis going and coming."""
        reader: StreamReader | None = None
        block_ms = 1000
        last: str | None = None
        while not self._stop.is_set():
            try:
                if reader is None:
                    reader, block_ms = self.open_reader()
                if last is None:
                    history = self._history(reader)
                    last = history[-1].id if history else reader.last_id()
                    self._post(history, loaded=True)
                    continue
                batch = reader.after(last, count=500, block_ms=block_ms)
            except SessionmonError as exc:
                self._post_down(str(exc))
                self._stop.wait(self.retry_pause)
                continue
            if batch:
                last = batch[-1].id
            self._post(batch)

    def _history(self, reader: StreamReader) -> list[Event]:
        """The last ``WINDOW`` seconds (for the sparklines), and some older events for the feed."""
        since = self.clock.now() - WINDOW
        events = reader.since(since, count=HISTORY_PAGE)
        page = events
        while len(page) == HISTORY_PAGE and not self._stop.is_set():
            page = reader.after(page[-1].id, count=HISTORY_PAGE)
            events += page
        ids = {e.id for e in events}
        older = [e for e in reader.latest(FEED_CONTEXT) if e.id not in ids]
        if events:
            older = [e for e in older if _id_key(e.id) < _id_key(events[0].id)]
        return older + events

    def _post(self, events: Sequence[Event], *, loaded: bool = False) -> None:
        if self._stop.is_set():
            return
        try:
            self.app.call_from_thread(self.took, list(events), loaded)
        except RuntimeError:  # the app is closing
            self._stop.set()

    def _post_down(self, error: str) -> None:
        if self._stop.is_set():
            return
        try:
            self.app.call_from_thread(self.went_down, error)
        except RuntimeError:
            self._stop.set()

    # -- on the UI thread --------------------------------------------------------------------

    def took(self, events: list[Event], loaded: bool = False) -> None:
        if self.down is not None:
            self.down = None
        if loaded:
            self.live = True
        now = self.clock.now()
        self.model.add(events, now)
        log = self.query_one("#activity-feed", RichLog)
        for e in events:
            if self.filter.matches(e):
                log.write(event_text(e))
        self.batches += 1
        self.redraw()

    def went_down(self, error: str) -> None:
        if self.down is None:
            self.outages += 1
        self.down = error
        self.redraw()

    def redraw(self) -> None:
        now = self.clock.now()
        self.model.prune(now)
        series = self.query_one("#activity-series", Vertical)
        for reason in self.model.reasons(now):
            name = REJECTED + reason
            if name not in self._rows:
                series.mount(self._row(name, f"rejected: {reason}"))
        alarms = dict(self.model.alarms(now))
        for name, row in self._rows.items():
            if not row.is_mounted or not row.children:
                continue
            reason = name.removeprefix(REJECTED)
            row.show(self.model.buckets(name, now), self.model.total(name, now), reason in alarms)
        alert = self.query_one("#activity-alert", Static)
        if alarms:
            said = ", ".join(f"{n:,} {r}" for r, n in alarms.items())
            alert.update(f"⚠ in the last minute: {said} rejections (forged or stolen tokens?)")
        else:
            alert.update("")
        alert.set_class(bool(alarms), "alarm")
        state = self.query_one("#activity-state", Static)
        if self.down is not None:
            after = self.model.last_id or "the start"
            state.update(
                f"✗ feed unavailable: {self.down}; resuming after event {after} when Redis is back"
            )
        elif self.live:
            state.update(f"● live: {self.model.seen:,} events read")
        state.set_class(self.down is not None, "down")
        m = self.model
        status = self.query_one("#activity-status", Static)
        status.update(
            f" logins {m.rate(LOGINS, now):.1f}/s · refreshes {m.rate(REFRESHES, now):.1f}/s · "
            f"revocations {m.rate(REVOCATIONS, now):.1f}/s · "
            f"rejections {m.rate(REJECTIONS, now):.1f}/s  (last 10 s) · filter: "
            f"{self.filter.describe()}"
        )

    def set_filter(self, f: FeedFilter) -> None:
        """Show the kept events that match ``f`` (new ones follow it)."""
        self.filter = f
        log = self.query_one("#activity-feed", RichLog)
        log.clear()
        for e in self.model.matching(f):
            log.write(event_text(e))
        log.border_title = f"feed: {f.describe()}"
        self.redraw()

    def action_cycle_kind(self) -> None:
        i = KIND_CYCLE.index(self.filter.kind)
        self.set_filter(FeedFilter(KIND_CYCLE[(i + 1) % len(KIND_CYCLE)], self.filter.user))

    def action_filter_user(self) -> None:
        box = self.query_one("#activity-filter", Input)
        box.add_class("shown")
        box.value = self.filter.user
        box.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.input.remove_class("shown")
        self.set_filter(FeedFilter(self.filter.kind, event.value.strip()))
        self.query_one("#activity-feed", RichLog).focus()

    def action_clear_or_close(self) -> None:
        box = self.query_one("#activity-filter", Input)
        if box.has_class("shown"):
            box.remove_class("shown")
            self.query_one("#activity-feed", RichLog).focus()
        elif self.filter != FeedFilter():
            self.set_filter(FeedFilter())
        else:
            self.action_close()

    def action_close(self) -> None:
        self._stop.set()
        self.dismiss(None)


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)
