"""The main screen: status bar, banner, sessions / blacklist / health views, filter, detail pane,
footer.

It turns key presses into actions and snapshots into what is drawn; the app owns the workers.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, ClassVar

from textual import events, on
from textual.app import ComposeResult
from textual.binding import BindingType
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import ContentSwitcher, Input

from sessionmon.core.redis_health import Severity
from sessionmon.core.store import ViewQuery
from sessionmon.tui.actions import (
    BLACKLIST,
    DESTRUCTIVE,
    HEALTH,
    SESSIONS,
    VIEW_CYCLE,
    bindings,
    works_in,
)
from sessionmon.tui.format import ago
from sessionmon.tui.poller import REDIS_DOWN, Snapshot
from sessionmon.tui.screens.activity import ActivityScreen
from sessionmon.tui.screens.confirm import ConfirmLogout, LogoutKind, LogoutTarget
from sessionmon.tui.screens.help import HelpScreen
from sessionmon.tui.screens.history import HistoryScreen
from sessionmon.tui.screens.keys import KeysScreen
from sessionmon.tui.widgets.banner import Banner
from sessionmon.tui.widgets.blacklist_table import BlacklistTable
from sessionmon.tui.widgets.detail_pane import DetailPane, SessionDetail
from sessionmon.tui.widgets.footer import KeysFooter
from sessionmon.tui.widgets.health_view import HealthView
from sessionmon.tui.widgets.sessions_table import SessionsTable
from sessionmon.tui.widgets.status_bar import StatusBar
from sessionmon.tui.widgets.table import LineTable

if TYPE_CHECKING:
    from sessionmon.tui.app import SessionmonApp

FILTER_DEBOUNCE = 0.15
FILTER_HINTS = {
    SESSIONS: "filter sessions: email, name, session id or IP",
    BLACKLIST: "filter blacklist keys: email, user, session id, key, reason or actor",
}


def database_problem(snap: Snapshot, rows_shown: bool) -> str:
    """The banner line for a database that cannot be read: what is wrong, and what happens now."""
    error = snap.db_error or ""
    retry = snap.db_retry_in
    when = f"retrying in {retry:.0f}s" if retry and retry >= 1 else "retrying"
    if snap.db_missing:
        path = error.removeprefix("database not found: ")
        text = f"Database not found: {path} — waiting for it to appear"
    else:
        text = (error[:1].upper() + error[1:]) if error else "Database unavailable"
        text += f" · {when}"
    if rows_shown:
        as_of = snap.sessions_as_of
        age = f" ({ago(as_of, snap.at)})" if as_of is not None else ""
        text += f" · showing the last rows read{age}"
    return text


def without_address(error: str) -> str:
    """The error without host, port or socket path (the banner says what, not where)."""
    error = re.sub(r"\s*connecting to (unix socket: )?\S+?(?=\.\s|\.?$)", "", error).strip()
    return error.removeprefix("Redis unreachable: ")


class MainScreen(Screen[None]):
    """What the operator looks at."""

    BINDINGS: ClassVar[list[BindingType]] = list(bindings())

    app: SessionmonApp

    def __init__(self) -> None:
        super().__init__()
        self.snapshot: Snapshot | None = None
        self.ready = False
        self._filter_timer: Timer | None = None
        self._pending_filter: tuple[str, str] | None = None  # (view, text) typed, not applied yet
        self._sessions: SessionsTable | None = None
        self._blacklist: BlacklistTable | None = None
        # A sort change shows the top of the new order: the query whose rows, when they come
        # from the poll worker, are shown from the first one.
        self._to_top: ViewQuery | None = None

    def compose(self) -> ComposeResult:
        app = self.app
        yield StatusBar(app.status_info(), id="status")
        yield Banner(id="banner")
        with ContentSwitcher(initial="sessions", id="views"):
            yield SessionsTable(
                app.model,
                app.request_rows,
                app.frame,
                access_life=app.settings.access_ttl,
                policy=app.policy,
                id="sessions",
            )
            yield BlacklistTable(app.frame, id="blacklist")
            yield HealthView(lambda: app.backend.health(app.clock), app.clock, id="health")
        yield Input(placeholder=FILTER_HINTS[SESSIONS], id="filter")
        yield DetailPane(app.frame, app.settings.access_ttl, policy=app.policy, id="detail")
        yield KeysFooter()

    def on_mount(self) -> None:
        # References kept from here on: queries during teardown would find nothing.
        self._status = self.query_one(StatusBar)
        self._banner = self.query_one(Banner)
        self._detail = self.query_one(DetailPane)
        self._sessions = self.query_one(SessionsTable)
        self._blacklist = self.query_one(BlacklistTable)
        self._switcher = self.query_one(ContentSwitcher)
        self._health = self.query_one(HealthView)
        self.ready = True
        self.sessions.focus()
        self.update_titles()
        self.app.start_polling()

    # -- parts ------------------------------------------------------------------------------

    @property
    def sessions(self) -> SessionsTable:
        return self._sessions if self._sessions is not None else self.query_one(SessionsTable)

    @property
    def blacklist(self) -> BlacklistTable:
        return self._blacklist if self._blacklist is not None else self.query_one(BlacklistTable)

    @property
    def filter_input(self) -> Input:
        return self.query_one("#filter", Input)

    @property
    def on_sessions(self) -> bool:
        return self._switcher.current == SESSIONS

    @property
    def health(self) -> HealthView:
        return self._health

    @property
    def current_view(self) -> str:
        """``"sessions"``, ``"blacklist"`` or ``"health"``."""
        if not self.ready:
            return SESSIONS
        return self._switcher.current or SESSIONS

    @property
    def current_table(self) -> LineTable:
        """The list shown (the sessions list behind the health view)."""
        return self.blacklist if self.current_view == BLACKLIST else self.sessions

    def update_titles(self) -> None:
        table = self.sessions
        title = table.title()
        if table.model.marks:
            title += f" · {len(table.model.marks)} marked"
        if self.app.paused:
            title += " · PAUSED"
        if table.border_title != title:  # setting it repaints the whole table
            table.border_title = title
        title = self.blacklist.title()
        if self.app.paused:
            title += " · PAUSED"
        if self.blacklist.border_title != title:
            self.blacklist.border_title = title

    # -- live data --------------------------------------------------------------------------

    def on_unmount(self) -> None:
        self.ready = False

    def apply_snapshot(self, snap: Snapshot) -> None:
        """Show what one poll found."""
        was_ok = self.snapshot.redis.ok if self.snapshot else None
        was_db_ok = self.snapshot.db_error is None if self.snapshot else True
        self.snapshot = snap
        problems = []
        if snap.redis.ok is False:
            retry = snap.redis.retry_in
            # Why the embedded server did not start says more than "no such socket".
            detail = self.app.redis_start_error or without_address(snap.redis.error or "")
            when = f" · retrying in {retry:.0f}s" if retry and retry >= 1 else " · retrying"
            problems.append(f"{REDIS_DOWN}{when} ({detail})" if detail else REDIS_DOWN + when)
        if snap.redis.ok:  # a Redis that may evict keys: force-logout is refused, say why
            problems += [f.message for f in snap.redis.findings if f.severity is Severity.ERROR]
        if snap.db_error:
            problems.append(database_problem(snap, self.app.model.loaded))
        self._banner.show_problems(problems)
        if snap.sessions is not None:
            self.sessions.apply(snap.sessions)
            if self._to_top is not None and snap.sessions.query == self._to_top:
                self._to_top = None
                self.sessions.show_top()
            self.app.load_detail()  # the row may have changed even if the cursor did not move
        if snap.blacklist is not None and (not self.app.paused or self.blacklist.wants_window):
            self.blacklist.apply(snap.blacklist)
        elif snap.redis.ok is False:
            self.blacklist.mark_stale()
        if was_ok != snap.redis.ok or was_db_ok != (snap.db_error is None):
            self.refresh_bindings()
        self.tick()

    def show_status(self) -> None:
        """Redraw the status bar (new event rates); no queries."""
        self._status.show(self.app.status_info())

    def tick(self) -> None:
        """Once a second: clock, countdowns (visible rows only), titles. No queries.

        Everything is drawn at one reading of the clock (``app.frame``), so a countdown shows the
        same value in the list, the detail pane and the blacklist view.
        """
        now = self.app.frame.advance()
        if not self.app.paused:
            self.blacklist.prune(now)
        self._status.show(self.app.status_info())
        self.update_titles()
        if self.current_view == HEALTH:
            self._health.tick()
        else:
            self.current_table.refresh_clock()
        self._detail.tick()

    def show_detail(self, detail: SessionDetail | None, message: str = "") -> None:
        self._detail.show(detail, message or "No session selected.")

    @on(SessionsTable.OrderSettled)
    def _order_settled(self) -> None:
        self.update_titles()  # the count is exact now

    @on(LineTable.CursorMoved, "#sessions")
    def _cursor_moved(self) -> None:
        self.app.load_detail()

    @on(LineTable.HeaderClicked, "#sessions")
    def _header_clicked(self, event: LineTable.HeaderClicked) -> None:
        if event.column.sort:
            self._sort_sessions(self.app.model.sorted_by(event.column.sort))

    @property
    def sessions_top(self) -> int:
        """The first row the sessions view will show when the next order comes in: 0 after a
        sort change (``show_top``), so the poll reads those rows with the order."""
        if self._to_top is not None and self._to_top == self.app.model.query:
            return 0
        return self.sessions.top

    def _sort_sessions(self, query: ViewQuery) -> None:
        """A new sort (``s``, ``S``, a header click): once its rows are in, the view shows the
        first rows of the new order; the cursor stays on its session (the detail pane too), even
        when that row is now further down. The blacklist view does the same on ``S``."""
        self._to_top = query
        self.app.set_query(query)

    @on(LineTable.HeaderClicked, "#blacklist")
    def _blacklist_header_clicked(self) -> None:
        self.action_reverse_sort()

    @on(BlacklistTable.WindowWanted)
    def _window_wanted(self) -> None:
        self.app.request_poll()

    # -- refusals ---------------------------------------------------------------------------

    def refusal(self) -> str | None:
        """Why force-logout is refused right now, or None."""
        if self.app.settings.read_only:
            return "read-only mode: force-logout is disabled"
        if self.snapshot is not None and self.snapshot.redis.ok is False:
            return "Redis unreachable: force-logout disabled"
        return None

    def disabled_actions(self) -> dict[str, str]:
        """Action -> why it is disabled (for the help screen)."""
        why = self.refusal()
        if not why:
            return {}
        short = "read-only" if self.app.settings.read_only else "Redis unreachable"
        return dict.fromkeys(DESTRUCTIVE, short)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if not works_in(action, self.current_view):
            return False  # not in this view: hidden from the footer, the key does nothing
        if action in DESTRUCTIVE and self.refusal():
            return None  # shown disabled; the key press is answered in on_key
        return True

    def on_key(self, event: events.Key) -> None:
        if event.key in ("l", "L", "A") and self.on_sessions:
            why = self.refusal()
            if why:
                event.stop()
                self.notify(why, title="Refused", severity="warning")

    # -- actions ----------------------------------------------------------------------------

    def capture_target(self) -> LogoutTarget | None:
        """The sessions ``l`` is about, fixed now (rows may move before confirm)."""
        model = self.app.model
        if model.marks:
            ids = tuple(model.marks)
            return LogoutTarget(LogoutKind.MARKED, ids, tuple(model.marks[i] for i in ids))
        session = self.sessions.selected
        if session is None:
            return None
        return LogoutTarget(LogoutKind.SESSION, (session.id,), (session.email or "",))

    def _confirm(self, whole_user: bool) -> None:
        why = self.refusal()
        if why:
            self.notify(why, title="Refused", severity="warning")
            return
        if whole_user:
            # The user is fixed now; their sessions are read in a worker (never on the UI
            # thread), then the dialog opens with the count read right after the key press.
            session = self.sessions.selected
            if session is None:
                self.notify("No session selected", severity="warning")
                return
            self.app.find_user_sessions(session)
            return
        target = self.capture_target()
        if target is None:
            self.notify("No session selected", severity="warning")
            return
        self.confirm(target)

    def confirm(self, target: LogoutTarget) -> None:
        """Ask before force-logging-out ``target``; act on exactly it if confirmed."""
        why = self.refusal()  # it may have changed while the user's sessions were read
        if why:
            self.notify(why, title="Refused", severity="warning")
            return
        if self.app.screen is not self:
            return  # another dialog or screen opened meanwhile: do not stack a confirm on it
        dialog = ConfirmLogout(target)

        def done(confirmed: bool | None) -> None:
            if confirmed:
                self.app.start_logout(target, dialog.reason)

        self.app.push_screen(dialog, done)

    def action_force_logout(self) -> None:
        self._confirm(whole_user=False)

    def action_force_logout_user(self) -> None:
        self._confirm(whole_user=True)

    def action_force_logout_matching(self) -> None:
        why = self.refusal()
        if why:
            self.notify(why, title="Refused", severity="warning")
            return
        text = self.app.model.query.text
        if not text:
            self.notify(
                "Filter first (/): A logs out every session the filter matches",
                title="No filter",
                severity="warning",
            )
            return
        self.app.find_matching_sessions(text)

    def action_toggle_mark(self) -> None:
        session = self.sessions.selected
        if session is None:
            return
        self.app.model.toggle_mark(session.id, session.email)
        self.sessions.refresh()
        self.sessions.action_cursor(1)
        self.update_titles()

    def view_filter(self, view: str | None = None) -> str:
        """The filter text of ``view`` (default: the one shown)."""
        view = view or self.current_view
        return self.app.model.query.text if view == SESSIONS else self.app.blacklist_filter

    def _apply_filter(self, view: str, text: str) -> None:
        if view == SESSIONS:
            if text != self.app.model.query.text:
                self.app.set_query(self.app.model.filtered(text))
        else:
            self.app.set_blacklist_filter(text)

    def _flush_filter(self) -> None:
        """Apply what was typed now instead of after the debounce."""
        if self._filter_timer is not None:
            self._filter_timer.stop()
            self._filter_timer = None
        pending, self._pending_filter = self._pending_filter, None
        if pending is not None:
            self._apply_filter(*pending)

    def _show_filter_box(self) -> None:
        """The box shows the current view's filter (hidden when it has none, and in the health
        view, which has no filter)."""
        box = self.filter_input
        if self.current_view == HEALTH:
            box.remove_class("-shown")
            return
        box.placeholder = FILTER_HINTS[self.current_view]
        text = self.view_filter()
        if box.value != text:
            box.value = text
        box.set_class(bool(text), "-shown")

    def action_filter(self) -> None:
        box = self.filter_input
        self._show_filter_box()
        box.add_class("-shown")
        box.focus()

    def action_clear_filter(self) -> None:
        self._pending_filter = None
        if self._filter_timer is not None:
            self._filter_timer.stop()
        box = self.filter_input
        if box.value:
            box.value = ""
        box.remove_class("-shown")
        self._apply_filter(self.current_view, "")
        self.current_table.focus()

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        if self._filter_timer is not None:
            self._filter_timer.stop()
        view = self.current_view
        if event.value == self.view_filter(view):
            self._pending_filter = None  # e.g. the box shown again for the other view
            return
        self._pending_filter = (view, event.value)
        self._filter_timer = self.set_timer(FILTER_DEBOUNCE, self._flush_filter)

    @on(Input.Submitted, "#filter")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        self._pending_filter = (self.current_view, event.value)
        self._flush_filter()
        if not event.value:
            self.filter_input.remove_class("-shown")
        self.current_table.focus()

    def action_cycle_sort(self) -> None:
        self._sort_sessions(self.app.model.next_sort())

    def action_reverse_sort(self) -> None:
        if self.on_sessions:
            self._sort_sessions(self.app.model.reversed_sort())
        else:
            self.app.blacklist_descending = not self.app.blacklist_descending
            self.blacklist.set_descending(self.app.blacklist_descending)
            self.blacklist.show_top_of_new_order()
            search = self.blacklist.search
            if self.blacklist.filtered and search is not None and search.capped:
                self.app.search_blacklist()  # the first matches in the other order differ
            self.app.request_poll(redis_now=True)
            self.update_titles()

    def action_columns_left(self) -> None:
        self.current_table.scroll_columns(-1)

    def action_columns_right(self) -> None:
        self.current_table.scroll_columns(1)

    def action_toggle_pause(self) -> None:
        self.app.paused = not self.app.paused
        self.notify("Paused: the lists are frozen" if self.app.paused else "Resumed", timeout=2)
        if not self.app.paused:
            self.app.request_poll(reload=True, redis_now=True)
            self.app.search_blacklist()
        self.tick()

    def action_refresh(self) -> None:
        if self.current_view == HEALTH:
            self._health.check_now()
            return
        self.app.request_poll(reload=True, redis_now=True)
        self.app.search_blacklist()

    def action_switch_view(self) -> None:
        """Sessions -> blacklist -> health -> sessions: the footer, the filter box and the focus
        follow; the health view checks when it comes into sight."""
        self._flush_filter()  # typed for the view being left
        self.show_view(VIEW_CYCLE[(VIEW_CYCLE.index(self.current_view) + 1) % len(VIEW_CYCLE)])

    def action_previous_view(self) -> None:
        self._flush_filter()
        self.show_view(VIEW_CYCLE[(VIEW_CYCLE.index(self.current_view) - 1) % len(VIEW_CYCLE)])

    def show_view(self, view: str) -> None:
        """Bring ``view`` into sight."""
        self._switcher.current = view
        self._detail.display = view == SESSIONS
        self._show_filter_box()
        self._health.shown(view == HEALTH)
        if view == HEALTH:
            self._health.focus()
        else:
            self.current_table.focus()
        self.refresh_bindings()
        self.tick()

    def action_history(self) -> None:
        app = self.app
        app.push_screen(HistoryScreen(app.backend.history, app.clock))

    def action_keys(self) -> None:
        app = self.app

        def chosen(kid: str | None) -> None:
            if kid is not None:
                self.logout_signed_with(kid)

        app.push_screen(KeysScreen(app.backend.key_listing, app.clock), chosen)

    def logout_signed_with(self, kid: str) -> None:
        """The keys panel's ``l``: read the sessions signed with ``kid``, then ask to confirm."""
        why = self.refusal()
        if why:
            self.notify(why, title="Refused", severity="warning")
            return
        self.app.find_sessions_signed_with(kid)

    def action_activity(self) -> None:
        app = self.app
        app.push_screen(ActivityScreen(app.backend.event_reader, app.clock))

    def action_help(self) -> None:
        self.app.push_screen(HelpScreen(self.disabled_actions()))

    async def action_quit(self) -> None:
        await self.app.action_quit()

    def query_changed(self, query: ViewQuery) -> None:
        """The sort or filter changed: show it now (rows follow when the reload arrives)."""
        if self._to_top is not None and query != self._to_top:
            self._to_top = None  # e.g. a filter typed before the new order came in
        self.sessions.model.query = query
        self.sessions.refresh()
        self.update_titles()
