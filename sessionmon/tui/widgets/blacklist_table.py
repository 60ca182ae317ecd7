"""The blacklist view: keys ordered by expiry, read one window at a time from the Redis index.

The poller reads ``ZRANGE`` around the scroll position (plus the key count), so the view costs the
same at a thousand keys as at a million. TTL countdowns are computed at render time from each
key's expiry time. With a filter the view shows the matches a search over the whole index found
(``blacklist_search``), held in memory (at most ``blacklist_search.CAP``).
"""

from __future__ import annotations

from textual.message import Message

from sessionmon.core.blacklist import BlacklistEntry
from sessionmon.core.blacklist_search import SearchResult
from sessionmon.core.clock import Clock
from sessionmon.tui.format import clock_time, countdown, plural, short_id
from sessionmon.tui.poller import BlacklistResult
from sessionmon.tui.widgets.levels import LEVEL_CLASSES, level_css
from sessionmon.tui.widgets.table import Cell, Column, LineTable

# On a narrow screen kind, subject and ttl always stay; "revoked at" goes first, then the actor
# and the reason shrink, the actor goes, then the session and the reason; the subject shrinks.
COLUMNS = (
    Column("kind", "kind", 8),
    Column("email", "subject", 18, flex=3, priority=60, shrink=14),
    Column("sid", "session", 8, priority=40, optional=True),
    Column("reason", "reason", 12, flex=2, priority=50, optional=True, shrink=8),
    Column("actor", "actor", 14, priority=20, optional=True, shrink=8),
    Column("revoked", "revoked at", 10, priority=10, optional=True),
    Column("ttl", "ttl", 9, right=True, sort="expiry"),
)

WINDOW = 300  # keys per page read from Redis
MARGIN = 100  # keys read above the first visible one


