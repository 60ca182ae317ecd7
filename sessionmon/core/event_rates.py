"""Live event rates from the activity feed: logins, refreshes, revocations and rejections per
second over the last minute, for a status line.

``RateCounter`` keeps per-second counts (plain Python, fed events and asked for a ``now``).
``RateFollower`` keeps one current through the core's ``StreamReader``: at its first read it
counts the last minute of the stream, then each read takes what is new after the last id seen,
so a reader that lost Redis resumes where it stopped (nothing counted twice). ``step`` never
raises: an outage is a ``FeedRates`` in the ``DOWN`` state, with the reason.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum

from sessionmon.core.clock import Clock
from sessionmon.core.errors import SessionmonError
from sessionmon.core.event_stream import StreamReader
from sessionmon.core.events import REVOCATION_KINDS, Event, EventKind

RATE_WINDOW = 60  # seconds: the rates are per second over the last minute
HISTORY_PAGE = 1000
READ_COUNT = 1000
MAX_PAGES = 20  # per step: a step a second keeps up with 20,000 events a second

LOGINS = "logins"
REFRESHES = "refreshes"
REVOCATIONS = "revocations"
REJECTIONS = "rejections"
REJECTED = "rejected:"  # + reason: one series per rejection reason
# Rejections whose spike means an attack (forged tokens, stolen refresh tokens).
ALARMING = ("bad_signature", "refresh_reused")


def series_of(event: Event) -> tuple[str, ...]:
    """The series an event counts in (``count`` times)."""
    kind = event.kind
    if kind is EventKind.LOGIN:
        return (LOGINS,)
    if kind in (EventKind.REFRESH, EventKind.ROTATION):
        return (REFRESHES,)
    if kind in REVOCATION_KINDS:
        return (REVOCATIONS,)
    if kind is EventKind.REJECTION:
        return (REJECTIONS, REJECTED + (event.reason or "unknown"))
    return ()


@dataclass(frozen=True)
class Rates:
    """Events per second over the last ``window`` seconds; ``alarming``: how many rejections
    of the ``ALARMING`` reasons were in it."""

    logins: float
    refreshes: float
    revocations: float
    rejections: float
    alarming: int = 0
    window: int = RATE_WINDOW


class RateCounter:
    """Per-second counts of each series for the last ``window`` seconds."""

    def __init__(self, window: int = RATE_WINDOW) -> None:
        self.window = window
        self._counts: dict[int, Counter[str]] = {}

    def add(self, events: Iterable[Event], now: float) -> None:
        """Count events (those older than the window are left out)."""
        oldest = int(now) - self.window
        for e in events:
            second = int(e.at)
            if second <= oldest:
                continue
            bucket = self._counts.setdefault(second, Counter())
            for name in series_of(e):
                bucket[name] += e.count
        self.prune(now)

    def prune(self, now: float) -> None:
        oldest = int(now) - self.window
        for second in [s for s in self._counts if s <= oldest]:
            del self._counts[second]

    def total(self, name: str, now: float, seconds: int | None = None) -> int:
        """Events of ``name`` in the last ``seconds`` (default: the window) ending at ``now``
        (the current second included)."""
        end = int(now)
        start = end - (self.window if seconds is None else seconds)
        return sum(c[name] for s, c in self._counts.items() if start < s <= end)

    def buckets(self, name: str, now: float, seconds: int) -> list[int]:
        """Per-second counts of ``name`` for the ``seconds`` seconds up to ``now`` (oldest
        first; the last is the current second)."""
        end = int(now)
        empty: Counter[str] = Counter()
        return [self._counts.get(s, empty)[name] for s in range(end - seconds + 1, end + 1)]

    def names(self) -> set[str]:
        """Every series with a count in the window."""
        return {n for c in self._counts.values() for n in c}

    def rates(self, now: float) -> Rates:
        self.prune(now)
        w = self.window
        return Rates(
            logins=self.total(LOGINS, now) / w,
            refreshes=self.total(REFRESHES, now) / w,
            revocations=self.total(REVOCATIONS, now) / w,
            rejections=self.total(REJECTIONS, now) / w,
            alarming=sum(self.total(REJECTED + r, now) for r in ALARMING),
            window=w,
        )


class FeedState(Enum):
    """Whether the rates can be known."""

    STARTING = "starting"  # not read yet
    LIVE = "live"
    DOWN = "down"  # the feed cannot be read (Redis down): the rates are unknown
    OFF = "off"  # the feed is turned off (``--no-events``)


@dataclass(frozen=True)
class FeedRates:
    """What a status line shows: the state, and the rates when they are known."""

    state: FeedState
    rates: Rates | None = None
    error: str | None = None


ReaderFactory = Callable[[], tuple[StreamReader, int]]


class RateFollower:
    """Follows the feed for a ``RateCounter``. Call ``step`` from one thread at a time."""

    def __init__(
        self, open_reader: ReaderFactory, clock: Clock, *, window: int = RATE_WINDOW
    ) -> None:
        # The reader, and how long one read may wait for new events (ms; 0: not at all).
        self.open_reader = open_reader
        self.clock = clock
        self.counter = RateCounter(window)
        self.last_id: str | None = None  # None: the history is not read yet
        self.read = 0  # events counted (tests)
        self._reader: StreamReader | None = None
        self._block_ms = 1000

    def step(self) -> FeedRates:
        """One read (waiting up to the reader's block time for new events); never raises."""
        try:
            if self._reader is None:
                self._reader, self._block_ms = self.open_reader()
            reader = self._reader
            if self.last_id is None:
                events = self._history(reader)
                last = events[-1].id if events else reader.last_id()
            else:
                events, last = self._new(reader, self.last_id)
        except SessionmonError as exc:
            return FeedRates(FeedState.DOWN, error=str(exc))
        now = self.clock.now()
        self.counter.add(events, now)
        self.read += len(events)
        self.last_id = last
        return FeedRates(FeedState.LIVE, self.counter.rates(now))

    def _new(self, reader: StreamReader, last: str) -> tuple[list[Event], str]:
        """What was appended after ``last`` (up to ``MAX_PAGES`` pages: a feed busier than that
        is counted a step later), and the new last id."""
        block = self._block_ms or None  # 0: do not wait (never BLOCK 0: for ever)
        events: list[Event] = []
        for _ in range(MAX_PAGES):
            page = reader.after(last, count=READ_COUNT, block_ms=None if events else block)
            events += page
            if page:
                last = page[-1].id
            if len(page) < READ_COUNT:
                break
        return events, last

    def _history(self, reader: StreamReader) -> list[Event]:
        """The events of the last window, oldest first."""
        events = reader.since(self.clock.now() - self.counter.window, count=HISTORY_PAGE)
        page = events
        while len(page) == HISTORY_PAGE:
            page = reader.after(page[-1].id, count=HISTORY_PAGE)
            events += page
        return events
