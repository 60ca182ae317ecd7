"""One monitor measurement in a fresh process (so RSS and CPU are the monitor's own).

``python -m bench.monitor_probe monitor DB REDIS_URL TICK_SECONDS`` (DB: a SQLite path or a
PostgreSQL URL) runs the real ``SessionmonApp``
headless; ``python -m bench.monitor_probe datatable DB ROWS TICK_SECONDS`` runs a plain Textual
``DataTable`` view of the same sessions (the baseline). Each prints one JSON object.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from collections.abc import Callable
from typing import Any

from textual.app import App, ComposeResult
from textual.pilot import Pilot
from textual.widgets import DataTable

from sessionmon.core.durations import format_duration

SIZE = (160, 45)
FILTER = "user42@"  # about five sessions of one user, at any size
STEP = 0.005


def peak_rss_mib() -> float:
    """Peak RSS of this process: ``VmHWM`` (Linux), which starts afresh at exec; getrusage's
    ``ru_maxrss`` would also count the parent's RSS at fork time."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mib() -> float:
    """Current resident set size."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / 2**20


async def until(pilot: Pilot, check: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("the app did not get there in time")
        await pilot.pause(STEP)


async def cpu_over(seconds: float) -> float:
    """Percent of one core this process used while the app ran for ``seconds``."""
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.sleep(seconds)
    return (time.process_time() - cpu) / (time.perf_counter() - wall) * 100


# -- the monitor ---------------------------------------------------------------------------


class ScreenWatch:
    """When did a frame showing the visible rows of a wanted order reach the driver?

    At a million sessions the monitor shows an order as soon as its first rows are read and fills
    the rest in a thread, so "the process is idle" (``pilot.pause()``) is not "the result is on
    screen". This hooks the sessions table's ``row_cells`` (called by ``render_line`` for each
    visible row: None means the row is drawn as "loading…") and ``App._display`` (called with each
    composed frame): ``frame_at`` is the time of the first frame after every visible line of the
    wanted order was drawn with data. ``complete_at`` is when the whole order was read.
    Timestamps come from the hooks, not from the polling loop, so waiting does not add to them.
    """

    def __init__(self, app: Any) -> None:
        from sessionmon.tui.widgets.sessions_table import SessionsTable

        self.app = app
        self.wanted: Callable[[Any], bool] | None = None
        self.drawn: set[int] = set()
        self.frame_at: float | None = None
        watch = self
        row_cells = SessionsTable.row_cells
        display = type(app)._display

        def watched_row_cells(table: Any, index: int, now: float) -> Any:
            cells = row_cells(table, index, now)
            if watch.wanted is not None and watch.frame_at is None and watch.wanted(table):
                if cells is None:
                    watch.drawn.discard(index)
                else:
                    watch.drawn.add(index)
            return cells

        def watched_display(app_: Any, screen: Any, renderable: Any) -> None:
            display(app_, screen, renderable)
            if renderable is not None and watch.wanted is not None and watch.frame_at is None:
                table = app_.main.sessions
                if watch.wanted(table) and watch.visible_drawn(table):
                    watch.frame_at = time.perf_counter()

        SessionsTable.row_cells = watched_row_cells  # type: ignore[method-assign]
        type(app)._display = watched_display  # type: ignore[method-assign]

    @staticmethod
    def visible(table: Any) -> range:
        top = table.top
        return range(top, min(top + table.page_height, table.row_count))

    def visible_drawn(self, table: Any) -> bool:
        rows = self.visible(table)
        return len(rows) > 0 and all(i in self.drawn for i in rows)

    def arm(self, wanted: Callable[[Any], bool]) -> None:
        self.drawn = set()
        self.frame_at = None
        self.wanted = wanted


async def sleep_until(check: Callable[[], bool], timeout: float = 120.0) -> float:
    """Wait without touching the app (no forced screen updates, unlike ``pilot.pause``); returns
    when ``check`` was first seen true (``perf_counter``, within ``STEP``)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("the app did not get there in time")
        await asyncio.sleep(STEP)
    return time.perf_counter()