class BlacklistTable(LineTable):
    """Blacklist keys with TTL countdowns, ordered by expiry."""

    COMPONENT_CLASSES = (
        LineTable.COMPONENT_CLASSES
        | LEVEL_CLASSES
        | {
            "kind--session",
            "kind--token",
            "blacklist--dim",
        }
    )

    DEFAULT_CSS = (
        level_css("BlacklistTable")
        + """
    BlacklistTable > .kind--session { color: $accent; }
    BlacklistTable > .kind--token { color: $text; }
    BlacklistTable > .blacklist--dim { color: $text-muted; }
    """
    )

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
        # After a reverse: the order whose first window is shown from the top.
        self._top_for: bool | None = None
        # The filter: its text, what the last search found (None until the first one is in),
        # and how far a running search has got (scanned, total, found).
        self.filter_text = ""
        self.search: SearchResult | None = None
        self.matches: list[BlacklistEntry] = []
        self.progress: tuple[int, int, int] | None = None

    @property
    def filtered(self) -> bool:
        """True while a filter is set: the rows are the matches of a search, not the window."""
        return bool(self.filter_text.strip())

    @property
    def row_count(self) -> int:
        return len(self.matches) if self.filtered else self.count

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
    def wants_window(self) -> bool:
        """True when rows on screen are outside the keys held (or none were read yet)."""
        return not self.loaded or self._wanted is not None

    @property
    def wanted_offset(self) -> int:
        """Where the next page should start so that the visible rows are inside it."""
        return max(0, self.top - MARGIN)

    def apply(self, result: BlacklistResult) -> None:
        """Show a new window of keys; the cursor follows its key when it is still there."""
        self.count = result.count
        self.window_start = result.offset
        self.entries = result.entries
        self.stale = False
        self.loaded = True
        self._wanted = None
        if self.filtered:
            self.refresh()  # the rows are the matches; only the count in the title changed
            return
        self.descending = result.descending
        self._follow_cursor(self.entries, self.window_start)
        if self._top_for is not None and result.descending == self._top_for:
            self._top_for = None
            self.show_top()

    def show_top_of_new_order(self) -> None:
        """After a reverse: show the first rows of the new order (the matches are re-sorted at
        once; the window comes with the next poll). The cursor stays on its key."""
        if self.filtered:
            self.show_top()
        else:
            self._top_for = self.descending

    def _follow_cursor(self, entries: list[BlacklistEntry], start: int) -> None:
        on_screen = self.cursor_on_screen(self._cursor, self.top)
        if self._cursor_key is not None:
            for i, entry in enumerate(entries):
                if entry.key == self._cursor_key:
                    self._cursor = start + i
                    break
        self._cursor = max(0, min(self._cursor, self.row_count - 1))
        current = self.entry_at(self._cursor)
        self._cursor_key = current.key if current else self._cursor_key
        self.update_size()
        if on_screen:
            self.scroll_cursor_visible()
        self.refresh()

    # -- the filter -------------------------------------------------------------------------

    def set_filter(self, text: str) -> None:
        """Filter by ``text`` (empty: back to the window); matches come with ``apply_search``."""
        if text == self.filter_text:
            return
        self.filter_text = text
        self.search = None
        self.matches = []
        self.progress = None
        self._cursor = 0
        self.update_size()
        self.scroll_to(y=0, animate=False, immediate=True)
        if not self.filtered:
            self._follow_cursor(self.entries, self.window_start)
        self.refresh()

    def show_progress(self, text: str, scanned: int, total: int, found: int) -> None:
        """A search for ``text`` is under way."""
        if text == self.filter_text:
            self.progress = (scanned, total, found)

    def apply_search(self, result: SearchResult) -> None:
        """Show what a search found (a failed one keeps the matches shown before)."""
        if result.text != self.filter_text:
            return  # the filter changed meanwhile
        self.progress = None
        if result.error is not None and self.search is not None:
            self.search = result
            self.stale = True
            self.refresh()
            return
        self.search = result
        self.stale = result.error is not None
        self.matches = self._ordered(result.entries)
        self._follow_cursor(self.matches, 0)

    def _ordered(self, entries: list[BlacklistEntry]) -> list[BlacklistEntry]:
        return sorted(entries, key=lambda e: (e.expires_at, e.key), reverse=self.descending)

    def set_descending(self, descending: bool) -> None:
        """Reverse the order now (the matches in memory; the window with the next poll)."""
        self.descending = descending
        if self.filtered:
            self.matches = self._ordered(self.matches)
            self._follow_cursor(self.matches, 0)

    def prune(self, now: float) -> None:
        """Drop matches that have expired (Redis has dropped their keys)."""
        if self.filtered and any(e.expires_at <= now for e in self.matches):
            self.matches = [e for e in self.matches if e.expires_at > now]
            self._follow_cursor(self.matches, 0)

    def mark_stale(self) -> None:
        if not self.stale:
            self.stale = True
            self.refresh()

    def entry_at(self, index: int) -> BlacklistEntry | None:
        if self.filtered:
            return self.matches[index] if 0 <= index < len(self.matches) else None
        i = index - self.window_start
        if 0 <= i < len(self.entries):
            return self.entries[i]
        return None

    def row_cells(self, index: int, now: float) -> list[Cell] | None:
        entry = self.entry_at(index)
        if entry is None:
            wanted = self.wanted_offset
            if self._wanted != wanted and not self.stale and not self.filtered:
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
        """``Blacklist · 9 keys · expiring first``; with a filter, what the search found."""
        order = "expiring last first" if self.descending else "expiring first"
        if not self.filtered:
            text = f"Blacklist · {plural(self.count, 'key')} · {order}"
        else:
            text = f"Blacklist · {self._search_summary()} · {order}"
        if self.stale:
            text += " · STALE (Redis unreachable)"
        return text

    def _search_summary(self) -> str:
        head = f'filter "{self.filter_text.strip()}": '
        result = self.search
        if result is None:
            scanned, total, _ = self.progress or (0, self.count, 0)
            return head + f"searching… {scanned:,} of {plural(total, 'key')} read"
        if result.error is not None and not self.matches:
            return head + "search failed"
        if result.capped:
            return head + f"first {len(result.entries):,} matches (search stopped there)"
        return head + f"{len(self.matches):,} of {plural(result.total, 'key')}"
