"""The blacklist view: keys ordered by expiry, read one window at a time from the Redis index.

The poller reads ``ZRANGE`` around the scroll position (plus the key count), so the view costs the
same at a thousand keys as at a million. TTL countdowns are computed at render time from each
key's expiry time.
"""

from __future__ import annotations

from textual.message import Message

from sessionmon.core.blacklist import BlacklistEntry
from sessionmon.core.clock import Clock
from sessionmon.tui.format import clock_time, countdown, short_id
from sessionmon.tui.poller import BlacklistResult
from sessionmon.tui.widgets.table import Cell, Column, LineTable

COLUMNS = (
    Column("kind", "kind", 8),
    Column("email", "subject", 18, flex=3),
    Column("sid", "session", 8),
    Column("reason", "reason", 12, flex=2),
    Column("actor", "actor", 14),
    Column("revoked", "revoked at", 10),
    Column("ttl", "ttl", 9, right=True, sort="expiry"),
)

WINDOW = 300  # keys per page read from Redis
MARGIN = 100  # keys read above the first visible one


class BlacklistTable(LineTable):
    """Blacklist keys with TTL countdowns, ordered by expiry."""

    COMPONENT_CLASSES = LineTable.COMPONENT_CLASSES | {
        "countdown--plenty",
        "countdown--low",
        "countdown--critical",
        "countdown--expired",
        "kind--session",
        "kind--token",
        "blacklist--dim",
    }

    DEFAULT_CSS = """
    BlacklistTable > .countdown--plenty { color: $success; }
    BlacklistTable > .countdown--low { color: $warning; }
    BlacklistTable > .countdown--critical { color: $error; text-style: bold; }
    BlacklistTable > .countdown--expired { color: $error 70%; }
    BlacklistTable > .kind--session { color: $accent; }
    BlacklistTable > .kind--token { color: $text; }
    BlacklistTable > .blacklist--dim { color: $text-muted; }
    """

    columns = COLUMNS

    class WindowWanted(Message):
        """The view scrolled outside the keys it holds."""

        def __init__(self, offset: int) -> None:
            super().__init__()
            self.offset = offset

    def __init__(self, clock: Clock, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.clock = clock
        self.count = 0
        self.window_start = 0
        self.entries: list[BlacklistEntry] = []
        self.descending = False
        self.stale = False
        self.loaded = False
        self._cursor = 0
        self._cursor_key: str | None = None
        self._wanted: int | None = None

    @property
    def row_count(self) -> int:
        return self.count

    @property
    def cursor(self) -> int:
        return self._cursor

    def set_cursor(self, index: int) -> None:
        self._cursor = index
        entry = self.entry_at(index)
        self._cursor_key = entry.key if entry else None

    def now(self) -> float:
        return self.clock.now()

    def sorted_column(self) -> tuple[str | None, bool]:
        return "expiry", self.descending

    @property
    def wanted_offset(self) -> int:
        """Where the next page should start so that the visible rows are inside it."""
        return max(0, self.top - MARGIN)

    def apply(self, result: BlacklistResult) -> None:
        """Show a new window of keys; the cursor follows its key when it is still there."""
        self.count = result.count
        self.window_start = result.offset
        self.entries = result.entries
        self.descending = result.descending
        self.stale = False
        self.loaded = True
        self._wanted = None
        if self._cursor_key is not None:
            for i, entry in enumerate(self.entries):
                if entry.key == self._cursor_key:
                    self._cursor = self.window_start + i
                    break
        self._cursor = max(0, min(self._cursor, self.count - 1))
        self.update_size()
        self.scroll_cursor_visible()
        self.refresh()

    def mark_stale(self) -> None:
        if not self.stale:
            self.stale = True
            self.refresh()

    def entry_at(self, index: int) -> BlacklistEntry | None:
        i = index - self.window_start
        if 0 <= i < len(self.entries):
            return self.entries[i]
        return None

    def row_cells(self, index: int, now: float) -> list[Cell] | None:
        entry = self.entry_at(index)
        if entry is None:
            wanted = self.wanted_offset
            if self._wanted != wanted and not self.stale:
                self._wanted = wanted
                self.post_message(self.WindowWanted(wanted))
            return None
        life = None
        if entry.revoked_at is not None:
            life = entry.expires_at - entry.revoked_at
        ttl, level = countdown(entry.expires_at, now, life)
        kind_style = "kind--session" if entry.kind == "session" else "kind--token"
        dim = "blacklist--dim"
        return [
            (entry.kind, kind_style),
            (entry.email or entry.sub or "-", None),
            (short_id(entry.sid), dim),
            (entry.reason or "-", None if entry.reason else dim),
            (entry.actor or "-", None),
            (clock_time(entry.revoked_at), dim),
            (ttl, f"countdown--{level}"),
        ]

    def title(self) -> str:
        order = "expiring last first" if self.descending else "expiring first"
        text = f"Blacklist · {self.count:,} keys · {order}"
        if self.stale:
            text += " · STALE (Redis unreachable)"
        return text
