"""The monitor's App: builds the main screen, runs the poll loop and the force-logout workers.

Messages: ``PollDone`` (a snapshot from the poll worker), ``LogoutDone`` (the result of a
force-logout worker) and ``DetailLoaded``. Workers run in threads and never touch widgets; they post
messages back. The next poll is scheduled only when the last one has finished, so polls never
overlap, whatever the interval.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from textual import on, work
from textual.app import App, SystemCommand
from textual.message import Message
from textual.screen import Screen
from textual.timer import Timer

from sessionmon.core.auth import Auth, LogoutResult
from sessionmon.core.blacklist import Blacklist
from sessionmon.core.clock import SYSTEM_CLOCK, Clock
from sessionmon.core.config import Settings, format_duration, mask_url
from sessionmon.core.errors import DatabaseError, RedisUnavailable, SessionmonError
from sessionmon.core.store import Store
from sessionmon.tui.actions import ACTIONS
from sessionmon.tui.format import plural
from sessionmon.tui.model import SessionList
from sessionmon.tui.poller import Poller, PollRequest, RedisStatus, Snapshot
from sessionmon.tui.reader import SessionReader, ViewQuery
from sessionmon.tui.screens.confirm import LogoutTarget
from sessionmon.tui.screens.main import MainScreen, without_address
from sessionmon.tui.widgets.blacklist_table import WINDOW
from sessionmon.tui.widgets.detail_pane import SessionDetail
from sessionmon.tui.widgets.status_bar import StatusInfo

MIN_INTERVAL = 0.2


class PollDone(Message):
    """A poll finished."""

    def __init__(self, snapshot: Snapshot) -> None:
        super().__init__()
        self.snapshot = snapshot


class LogoutDone(Message):
    """A force-logout finished (``result``) or failed (``error``)."""

    def __init__(
        self, target: LogoutTarget, result: LogoutResult | None, error: str | None
    ) -> None:
        super().__init__()
        self.target = target
        self.result = result
        self.error = error


class DetailLoaded(Message):
    """The detail of the session under the cursor was read."""

    def __init__(self, detail: SessionDetail | None, message: str = "") -> None:
        super().__init__()
        self.detail = detail
        self.message = message


def short_path(path: Path) -> str:
    """The path with the home directory written as ``~``."""
    text = str(path)
    home = os.path.expanduser("~")
    if home not in ("", "/") and text.startswith(home + os.sep):
        return "~" + text[len(home) :]
    return text


class SessionmonApp(App[int]):
    """Watch sessions and blacklist keys; force-logout sessions and users."""

    TITLE = "sessionmon"
    CSS_PATH = "sessionmon.tcss"
    ENABLE_COMMAND_PALETTE = True

    def __init__(
        self,
        *,
        store: Store,
        blacklist: Blacklist,
        auth: Auth,
        settings: Settings,
        clock: Clock = SYSTEM_CLOCK,
        redis_label: str | None = None,
        db_label: str | None = None,
        poller: Poller | None = None,
    ) -> None:
        super().__init__()
        self.store = store
        self.blacklist_store = blacklist
        self.auth = auth
        self.settings = settings
        self.clock = clock
        self.interval = max(MIN_INTERVAL, settings.interval)
        self.db_label = db_label or short_path(store.path)
        self.redis_label = redis_label or (
            mask_url(settings.redis_url) if settings.redis_url else "embedded"
        )
        self.model = SessionList()
        self.poller = poller or Poller(store.path, blacklist, clock)
        self.paused = False
        self.blacklist_descending = False
        self.snapshot: Snapshot | None = None
        self.polls = 0  # polls applied so far
        self._polling = False
        self._pending: PollRequest | None = None
        self._next_poll: Timer | None = None
        self._ticker: Timer | None = None
        self._main = MainScreen()

    # -- screens ----------------------------------------------------------------------------

    def get_default_screen(self) -> Screen:
        return self.main

    @property
    def main(self) -> MainScreen:
        """The main screen (it exists from the start to the end of the app)."""
        return self._main

    def start_polling(self) -> None:
        """Called by the main screen once it is mounted: first poll now, then the 1 Hz tick."""
        if self._ticker is None:
            self._ticker = self.set_interval(1.0, self._tick)
            self.request_poll(reload=True, redis_now=True)

    def on_unmount(self) -> None:
        self.poller.close()

    def _tick(self) -> None:
        if self.main_ready:
            self.main.tick()

    @property
    def main_ready(self) -> bool:
        """False while the main screen is being built or torn down."""
        return self._main.ready

    def open_reader(self) -> SessionReader:
        """A read-only connection for the sessions view (its own, so it never waits on polls)."""
        return SessionReader(self.store.path, busy_timeout=0.2)

    def sessions_of_user(self, user_id: str) -> list[str]:
        return [s.id for s in self.store.sessions_for_user(user_id) if s.user_id == user_id]

    def status_info(self) -> StatusInfo:
        snap = self.snapshot
        return StatusInfo(
            db=self.db_label,
            redis=self.redis_label,
            now=self.clock.now(),
            redis_status=snap.redis if snap else RedisStatus(),
            live=snap.live if snap else None,
            blacklisted=snap.blacklist.count if snap and snap.blacklist else None,
            db_ok=not (snap and snap.db_error),
            paused=self.paused,
            read_only=self.settings.read_only,
        )

    # -- polling ----------------------------------------------------------------------------

    def _request(self, reload: bool, redis_now: bool) -> PollRequest:
        return PollRequest(
            query=self.model.query,
            reload=reload,
            paused=self.paused,
            blacklist_offset=self.main.blacklist.wanted_offset,
            blacklist_limit=WINDOW,
            blacklist_descending=self.blacklist_descending,
            redis_now=redis_now,
        )

    @property
    def polling(self) -> bool:
        """True while a poll worker runs."""
        return self._polling

    def request_poll(self, *, reload: bool = False, redis_now: bool = False) -> None:
        """Poll now, or right after the poll that is running (never two at once)."""
        if not self.main_ready:
            return
        if self._polling:
            pending = self._pending
            self._pending = PollRequest(
                query=self.model.query,
                reload=reload or (pending.reload if pending else False),
                redis_now=redis_now or (pending.redis_now if pending else False),
            )
            return
        if self._next_poll is not None:
            self._next_poll.stop()
            self._next_poll = None
        self._polling = True
        self._poll(self._request(reload, redis_now))

    @work(thread=True, group="poll", exit_on_error=False)
    def _poll(self, req: PollRequest) -> None:
        try:
            snapshot = self.poller.poll(req)
        except Exception as exc:  # a bug must not kill the loop or reach the screen
            previous = self.snapshot.redis if self.snapshot else RedisStatus()
            snapshot = Snapshot(
                at=self.clock.now(), redis=previous, db_error=f"internal error: {exc}"
            )
        self.post_message(PollDone(snapshot))

    @on(PollDone)
    def _poll_done(self, message: PollDone) -> None:
        self._polling = False
        self.snapshot = message.snapshot
        self.polls += 1
        if not self.main_ready:
            return
        self.main.apply_snapshot(message.snapshot)
        pending, self._pending = self._pending, None
        if pending is not None:
            self.request_poll(reload=pending.reload, redis_now=pending.redis_now)
        else:
            self._next_poll = self.set_timer(self.interval, self._scheduled_poll)

    def _scheduled_poll(self) -> None:
        self._next_poll = None
        self.request_poll()

    def set_query(self, query: ViewQuery) -> None:
        """New sort or filter: show it and reload the order at once."""
        self.model.query = query
        self.main.query_changed(query)
        self.request_poll(reload=True)

    # -- detail -----------------------------------------------------------------------------

    def load_detail(self) -> None:
        """Read the detail of the session under the cursor in a worker."""
        session = self.main.sessions.selected
        if session is None:
            self.main.show_detail(None, "No session selected." if len(self.model) else "")
            return
        self._load_detail(session.id)

    @work(thread=True, group="detail", exclusive=True, exit_on_error=False)
    def _load_detail(self, session_id: str) -> None:
        try:
            session = self.store.get_session(session_id)
            if session is None:
                self.post_message(DetailLoaded(None, "The session has ended."))
                return
            audit = self.store.audit(session_id=session_id, limit=8)
        except DatabaseError as exc:
            self.post_message(DetailLoaded(None, str(exc)))
            return
        jtis = [j for j in (session.access_jti, session.refresh_jti) if j]
        try:
            keys = self.blacklist_store.entries_for_session(session.id, jtis)
            detail = SessionDetail(session, keys, audit)
        except RedisUnavailable as exc:
            why = without_address(str(exc)).removeprefix("Redis unreachable: ")
            detail = SessionDetail(
                session, None, audit, key_error=f"unknown: Redis unreachable ({why})"
            )
        self.post_message(DetailLoaded(detail))

    @on(DetailLoaded)
    def _detail_loaded(self, message: DetailLoaded) -> None:
        if self.main_ready:
            self.main.show_detail(message.detail, message.message)

    # -- force-logout -----------------------------------------------------------------------

    def start_logout(self, target: LogoutTarget, reason: str | None) -> None:
        """Force-logout ``target`` in a worker thread (never on the UI thread)."""
        self.notify(f"Logging out {plural(target.count, 'session')}…", timeout=2)
        self._logout(target, reason)

    @work(thread=True, group="logout", exit_on_error=False)
    def _logout(self, target: LogoutTarget, reason: str | None) -> None:
        actor = self.settings.actor
        try:
            if target.kind == "user" and target.user_id:
                result = self.auth.force_logout_user(target.user_id, actor, reason)
            elif len(target.session_ids) == 1:
                result = self.auth.force_logout(target.session_ids[0], actor, reason)
            else:
                result = self.auth.force_logout_many(target.session_ids, actor, reason)
        except SessionmonError as exc:
            self.post_message(LogoutDone(target, None, str(exc)))
            return
        except Exception as exc:  # never a traceback on screen
            self.post_message(LogoutDone(target, None, f"internal error: {exc}"))
            return
        self.post_message(LogoutDone(target, result, None))

    @on(LogoutDone)
    def _logout_done(self, message: LogoutDone) -> None:
        target, result = message.target, message.result
        if result is None:
            self.notify(message.error or "failed", title="Force-logout failed", severity="error")
        else:
            self.model.unmark(result.found)
            if target.kind == "marked":
                self.model.unmark(result.missing)
            title, text, severity = describe_logout(target, result)
            self.notify(text, title=title, severity=severity, timeout=6)
        self.request_poll(reload=True, redis_now=True)

    # -- command palette --------------------------------------------------------------------

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        main = self.main
        disabled = main.disabled_actions()
        for spec in ACTIONS:
            why = disabled.get(spec.action)
            help_text = spec.description + (f" (disabled: {why})" if why else "")
            yield SystemCommand(
                f"{spec.label} [{spec.display}]",
                help_text,
                lambda action=spec.action: self.run_palette_action(action),
            )
        for command in super().get_system_commands(screen):
            if command.title != "Quit":
                yield command

    def run_palette_action(self, action: str) -> None:
        main = self.main
        if action in ("force_logout", "force_logout_user"):
            why = main.refusal()
            if why:
                self.notify(why, title="Refused", severity="warning")
                return
        self.call_later(self.run_action, action, main)


def describe_logout(target: LogoutTarget, result: LogoutResult) -> tuple[str, str, str]:
    """Title, text and severity of the notification after a force-logout."""
    sessions = [k for k in result.revoked if "bl:sid:" in k]
    tokens = len(result.revoked) - len(sessions)
    longest = max(result.revoked.values(), default=0)
    who = ", ".join(sorted(set(e for e in target.emails if e))[:3]) or "-"
    text = (
        f"{plural(result.deleted, 'session')} deleted ({who}); "
        f"blacklisted {plural(tokens, 'token')} and {plural(len(sessions), 'session id')}"
    )
    if result.revoked:
        text += f", keys live up to {format_duration(longest)}"
    if result.missing and target.kind != "user":
        text += f"; {plural(len(result.missing), 'session')} already gone"
    if not result.ok:
        return "Force-logout incomplete", f"{text}. {result.error}", "error"
    if not result.found:
        return "Nothing to log out", "The sessions had already ended.", "warning"
    return "Force-logout done", text, "information"
