"""What the monitor's workers post back to the UI thread (they never touch widgets).

``PollDone`` (a snapshot from the poll worker), ``RowsRead`` (rows the sessions view asked for),
``LogoutDone`` (the result of a force-logout worker), ``DetailLoaded``, ``UserSessionsFound`` (the
sessions of a user, for ``L``), ``MatchingSessionsFound`` (what the filter matched, for ``A``),
``BlacklistSearched`` / ``SearchProgress`` (the blacklist filter's walk over the index),
``RedisStarted`` (an attempt to start the embedded Redis), ``RatesRead`` (the activity feed's
rates for the status bar) and ``Notice`` (a notification).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from textual.message import Message
from textual.notifications import SeverityLevel

from sessionmon.core.auth import LogoutResult
from sessionmon.core.blacklist_search import SearchResult
from sessionmon.core.event_rates import FeedRates
from sessionmon.core.store import Session
from sessionmon.tui.poller import Snapshot

if TYPE_CHECKING:
    from sessionmon.tui.screens.confirm import LogoutTarget
    from sessionmon.tui.widgets.detail_pane import SessionDetail


class PollDone(Message):
    """A poll finished."""

    def __init__(self, snapshot: Snapshot) -> None:
        super().__init__()
        self.snapshot = snapshot


class RatesRead(Message):
    """The rates worker read the feed (or could not)."""

    def __init__(self, rates: FeedRates) -> None:
        super().__init__()
        self.rates = rates


class LogoutDone(Message):
    """A force-logout finished (``result``) or failed (``error``)."""

    def __init__(
        self, target: LogoutTarget, result: LogoutResult | None, error: str | None
    ) -> None:
        super().__init__()
        self.target = target
        self.result = result
        self.error = error


class UserSessionsFound(Message):
    """The sessions of the user an ``L`` key press was about (``error``: they could not be read)."""

    def __init__(self, session: Session, ids: tuple[str, ...], error: str | None) -> None:
        super().__init__()
        self.session = session
        self.ids = ids
        self.error = error


class MatchingSessionsFound(Message):
    """The live sessions the filter ``text`` matched when ``A`` was pressed, or (``kid`` set)
    those signed with that key when the keys panel's ``l`` was pressed (ids and emails;
    ``error``: they could not be read)."""

    def __init__(
        self,
        text: str,
        ids: tuple[str, ...],
        emails: tuple[str, ...],
        error: str | None,
        kid: str | None = None,
    ) -> None:
        super().__init__()
        self.text = text
        self.ids = ids
        self.emails = emails
        self.error = error
        self.kid = kid


class Notice(Message):
    """A notification from a worker thread (``notify`` is for the UI thread)."""

    def __init__(self, text: str, title: str = "", severity: SeverityLevel = "information") -> None:
        super().__init__()
        self.text = text
        self.title = title
        self.severity = severity


class RedisStarted(Message):
    """An attempt to start the embedded Redis finished (``error`` None: it answers)."""

    def __init__(self, error: str | None) -> None:
        super().__init__()
        self.error = error


class DetailLoaded(Message):
    """The detail of session ``session_id`` (under the cursor when it was asked for) was read."""

    def __init__(self, session_id: str, detail: SessionDetail | None, message: str = "") -> None:
        super().__init__()
        self.session_id = session_id
        self.detail = detail
        self.message = message


class BlacklistSearched(Message):
    """A search of the blacklist for the filter text finished (or failed: ``result.error``)."""

    def __init__(self, result: SearchResult) -> None:
        super().__init__()
        self.result = result


class SearchProgress(Message):
    """A long blacklist search has read ``scanned`` of ``total`` keys and found ``found``."""

    def __init__(self, text: str, scanned: int, total: int, found: int) -> None:
        super().__init__()
        self.text = text
        self.scanned = scanned
        self.total = total
        self.found = found


class RowsRead(Message):
    """Rows of the sessions view read by a worker (``found`` None: the read failed)."""

    def __init__(
        self, keys: Sequence[int], found: Mapping[int, Session] | None, generation: int
    ) -> None:
        super().__init__()
        self.keys = keys
        self.found = found
        self.generation = generation
