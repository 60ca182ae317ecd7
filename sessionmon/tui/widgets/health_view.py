"""The health view: ``doctor``'s checks (the third view beside sessions and blacklist).

The report is computed by the core (``core.doctor``, through ``MonitorBackend.health``) in a
worker thread, never on the UI thread: when the view is shown, every ``HEALTH_INTERVAL`` seconds
while it is shown, and on ``r``. The view draws the last report with its age.
"""

from __future__ import annotations

from collections.abc import Callable

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.timer import Timer
from textual.widgets import Static

from sessionmon.core.clock import Clock
from sessionmon.core.doctor import Report, Status
from sessionmon.core.errors import SessionmonError
from sessionmon.tui.format import ago

HEALTH_INTERVAL = 30.0  # seconds between checks while the view is shown
STATUS_STYLES = {Status.OK: "green", Status.WARNING: "yellow", Status.PROBLEM: "bold red"}


def health_table(report: Report) -> Table:
    """One row per check: status, what, the figure, the fix and what it found."""
    table = Table(box=None, padding=(0, 1), expand=True, show_edge=False)
    table.add_column("STATUS", no_wrap=True, width=8)
    table.add_column("CHECK", no_wrap=True, style="bold", ratio=1)
    table.add_column("FIGURE / FIX", ratio=3)
    for c in report.checks:
        lines = [Text(c.figure)]
        lines += [Text(f"- {item}", style="dim") for item in c.items]
        if c.total > len(c.items):
            lines.append(Text(f"... and {c.total - len(c.items)} more", style="dim"))
        if c.status is not Status.OK and c.fix:
            lines.append(Text(f"fix: {c.fix}", style="cyan"))
        table.add_row(Text(c.status.label, style=STATUS_STYLES[c.status]), c.title, Group(*lines))
    return table


class HealthView(VerticalScroll):
    """The last doctor report, refreshed in a worker."""

    DEFAULT_CSS = """
    HealthView {
        height: 1fr;
        border: round $primary 60%;
        border-title-color: $text;
        border-title-style: bold;
        padding: 0 1;
    }
    HealthView:focus { border: round $primary; }
    HealthView > #health-summary { margin-bottom: 1; }
    """

    can_focus = True

    def __init__(self, load: Callable[[], Report], clock: Clock, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.load = load
        self.clock = clock
        self.report: Report | None = None
        self.error: str | None = None
        self.running = False
        self.loads = 0  # completed checks (tests wait on it)
        self._timer: Timer | None = None

    def compose(self) -> ComposeResult:
        yield Static("", id="health-summary")
        yield Static("", id="health-table")

    def on_mount(self) -> None:
        self.border_title = "Health"
        self._draw()

    def shown(self, visible: bool) -> None:
        """The view came into sight (check now, then every ``HEALTH_INTERVAL``) or left it."""
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        if visible:
            self.check_now()
            self._timer = self.set_interval(HEALTH_INTERVAL, self.check_now)

    def check_now(self) -> None:
        self.running = True
        self._draw()
        self._check()

    @work(thread=True, group="health", exclusive=True, exit_on_error=False)
    def _check(self) -> None:
        try:
            report, error = self.load(), None
        except SessionmonError as exc:  # the database cannot be opened
            report, error = None, str(exc)
        self.app.call_from_thread(self._show, report, error)

    def _show(self, report: Report | None, error: str | None) -> None:
        self.report, self.error = report, error
        self.running = False
        self.loads += 1
        self._draw()

    def tick(self) -> None:
        """Once a second: the age of the report."""
        self._draw(table=False)

    def _draw(self, table: bool = True) -> None:
        if not self.is_mounted:
            return
        summary = self.query_one("#health-summary", Static)
        report = self.report
        if report is None and self.error is None:
            summary.update(Text("checking Redis, the blacklist, the clocks and the database…"))
            return
        parts: list[Text | str] = []
        if self.error is not None:
            parts.append(Text(f"cannot check: {self.error}", style="bold red"))
        if report is not None:
            counts = report.counts()
            parts += [
                Text(report.status.label.upper(), style=STATUS_STYLES[report.status]),
                f" · {counts['problem']} problem(s), {counts['warning']} warning(s), "
                f"{counts['ok']} ok · checked {ago(report.at, self.clock.now())}",
            ]
        parts.append(" · checking…" if self.running else " · r checks again")
        summary.update(Text.assemble(*parts))
        if table and report is not None:
            self.query_one("#health-table", Static).update(health_table(report))
        title = "Health" + (f" · {report.status.label}" if report is not None else "")
        if self.border_title != title:
            self.border_title = title
