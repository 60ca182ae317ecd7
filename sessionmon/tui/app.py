"""The monitor's App: builds the main screen, runs the poll loop and the force-logout workers.

Workers run in threads and never touch widgets; they post the messages of ``tui.messages``
back. Every worker catches every exception: an expected one (``SessionmonError``) becomes a
notification or the banner, a bug is logged with its traceback (``failures.report_failure``) and
shown as one line; no traceback ever reaches the screen. The next poll is scheduled only when the
last one has finished, so polls never overlap, whatever the interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import time
from collections.abc import Iterable
from types import FrameType

from textual import on, work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.notifications import SeverityLevel
from textual.screen import Screen
from textual.timer import Timer
from textual.worker import get_current_worker

from sessionmon.core.auth import Auth, LogoutOutcome, LogoutResult
from sessionmon.core.blacklist import Blacklist
from sessionmon.core.blacklist_search import SearchResult, search
from sessionmon.core.bulk_logout import end_in_batches
from sessionmon.core.clock import SYSTEM_CLOCK, Clock
from sessionmon.core.durations import format_duration
from sessionmon.core.errors import DatabaseError, RedisUnavailable, SessionmonError
from sessionmon.core.event_rates import FeedRates, FeedState, RateFollower
from sessionmon.core.event_stream import StreamReader
from sessionmon.core.policy import SessionPolicy
from sessionmon.core.redis_health import Severity
from sessionmon.core.session_query import SessionQuery, matching_sessions
from sessionmon.core.settings import Settings
from sessionmon.core.store import ReadModel, Session, SessionStore, ViewQuery, open_reader
from sessionmon.core.store.url import DatabaseUrl
from sessionmon.core.urls import mask_url
from sessionmon.tui.actions import ACTIONS, DESTRUCTIVE, works_in
from sessionmon.tui.backend import MonitorBackend
from sessionmon.tui.failures import log, report_failure
from sessionmon.tui.format import alert_text, plural
from sessionmon.tui.frame import FrameClock
from sessionmon.tui.messages import (
    BlacklistSearched,
    DetailLoaded,
    LogoutDone,
    MatchingSessionsFound,
    Notice,
    PollDone,
    RatesRead,
    RedisStarted,
    RowsRead,
    SearchProgress,
    UserSessionsFound,
)
from sessionmon.tui.model import SessionList
from sessionmon.tui.poller import Poller, PollRequest, RedisStatus, Snapshot
from sessionmon.tui.screens.confirm import BY_QUERY, LogoutKind, LogoutTarget
from sessionmon.tui.screens.main import MainScreen, without_address
from sessionmon.tui.state import MonitorState
from sessionmon.tui.widgets.blacklist_table import WINDOW
from sessionmon.tui.widgets.detail_pane import SessionDetail
from sessionmon.tui.widgets.sessions_table import PREFETCH
from sessionmon.tui.widgets.status_bar import StatusInfo

MIN_INTERVAL = 0.2
# A blacklist search is repeated after polls, but at most this share of the time is spent on it
# (a search over a million keys takes seconds: then it runs every few tens of seconds).
SEARCH_DUTY = 0.2
# The status bar's event rates: read every RATES_EVERY seconds (one non-blocking XREAD in a
# worker), and while the feed cannot be read, after a delay doubling from RATES_RETRY up to
# RATES_BACKOFF_CAP seconds.
RATES_EVERY = 1.0
RATES_RETRY = 1.0
RATES_BACKOFF_CAP = 10.0


def short_location(db: DatabaseUrl) -> str:
    """The database for the status bar: a path with the home directory as ``~``, or the URL
    without its password."""
    if db.path is None:  # the server and database; the query (search_path, ssl...) is noise
        return db.display.partition("?")[0]
    text = str(db.path)
    home = os.path.expanduser("~")
    if home not in ("", "/") and text.startswith(home + os.sep):
        return "~" + text[len(home) :]
    return text


class SessionmonApp(App[int]):
    """Watch sessions and blacklist keys; force-logout sessions and users."""

    TITLE = "sessionmon"
    CSS_PATH = "sessionmon.tcss"
    ENABLE_COMMAND_PALETTE = True
    # Operators expect ctrl+c to quit (Textual's default only says how to quit).
    BINDINGS = [
        Binding("ctrl+c", "quit", "Quit", show=False, priority=True, id="sessionmon.ctrl_c")
    ]

    def __init__(
        self,
        *,
        settings: Settings,
        store: SessionStore | None = None,
        blacklist: Blacklist | None = None,
        auth: Auth | None = None,
        backend: MonitorBackend | None = None,
        clock: Clock = SYSTEM_CLOCK,
        redis_label: str | None = None,
        db_label: str | None = None,
        poller: Poller | None = None,
        handle_signals: bool = False,
    ) -> None:
        """Give ``store``, ``blacklist`` and ``auth`` (opened by the caller), or a ``backend``
        (which may open the store later: the database may be missing at startup).

        ``handle_signals``: quit cleanly on SIGTERM and SIGHUP (so the embedded Redis is released).
        """
        super().__init__()
        if backend is None:
            if store is None or blacklist is None or auth is None:
                raise ValueError("give store, blacklist and auth, or a backend")
            backend = MonitorBackend.of(store, blacklist, auth)
        self.backend = backend
        self.blacklist_store = backend.blacklist
        self.settings = settings
        # The lifetime policies whose deadlines the views count down (the core's pure functions).
        self.policy = SessionPolicy.from_settings(settings)
        self.clock = clock
        self.frame = FrameClock(clock)  # the time the screen is drawn at (one reading a tick)
        self.handle_signals = handle_signals
        self.interval = max(MIN_INTERVAL, settings.interval)
        self.db = backend.db
        self.db_label = db_label or short_location(backend.db)
        self.redis_label = redis_label or (
            mask_url(settings.redis_url) if settings.redis_url else "embedded"
        )
        self.state = MonitorState()  # the one owner of the view state
        self.poller = poller or Poller(backend.db, backend.blacklist, clock)
        # Restarting the embedded Redis: at most one attempt at a time, backing off like polls.
        self._starting_redis = False
        self._redis_backoff = self.poller.backoff_start
        self._next_redis_start = time.monotonic() + self._redis_backoff
        self._signals: list[int] = []
        self._told: set[str] = set()  # Redis warnings already notified
        self._searching = False
        self._search_again = False  # search again as soon as the running search ends
        self._next_search = 0.0  # monotonic: the earliest repeat of the last search
        self.snapshot: Snapshot | None = None
        self.polls = 0  # polls applied so far
        self._polling = False
        self._pending: PollRequest | None = None
        self._next_poll: Timer | None = None
        self._ticker: Timer | None = None
        self._main = MainScreen()
        self._row_reader: ReadModel | None = None
        self._rows_reading = False
        self._rows_pending: tuple[list[int], int] | None = None
        # The activity feed's rates for the status bar, read by their own worker (never the poll).
        self.rates = FeedRates(FeedState.STARTING if settings.events else FeedState.OFF)
        self.rates_retry = RATES_RETRY
        self.rates_follower: RateFollower | None = None
        self._rates_backoff = RATES_RETRY

    # -- the view state (``state`` owns it; these read and write it) ---------------------------

    @property
    def model(self) -> SessionList:
        """The sessions view's list: query, cursor, marks."""
        return self.state.sessions

    @property
    def paused(self) -> bool:
        return self.state.paused

    @paused.setter
    def paused(self, value: bool) -> None:
        self.state.paused = value

    @property
    def blacklist_descending(self) -> bool:
        return self.state.blacklist_descending

    @blacklist_descending.setter
    def blacklist_descending(self, value: bool) -> None:
        self.state.blacklist_descending = value

    @property
    def blacklist_filter(self) -> str:
        return self.state.blacklist_filter

    @blacklist_filter.setter
    def blacklist_filter(self, value: str) -> None:
        self.state.blacklist_filter = value

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
            self._start_rates()

    def on_mount(self) -> None:
        if self.handle_signals:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGHUP):
                # Where the loop cannot take signal handlers (Windows: NotImplementedError; not
                # the main thread, as under some test runners: RuntimeError / ValueError) the
                # monitor still runs; only that signal keeps its default action.
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    loop.add_signal_handler(sig, self._quit_on_signal, sig)
                    self._signals.append(sig)
            self._resume_only_on_a_live_terminal()

    def _resume_only_on_a_live_terminal(self) -> None:
        """Textual's driver restarts application mode on SIGCONT (``fg`` after Ctrl+Z). A closed
        terminal sends SIGCONT too, with SIGHUP, and runs that Python handler first: Textual then
        starts a second output thread on the dead terminal (``isatty`` is false once it hung up,
        which skips its own check), the thread dies on EIO, and quitting blocks for ever on its
        full queue. Here SIGCONT resumes only while the terminal is still there; SIGHUP quits."""
        textual_handler = signal.getsignal(signal.SIGCONT)
        if not callable(textual_handler):
            return
        fd = getattr(self._driver, "fileno", None)
        if not isinstance(fd, int) or not os.isatty(fd):
            return

        def on_sigcont(signum: int, frame: FrameType | None) -> None:
            if os.isatty(fd):  # false once the terminal hung up
                textual_handler(signum, frame)

        with contextlib.suppress(ValueError):  # not the main thread
            signal.signal(signal.SIGCONT, on_sigcont)

    def _quit_on_signal(self, sig: int) -> None:
        log.info("received %s: quitting", signal.Signals(sig).name)
        self.exit(128 + sig)

    def on_unmount(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in self._signals:
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
        self._signals.clear()
        self.poller.close()
        self._close_row_reader()

    def _tick(self) -> None:
        if self.main_ready:
            self.main.tick()

    @property
    def main_ready(self) -> bool:
        """False while the main screen is being built or torn down."""
        return self._main.ready

    # -- rows for the sessions view (read off the UI thread) ----------------------------------

    def request_rows(self, keys: list[int], generation: int) -> None:
        """Read these rows in a worker (one read at a time; asks made meanwhile are merged)."""
        if self._rows_reading:
            pending = self._rows_pending
            merged = list(dict.fromkeys([*(pending[0] if pending else []), *keys]))
            self._rows_pending = (merged, generation)
            return
        self._rows_reading = True
        self._read_rows(keys, generation)

    @work(thread=True, group="rows", exit_on_error=False)
    def _read_rows(self, keys: list[int], generation: int) -> None:
        try:
            if self._row_reader is None:
                # Its own connection, so it never waits on a poll's reload.
                self._row_reader = open_reader(self.db, busy_timeout=0.2)
            found: dict[int, Session] | None = self._row_reader.rows(keys)
        except Exception as exc:  # DatabaseError (the poller's banner says why), or a bug
            if not isinstance(exc, DatabaseError):
                report_failure("reading rows", exc)
            self._close_row_reader()
            found = None
        self.post_message(RowsRead(keys, found, generation))

    @on(RowsRead)
    def _rows_read(self, message: RowsRead) -> None:
        self._rows_reading = False
        if self.main_ready:
            self.main.sessions.rows_loaded(message.keys, message.found, message.generation)
        pending, self._rows_pending = self._rows_pending, None
        if pending is not None:
            self.request_rows(*pending)

    def _close_row_reader(self) -> None:
        reader, self._row_reader = self._row_reader, None
        if reader is not None:
            with contextlib.suppress(Exception):
                reader.close()

    # -- the event rates of the status bar (the activity feed, read through the core) ---------

    def _start_rates(self) -> None:
        if not self.settings.events or self.rates_follower is not None:
            return  # --no-events: the status bar says the feed is off
        self.rates_follower = RateFollower(self._rates_reader, self.clock)
        self._read_rates()

    def _rates_reader(self) -> tuple[StreamReader, int]:
        reader, _ = self.backend.event_reader()
        return reader, 0  # never a blocking read: one quick read a second, like a poll

    def _read_rates(self) -> None:
        if self.rates_follower is not None:
            self._read_rates_now(self.rates_follower)

    @work(thread=True, group="rates", exit_on_error=False)
    def _read_rates_now(self, follower: RateFollower) -> None:
        """One read of the feed (its own worker: the poll never waits on it)."""
        try:
            reading = follower.step()
        except Exception as exc:  # a bug: one line, retried like an outage
            error = str(report_failure("reading the activity feed", exc))
            reading = FeedRates(FeedState.DOWN, error=error)
        self.post_message(RatesRead(reading))

    @on(RatesRead)
    def _rates_read(self, message: RatesRead) -> None:
        self.rates = message.rates
        if message.rates.state is FeedState.DOWN:
            delay = self._rates_backoff
            self._rates_backoff = min(delay * 2, RATES_BACKOFF_CAP)
        else:
            delay, self._rates_backoff = RATES_EVERY, self.rates_retry
        self.set_timer(delay, self._read_rates)
        if self.main_ready:
            self.main.show_status()

    def sessions_of_user(self, user_id: str) -> list[str]:
        """Ids of every session of ``user_id`` (blocking: call it from a worker)."""
        store = self.backend.store()
        return [s.id for s in store.sessions_for_user(user_id) if s.user_id == user_id]

    def status_info(self) -> StatusInfo:
        snap = self.snapshot
        return StatusInfo(
            db=self.db_label,
            redis=self.redis_label,
            now=self.frame.now(),
            redis_status=snap.redis if snap else RedisStatus(),
            live=snap.live if snap else None,
            live_exact=snap.live_exact if snap else True,
            blacklisted=snap.blacklist.count if snap and snap.blacklist else None,
            db_ok=not (snap and snap.db_error),
            paused=self.paused,
            read_only=self.settings.read_only,
            redis_warnings=redis_badges(snap.redis) if snap and snap.redis.ok else (),
            rates=self.rates,
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
            top=self.main.sessions_top,
            rows=self.main.sessions.page_height + PREFETCH,
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
                at=self.clock.now(), redis=previous, db_error=str(report_failure("polling", exc))
            )
        self.post_message(PollDone(snapshot))

    @on(PollDone)
    def _poll_done(self, message: PollDone) -> None:
        self._polling = False
        snapshot = message.snapshot
        if snapshot.sessions is not None and snapshot.sessions.query != self.model.query:
            # Made for a sort or filter the operator has left since: never shown (it would undo
            # the change); the current query is read next.
            snapshot = dataclasses.replace(snapshot, sessions=None)
            pending = self._pending
            self._pending = PollRequest(
                query=self.model.query,
                reload=True,
                redis_now=pending.redis_now if pending else False,
            )
        self.snapshot = snapshot
        self.polls += 1
        if not self.main_ready:
            return
        try:
            self.main.apply_snapshot(snapshot)
            for alert in snapshot.alerts:
                self.notify(alert_text(alert), title="Refresh token reused", severity="error")
            self._maybe_start_redis(snapshot)
            self._tell_redis_warnings(snapshot)
            if snapshot.blacklist is not None:
                self._maybe_search()
        except Exception as exc:  # a bug in drawing must not stop the poll loop
            self.notify(str(report_failure("showing the poll", exc)), severity="error")
        finally:
            pending, self._pending = self._pending, None
            if pending is not None:
                self.request_poll(reload=pending.reload, redis_now=pending.redis_now)
            else:
                self._next_poll = self.set_timer(self.interval, self._scheduled_poll)

    def _scheduled_poll(self) -> None:
        self._next_poll = None
        self.request_poll()

    def _tell_redis_warnings(self, snapshot: Snapshot) -> None:
        """A warning about the server (no persistence, ...) is told once in full; its badge stays
        on the status bar."""
        if not snapshot.redis.ok:
            return
        for finding in snapshot.redis.findings:
            if finding.severity is Severity.WARNING and finding.message not in self._told:
                self._told.add(finding.message)
                self.notify(finding.message, title="Redis", severity="warning", timeout=10)

    # -- the embedded Redis -----------------------------------------------------------------

    @property
    def redis_start_error(self) -> str | None:
        """Why the embedded Redis did not start (the banner shows it), or None."""
        return self.backend.redis_start_error

    def _maybe_start_redis(self, snapshot: Snapshot) -> None:
        """Redis down and ours to run: (re)start the embedded server in a worker, with backoff."""
        keeper = self.backend.keeper
        if snapshot.redis.ok:
            self._redis_backoff = self.poller.backoff_start
            self.backend.redis_start_error = None
            return
        if keeper is None or snapshot.redis.ok is None or self._starting_redis:
            return
        if time.monotonic() < self._next_redis_start:
            return
        self._next_redis_start = time.monotonic() + self._redis_backoff
        self._redis_backoff = min(self._redis_backoff * 2, self.poller.backoff_cap)
        self._starting_redis = True
        self._start_redis()

    @work(thread=True, group="redis-start", exclusive=True, exit_on_error=False)
    def _start_redis(self) -> None:
        keeper = self.backend.keeper
        error = None
        try:
            if keeper is not None:
                keeper.start()
        except Exception as exc:
            error = report_failure("starting the embedded Redis", exc).detail
        self.post_message(RedisStarted(error))

    @on(RedisStarted)
    def _redis_started(self, message: RedisStarted) -> None:
        self._starting_redis = False
        self.backend.redis_start_error = message.error
        if message.error is None:
            self.request_poll(redis_now=True)

    def set_query(self, query: ViewQuery) -> None:
        """New sort or filter: show it and reload the order at once."""
        self.model.query = query
        self.main.query_changed(query)
        self.request_poll(reload=True)

    # -- detail -----------------------------------------------------------------------------

    def load_detail(self) -> None:
        """Read the detail of the session under the cursor in a worker.

        While the row under the cursor is still being read (a long order filling, a busy
        database) the pane keeps what it shows: it never blanks for a moment.
        """
        table = self.main.sessions
        session = table.selected
        if session is None:
            if not len(self.model):
                self.main.show_detail(None, "No sessions.")
            elif table.is_gone(self.model.cursor):
                self.main.show_detail(None, "The session has ended.")
            return
        self._load_detail(session.id)

    @work(thread=True, group="detail", exclusive=True, exit_on_error=False)
    def _load_detail(self, session_id: str) -> None:
        try:
            self.post_message(DetailLoaded(session_id, *self._read_detail(session_id)))
        except Exception as exc:  # a bug: logged; one line in the pane and a notification
            text = str(report_failure("loading the session detail", exc))
            self.post_message(DetailLoaded(session_id, None, text))
            self.post_message(Notice(text, "Detail", "error"))

    def _read_detail(self, session_id: str) -> tuple[SessionDetail | None, str]:
        try:
            store = self.backend.store()
            session = store.get_session(session_id)
            if session is None:
                return None, "The session has ended."
            audit = store.audit(session_id=session_id, limit=8)
        except DatabaseError as exc:
            return None, str(exc)
        jtis = [j for j in (session.access_jti, session.refresh_jti) if j]
        try:
            keys = self.blacklist_store.entries_for_session(session.id, jtis)
            return SessionDetail(session, keys, audit), ""
        except RedisUnavailable as exc:
            why = without_address(str(exc)).removeprefix("Redis unreachable: ")
            key_error = f"unknown: Redis unreachable ({why})"
        except Exception as exc:  # e.g. a key of the wrong type: the rest is still worth showing
            key_error = f"unknown: {report_failure('reading its blacklist keys', exc)}"
            self.post_message(Notice(key_error, "Detail", "error"))
        return SessionDetail(session, None, audit, key_error=key_error), ""

    @on(Notice)
    def _notice(self, message: Notice) -> None:
        self.notify(message.text, title=message.title, severity=message.severity)

    @on(DetailLoaded)
    def _detail_loaded(self, message: DetailLoaded) -> None:
        if not self.main_ready:
            return
        selected = self.main.sessions.selected
        if selected is not None and selected.id != message.session_id:
            return  # read for a row the cursor has left (workers may finish out of order)
        self.main.show_detail(message.detail, message.message)

    # -- the blacklist filter ---------------------------------------------------------------

    def set_blacklist_filter(self, text: str) -> None:
        """Filter the blacklist view: search the whole index for ``text`` (empty: no filter)."""
        if text == self.blacklist_filter:
            return
        self.blacklist_filter = text
        self.main.blacklist.set_filter(text)
        self.main.update_titles()
        if text.strip():
            self.search_blacklist()
        else:
            self.request_poll(redis_now=True)  # the window under the cursor

    def search_blacklist(self) -> None:
        """Search now, or right after the search that is running."""
        if not self.blacklist_filter.strip():
            return
        if self._searching:
            self._search_again = True
            return
        self._searching = True
        self._search(self.blacklist_filter, self.blacklist_descending)

    def _maybe_search(self) -> None:
        """After a poll: repeat the search when it is due (new keys, expired ones)."""
        if self.paused or not self.blacklist_filter.strip():
            return  # paused: the matches shown stay as they are
        if time.monotonic() >= self._next_search:
            self.search_blacklist()

    @work(thread=True, group="blacklist-search", exit_on_error=False)
    def _search(self, text: str, descending: bool) -> None:
        worker = get_current_worker()

        def stop() -> bool:
            return worker.is_cancelled or text != self.blacklist_filter

        def progress(scanned: int, total: int, found: int) -> None:
            self.post_message(SearchProgress(text, scanned, total, found))

        try:
            result = search(
                self.blacklist_store, text, descending=descending, stop=stop, progress=progress
            )
        except Exception as exc:  # RedisUnavailable, or a bug (logged): the title says so
            if isinstance(exc, RedisUnavailable):
                error = str(exc)
            else:
                error = str(report_failure("searching the blacklist", exc))
            result = SearchResult(text, descending, error=error, at=self.clock.now())
        self.post_message(BlacklistSearched(result))

    @on(SearchProgress)
    def _search_progress(self, message: SearchProgress) -> None:
        if self.main_ready:
            self.main.blacklist.show_progress(
                message.text, message.scanned, message.total, message.found
            )
            self.main.update_titles()

    @on(BlacklistSearched)
    def _blacklist_searched(self, message: BlacklistSearched) -> None:
        self._searching = False
        result = message.result
        self._next_search = time.monotonic() + max(self.interval, result.seconds / SEARCH_DUTY)
        again, self._search_again = self._search_again, False
        current = result.text == self.blacklist_filter
        same_order = result.descending == self.blacklist_descending
        if self.main_ready and current and (same_order or not result.capped):
            self.main.blacklist.apply_search(result)  # it orders the matches its own way
            self.main.update_titles()
        elif self.main_ready and current:
            again = True  # stopped at the cap in the other order: the first ones differ
        if again or not current:
            self.search_blacklist()

    # -- force-logout -----------------------------------------------------------------------

    def find_user_sessions(self, session: Session) -> None:
        """For ``L``: read the sessions of ``session``'s user in a worker, then ask to confirm."""
        self._find_user_sessions(session)

    @work(thread=True, group="user-lookup", exclusive=True, exit_on_error=False)
    def _find_user_sessions(self, session: Session) -> None:
        try:
            ids = tuple(self.sessions_of_user(session.user_id)) or (session.id,)
        except Exception as exc:  # DatabaseError, or a bug (logged)
            error = report_failure("reading the user's sessions", exc).detail
            self.post_message(UserSessionsFound(session, (), error))
            return
        self.post_message(UserSessionsFound(session, ids, None))

    @on(UserSessionsFound)
    def _user_sessions_found(self, message: UserSessionsFound) -> None:
        if not self.main_ready:
            return
        if message.error is not None:
            text = message.error
            self.notify(text, title="Cannot read the user's sessions", severity="error")
            return
        session = message.session
        target = LogoutTarget(
            LogoutKind.USER, message.ids, (session.email or session.user_id,), session.user_id
        )
        self.main.confirm(target)

    def find_matching_sessions(self, text: str) -> None:
        """For ``A``: read every live session the filter ``text`` matches in a worker, then ask
        to confirm with exactly that set."""
        self._find_matching_sessions(SessionQuery(text=text), text, None)

    def find_sessions_signed_with(self, kid: str) -> None:
        """For the keys panel's ``l``: read every live session whose access or refresh token
        was signed with ``kid`` in a worker, then ask to confirm with exactly that set."""
        self._find_matching_sessions(SessionQuery(kid=kid), "", kid)

    @work(thread=True, group="user-lookup", exclusive=True, exit_on_error=False)
    def _find_matching_sessions(self, query: SessionQuery, text: str, kid: str | None) -> None:
        try:
            found = list(matching_sessions(self.backend.store(), query, self.clock.now()))
        except Exception as exc:  # DatabaseError, or a bug (logged)
            error = report_failure("reading the matching sessions", exc).detail
            self.post_message(MatchingSessionsFound(text, (), (), error, kid))
            return
        ids = tuple(s.id for s in found)
        emails = tuple(s.email or s.user_id for s in found)
        self.post_message(MatchingSessionsFound(text, ids, emails, None, kid))

    @on(MatchingSessionsFound)
    def _matching_sessions_found(self, message: MatchingSessionsFound) -> None:
        if not self.main_ready:
            return
        if message.error is not None:
            self.notify(message.error, title="Cannot read the sessions", severity="error")
            return
        if message.kid is not None:
            if not message.ids:
                self.notify(f"No live session is signed with key {message.kid}", severity="warning")
                return
            target = LogoutTarget(
                LogoutKind.SIGNED_WITH, message.ids, message.emails, kid=message.kid
            )
        else:
            if not message.ids:
                self.notify(f"No live session matches {message.text!r}", severity="warning")
                return
            target = LogoutTarget(
                LogoutKind.MATCHING, message.ids, message.emails, query=message.text
            )
        self.main.confirm(target)

    def start_logout(self, target: LogoutTarget, reason: str | None) -> None:
        """Force-logout ``target`` in a worker thread (never on the UI thread)."""
        self.notify(f"Logging out {plural(target.count, 'session')}…", timeout=2)
        self._logout(target, reason)

    @work(thread=True, group="logout", exit_on_error=False)
    def _logout(self, target: LogoutTarget, reason: str | None) -> None:
        actor = self.settings.actor
        try:
            auth = self.backend.auth()
            if target.kind is LogoutKind.USER and target.user_id:
                result = auth.force_logout_user(target.user_id, actor, reason)
            elif target.kind in BY_QUERY:
                result = end_in_batches(
                    auth, target.session_ids, actor, reason, progress=self._logout_progress
                )
            elif len(target.session_ids) == 1:
                result = auth.force_logout(target.session_ids[0], actor, reason)
            else:
                result = auth.force_logout_many(target.session_ids, actor, reason)
        except SessionmonError as exc:
            log.warning("force-logout of %s failed: %s", target.kind.value, exc)
            self.post_message(LogoutDone(target, None, str(exc)))
            return
        except Exception as exc:  # never a traceback on screen
            error = report_failure("force-logout", exc).detail
            self.post_message(LogoutDone(target, None, error))
            return
        self.post_message(LogoutDone(target, result, None))

    def _logout_progress(self, done: int, total: int) -> None:
        self.post_message(Notice(f"{done:,} of {total:,} logged out…", "Force-logout"))

    @on(LogoutDone)
    def _logout_done(self, message: LogoutDone) -> None:
        target, result = message.target, message.result
        if result is None:
            self.notify(message.error or "failed", title="Force-logout failed", severity="error")
        else:
            self.model.unmark(result.found)
            if target.kind is LogoutKind.MARKED or target.kind in BY_QUERY:
                self.model.unmark(result.missing)
            title, text, severity = describe_logout(target, result)
            self.notify(text, title=title, severity=severity, timeout=6)
        self.request_poll(reload=True, redis_now=True)
        self.search_blacklist()  # the keys just written match a filter on that user

    # -- command palette --------------------------------------------------------------------

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        main = self.main
        disabled = main.disabled_actions()
        for spec in ACTIONS:
            why = disabled.get(spec.action)
            help_text = spec.description + (f" (disabled: {why})" if why else "")
            yield SystemCommand(
                f"{spec.label} ({spec.display})",  # not [..]: titles are markup
                help_text,
                lambda action=spec.action: self.run_palette_action(action),
            )
        for command in super().get_system_commands(screen):
            if command.title != "Quit":
                yield command

    def run_palette_action(self, action: str) -> None:
        main = self.main
        if not works_in(action, main.current_view):
            label = next(a.label for a in ACTIONS if a.action == action)
            self.notify(f"{label} works in the sessions view (tab switches)", severity="warning")
            return
        if action in DESTRUCTIVE:
            why = main.refusal()
            if why:
                self.notify(why, title="Refused", severity="warning")
                return
        self.call_later(self.run_action, action, main)


# Status bar badges (long, short) for what is wrong with the Redis server; errors are in the banner.
REDIS_BADGES = {
    "may_evict": ("MAY EVICT", "EVICT"),
    "no_persistence": ("NO PERSISTENCE", "NOPERS"),
    "persistence_unknown": ("PERSISTENCE?", "PERS?"),
}


def redis_badges(status: RedisStatus) -> tuple[tuple[str, str], ...]:
    """The badges of the warnings about the server (the banner shows its errors)."""
    return tuple(
        REDIS_BADGES[f.code]
        for f in status.findings
        if f.severity is Severity.WARNING and f.code in REDIS_BADGES
    )


def describe_logout(target: LogoutTarget, result: LogoutResult) -> tuple[str, str, SeverityLevel]:
    """Title, text and severity of the notification after a force-logout.

    A user logout says how what it ended differs from what the dialog showed: sessions that
    started while it was open, sessions that had ended meanwhile.
    """
    sessions = [k for k in result.revoked if ":sid:" in k]
    tokens = len(result.revoked) - len(sessions)
    longest = max(result.revoked.values(), default=0)
    who = ", ".join(sorted(set(e for e in target.emails if e))[:3]) or "-"
    text = f"{plural(result.deleted, 'session')} deleted ({who})"
    if target.kind is LogoutKind.USER:
        shown = set(target.session_ids)
        changes = []
        if appeared := [s for s in result.found if s not in shown]:
            changes.append(f"{len(appeared)} appeared after the dialog opened")
        if ended := shown - set(result.found):
            changes.append(f"{len(ended)} had already ended")
        if changes:
            text += ": " + ", ".join(changes)
    text += f"; blacklisted {plural(tokens, 'token')} and {plural(len(sessions), 'session id')}"
    if result.revoked:
        text += f", keys live up to {format_duration(longest)}"
    if result.missing and target.kind is not LogoutKind.USER:
        text += f"; {plural(len(result.missing), 'session')} already gone"
    if result.outcome is LogoutOutcome.NOT_DURABLE:
        # Written on the master only: never reported as revoked.
        return "Force-logout NOT durable", f"{who}: {result.error}", "error"
    if not result.ok:
        return "Force-logout incomplete", f"{text}. {result.error}", "error"
    if result.warning:
        return "Force-logout done (Redis may evict it)", f"{text}. {result.warning}", "warning"
    if not result.found:
        return "Nothing to log out", "The sessions had already ended.", "warning"
    return "Force-logout done", text, "information"