async def monitor(db: str, url: str, tick_seconds: float, cycles: int = 1) -> dict[str, Any]:
    import sqlite3

    from bench.data import PREFIX
    from sessionmon.core.blacklist import Blacklist, connect
    from sessionmon.core.settings import Settings
    from sessionmon.core.store import SCHEMA_VERSION, DatabaseUrl
    from sessionmon.tui.app import SessionmonApp
    from sessionmon.tui.backend import MonitorBackend

    location = DatabaseUrl.parse(db)
    if location.path is not None:
        check = sqlite3.connect(location.path)
        version = check.execute("PRAGMA user_version").fetchone()[0]
        check.close()
        if version != SCHEMA_VERSION:  # the store would migrate it inside the timed first paint
            raise RuntimeError(f"{db} has schema v{version}, not v{SCHEMA_VERSION}: migrate it")

    out: dict[str, Any] = {}
    start = time.perf_counter()
    client = connect(url, timeout=30)
    blacklist = Blacklist(client, prefix=PREFIX)
    # interval 3600: after the first poll only the 1 Hz tick runs (the tick-only CPU figure).
    settings = Settings(db=location, redis_url=url, prefix=PREFIX, interval=3600.0)
    # As `sessionmon` builds it: the read-write store (and its first-open integrity check) opens
    # in a worker on first use; the first paint reads through the poller's read model.
    backend = MonitorBackend(location, blacklist, settings=settings)
    app = SessionmonApp(backend=backend, settings=settings)
    watch = ScreenWatch(app)
    watch.arm(
        lambda table: (
            app.snapshot is not None
            and app.snapshot.blacklist is not None
            and table.model.loaded
            and len(table.model) > 0
        )
    )
    async with app.run_test(size=SIZE) as pilot:
        await sleep_until(lambda: watch.frame_at is not None)
        out["first_paint_s"] = watch.frame_at - start
        await sleep_until(lambda: app.model.complete)
        out["first_complete_s"] = time.perf_counter() - start
        out["rows"] = len(app.model)
        out["rss_after_paint_mib"] = rss_mib()
        out["peak_after_paint_mib"] = peak_rss_mib()
        out["keys"] = app.snapshot.blacklist.count if app.snapshot.blacklist else None
        out["shows_data"] = len(app.main.sessions.rows) > 0
        await app.workers.wait_for_complete()
        await pilot.pause(0.5)
        out["tick_cpu_pct"] = await cpu_over(tick_seconds)
        # The same with the 1 Hz poll loop on (data_version, Redis ping/count/page, reloads).
        app.interval = 1.0
        app.request_poll()
        out["tick_poll_cpu_pct"] = await cpu_over(tick_seconds)
        app.interval = 3600.0
        await until(pilot, lambda: not app.polling and app.model.complete)
        await pilot.pause(0.3)

        async def result_on_screen(
            action: Callable[[], Any], wanted: Callable[[], Any], prepare: Any = None
        ) -> tuple[float, float]:
            """(seconds until the visible rows of the result are on screen, until the whole
            order is read)."""
            await until(pilot, lambda: not app.polling and app.model.complete)
            if prepare is not None:
                await prepare()
                await pilot.pause(0.3)
            old = app.model.order
            query = wanted()

            def is_result(table: Any) -> bool:
                return table.model.order is not old and table.model.query == query

            def is_complete() -> bool:
                return is_result(app.main.sessions) and app.model.complete

            watch.arm(is_result)
            # Watched from its own task: ``pilot.press`` waits for idle before it returns.
            completion = asyncio.ensure_future(sleep_until(is_complete))
            t0 = time.perf_counter()
            await action()
            done = await completion - t0
            await sleep_until(lambda: watch.frame_at is not None)
            on_screen = watch.frame_at - t0
            watch.arm(lambda table: False)
            await pilot.pause()
            return on_screen, done

        async def sort() -> None:
            await pilot.press("s")

        out["sort_labels"], out["sort_s"], out["sort_complete_s"] = [], [], []
        for _ in range(5 * cycles):  # every sort, back to access expiry
            shown, done = await result_on_screen(sort, app.model.next_sort)
            out["sort_s"].append(shown)
            out["sort_complete_s"].append(done)
            out["sort_labels"].append(app.model.query.label)
        out["peak_after_sorts_mib"] = peak_rss_mib()

        async def open_filter() -> None:
            await pilot.press("slash")

        async def type_filter() -> None:
            # The last keystroke: the view filters after its debounce (part of what is measured).
            app.main.filter_input.value = FILTER

        async def clear() -> None:
            await pilot.press("escape")

        out["filter_s"], out["clear_filter_s"], out["clear_complete_s"] = [], [], []
        for _ in range(cycles):
            shown, _done = await result_on_screen(
                type_filter, lambda: app.model.filtered(FILTER), open_filter
            )
            out["filter_s"].append(shown)
            out["filter_rows"] = len(app.model)
            out["peak_after_filter_mib"] = peak_rss_mib()
            shown, done = await result_on_screen(clear, lambda: app.model.filtered(""))
            out["clear_filter_s"].append(shown)
            out["clear_complete_s"].append(done)
    out["peak_rss_mib"] = peak_rss_mib()
    out["getrusage_maxrss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    backend.close()
    client.close()
    return out


# -- the baseline: a plain DataTable -------------------------------------------------------


class DataTableView(App[None]):
    """What a straightforward Textual app does: load the rows into a DataTable, update the
    countdown cells of every row once a second."""

    def __init__(self, db: str, rows: int) -> None:
        super().__init__()
        self.db = db
        self.rows = rows
        self.loaded = -1  # rows the query returned (live ones: fewer once cached data ages)
        self.expiries: dict[Any, tuple[float, float]] = {}

    def compose(self) -> ComposeResult:
        yield DataTable(id="table")

    def on_mount(self) -> None:
        import sqlite3

        table = self.query_one(DataTable)
        for label in ("email", "name", "session", "ip", "user agent", "last seen"):
            table.add_column(label)
        table.add_column("access in", key="access")
        table.add_column("refresh in", key="refresh")
        now = time.time()
        conn = sqlite3.connect(self.db)
        rows = conn.execute(
            "SELECT email, name, id, ip, user_agent, last_seen_at, access_exp, refresh_exp "
            "FROM sessions WHERE refresh_exp > ? ORDER BY access_exp LIMIT ?",
            (now, self.rows),
        ).fetchall()
        conn.close()
        self.loaded = len(rows)
        for email, name, sid, ip, agent, seen, access, refresh in rows:
            key = table.add_row(
                email,
                name,
                sid[:8],
                ip,
                agent[:12],
                format_duration(now - seen) + " ago",
                format_duration(access - now) if access > now else "expired",
                format_duration(refresh - now),
            )
            self.expiries[key] = (access, refresh)
        self.set_interval(1.0, self.tick)

    def tick(self) -> None:
        table = self.query_one(DataTable)
        now = time.time()
        for key, (access, refresh) in self.expiries.items():
            table.update_cell(
                key, "access", format_duration(access - now) if access > now else "expired"
            )
            table.update_cell(key, "refresh", format_duration(refresh - now))


async def datatable(db: str, rows: int, tick_seconds: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    start = time.perf_counter()
    app = DataTableView(db, rows)
    async with app.run_test(size=SIZE) as pilot:
        table = app.query_one(DataTable)
        await until(pilot, lambda: app.loaded >= 0 and table.row_count >= app.loaded)
        await pilot.pause()
        out["first_paint_s"] = time.perf_counter() - start
        out["rows"] = table.row_count
        await pilot.pause(0.5)
        out["tick_cpu_pct"] = await cpu_over(tick_seconds)
    out["peak_rss_mib"] = peak_rss_mib()
    return out


def main(argv: list[str]) -> None:
    kind, db, arg, tick, *rest = argv
    if kind == "monitor":
        result = asyncio.run(monitor(db, arg, float(tick), int(rest[0]) if rest else 1))
    else:
        result = asyncio.run(datatable(db, int(arg), float(tick)))
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
