"""The activity view's model: the recent feed and per-second counts for the sparklines and rates.

Plain Python (no Textual, no Redis): the screen feeds it the events its worker read through the
core's ``StreamReader`` and asks it what to draw for a given ``now`` (the app's clock). Which
series an event counts in is the core's (``core.event_rates``, shared with the status bar).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sessionmon.core.event_rates import (
    ALARMING,
    LOGINS,
    REFRESHES,
    REJECTED,
    REJECTIONS,
    REVOCATIONS,
    RateCounter,
)
from sessionmon.core.events import Event, EventKind

WINDOW = 300  # seconds of history in the sparklines (5 minutes)
RATE_WINDOW = 10  # the rates in the status line: events per second over the last 10 s
FEED_SIZE = 2000  # events kept for the feed (the filter applies to these)

__all__ = [
    "ALARMING",
    "FEED_SIZE",
    "LOGINS",
    "RATE_WINDOW",
    "REFRESHES",
    "REJECTED",
    "REJECTIONS",
    "REVOCATIONS",
    "WINDOW",
    "ActivityModel",
    "FeedFilter",
]


@dataclass(frozen=True)
class FeedFilter:
    """Which events the feed shows: one kind (or all) and a user (email or id, a substring)."""

    kind: EventKind | None = None
    user: str = ""

    def matches(self, e: Event) -> bool:
        if self.kind is not None and e.kind is not self.kind:
            return False
        if self.user:
            needle = self.user.lower()
            return any(needle in (v or "").lower() for v in (e.email, e.user_id))
        return True

    def describe(self) -> str:
        parts = [
            f"kind {self.kind.value}" if self.kind else "",
            f"user ~ {self.user!r}" * bool(self.user),
        ]
        return ", ".join(p for p in parts if p) or "all events"


class ActivityModel:
    """The last ``FEED_SIZE`` events and the last ``WINDOW`` seconds of counts."""

    def __init__(self) -> None:
        self.feed: deque[Event] = deque(maxlen=FEED_SIZE)
        self._counter = RateCounter(WINDOW)
        self.last_id = ""  # the stream id of the newest event seen ("": none yet)
        self.seen = 0

    def add(self, events: Iterable[Event], now: float) -> None:
        """Take events read from the feed (oldest first); older than the window only feed the
        list."""
        events = list(events)
        for e in events:
            self.feed.append(e)
            self.seen += 1
            if e.id:
                self.last_id = e.id
        self._counter.add(events, now)

    def prune(self, now: float) -> None:
        self._counter.prune(now)

    def buckets(self, name: str, now: float, seconds: int = WINDOW) -> list[int]:
        """Per-second counts of ``name`` for the ``seconds`` seconds up to ``now`` (oldest
        first; the last is the current second)."""
        return self._counter.buckets(name, now, seconds)

    def total(self, name: str, now: float, seconds: int = WINDOW) -> int:
        return self._counter.total(name, now, seconds)

    def rate(self, name: str, now: float, seconds: int = RATE_WINDOW) -> float:
        """Events per second of ``name`` over the last ``seconds`` seconds."""
        return self.total(name, now, seconds) / seconds

    def reasons(self, now: float) -> list[str]:
        """Rejection reasons to draw: the alarming ones always, then any seen in the window."""
        seen = {n.removeprefix(REJECTED) for n in self._counter.names() if n.startswith(REJECTED)}
        return list(ALARMING) + sorted(seen - set(ALARMING))

    def alarms(self, now: float, seconds: int = 60) -> list[tuple[str, int]]:
        """The alarming rejections of the last ``seconds`` seconds, with their counts."""
        out = []
        for reason in ALARMING:
            n = self.total(REJECTED + reason, now, seconds)
            if n:
                out.append((reason, n))
        return out

    def matching(self, f: FeedFilter, limit: int | None = None) -> Sequence[Event]:
        rows = [e for e in self.feed if f.matches(e)]
        return rows[-limit:] if limit else rows
