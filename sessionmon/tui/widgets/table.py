"""A table on Textual's Line API: only the visible rows are ever drawn.

``LineTable`` is a ``ScrollView`` whose ``render_line`` draws line 0 as a fixed header and every
other line from ``row_cells(index)``, so its cost depends on the window height, not on the number of
rows (the way Toolong's ``log_lines.py`` draws huge logs). Subclasses say how many rows there are
and what is in a row; this class owns columns, widths, the cursor, scrolling and header clicks.

Headers are aligned like their values (right-aligned numbers have right-aligned headers), and every
sortable header keeps room for the sort arrow, so a change of sort never moves a title: the arrow
goes after a left-aligned title and before a right-aligned one.

When the columns do not fit, they give way by ``priority`` (lowest first): a column with a
``shrink`` width is cut down to it, then an ``optional`` one is hidden; columns that are not
optional are always shown. ``scroll_columns`` brings hidden columns back: it turns the optional
columns into a window over them in display order (``fit_columns(start=...)``) that left / right
move, while the other columns stay where they are. ``border_subtitle`` names what is hidden.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from rich.cells import cell_len, set_cell_size
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding
from textual.geometry import Region, Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

Cell = tuple[str, str | None]  # text, component class for its style (or None)


@dataclass(frozen=True)
class Column:
    """A column: fixed ``width``, or ``flex`` share of what is left (never below ``width``).

    On a narrow screen columns give way by ``priority``, lowest first: one with a ``shrink``
    width is cut down to it, then an ``optional`` one is hidden. Others are always shown.
    """

    key: str
    title: str
    width: int
    flex: int = 0
    right: bool = False
    sort: str | None = None  # the sort key a header click selects
    priority: int = 100
    optional: bool = False
    shrink: int | None = None


ARROW = 2  # a space and the ▲ / ▼ of the sorted column


def min_width(column: Column) -> int:
    """The column's width, at least its title and the room for a sort arrow."""
    title = cell_len(column.title) + (ARROW if column.sort else 0)
    return max(column.width, title)


def shrunk_width(column: Column) -> int:
    """The narrowest the column may be: its ``shrink`` width, at least its title and arrow."""
    full = min_width(column)
    if column.shrink is None:
        return full
    title = cell_len(column.title) + (ARROW if column.sort else 0)
    return min(full, max(column.shrink, title))


def column_gaps(columns: tuple[Column, ...], width: int, pad: int = 1) -> list[int]:
    """Cells between each column and the next: 2 next to a right-aligned column (whose text may
    touch its neighbour's), else 1; 1 everywhere when ``width`` has no room for that."""
    gaps = _gaps(columns, wide=True)
    if 2 * pad + sum(gaps) + sum(min_width(c) for c in columns) > width:
        return [1] * len(gaps)
    return gaps


def header_text(column: Column, sorted_as: str | None) -> str:
    """The title with the sort arrow (``sorted_as``: "▲", "▼" or None) or the room for it."""
    if column.sort is None:
        return column.title
    arrow = sorted_as or " "
    return f"{arrow} {column.title}" if column.right else f"{column.title} {arrow}"


def _gaps(columns: Sequence[Column], wide: bool) -> list[int]:
    return [2 if wide and (a.right or b.right) else 1 for a, b in pairwise(columns)]


def layout(
    columns: tuple[Column, ...], width: int, gaps: list[int] | None = None, pad: int = 1
) -> list[int]:
    """Column widths that fill ``width`` (two ``pad`` cells at the ends, ``gaps`` between)."""
    if gaps is None:
        gaps = column_gaps(columns, width, pad)
    widths = [min_width(c) for c in columns]
    _spread(columns, widths, width - 2 * pad - sum(gaps) - sum(widths))
    return widths


def _spread(columns: Sequence[Column], widths: list[int], spare: int) -> None:
    """Give ``spare`` cells to the flexible columns, by their shares."""
    flex_total = sum(c.flex for c in columns)
    if spare > 0 and flex_total:
        given = 0
        flexible = [i for i, c in enumerate(columns) if c.flex]
        for i in flexible:
            share = spare * columns[i].flex // flex_total
            widths[i] += share
            given += share
        widths[flexible[0]] += spare - given


@dataclass(frozen=True)
class Fit:
    """Which columns are shown (indexes into the table's columns), how wide, and the gaps."""

    shown: tuple[int, ...]
    widths: list[int]
    gaps: list[int]
    hidden: tuple[int, ...]


def _steps(columns: tuple[Column, ...], start: int | None) -> list[tuple[str, int]]:
    """How the columns give way, one step at a time: ``("shrink", i)`` or ``("hide", i)``.

    By priority when ``start`` is None. Otherwise the optional columns become a window that
    starts at the ``start``-th of them: the ones before it go first, then the last ones, and
    the ``start``-th itself last of all (after the columns that are always shown have shrunk).
    """

    def steps_of(i: int) -> list[tuple[str, int]]:
        c = columns[i]
        out = [("shrink", i)] if shrunk_width(c) < min_width(c) else []
        return out + ([("hide", i)] if c.optional else [])

    by_priority = sorted(range(len(columns)), key=lambda i: (columns[i].priority, i))
    if start is None:
        return [step for i in by_priority for step in steps_of(i)]
    optional = [i for i in range(len(columns)) if columns[i].optional]
    start = max(0, min(start, len(optional) - 1))
    first = optional[start]
    order = optional[:start] + optional[start + 1 :][::-1]
    steps = [step for i in order for step in steps_of(i)]
    steps += [("shrink", i) for i in by_priority if not columns[i].optional and steps_of(i)]
    return steps + steps_of(first)


def fit_columns(
    columns: tuple[Column, ...], width: int, start: int | None = None, pad: int = 1
) -> Fit:
    """The columns that fit in ``width`` and their widths (see ``_steps`` for the order in
    which they give way). Gaps of 2 beside right-aligned columns are kept while anything fits
    with them; when nothing fits at all, the last state is drawn and cut at the right edge."""
    steps = _steps(columns, start)
    for wide in (True, False):
        shown = list(range(len(columns)))
        shrinking: list[int] = []
        for k in range(len(steps) + 1):
            if k:
                what, i = steps[k - 1]
                if what == "shrink":
                    shrinking.append(i)
                else:
                    shown.remove(i)
                    if i in shrinking:
                        shrinking.remove(i)
            fit = _try_fit(columns, shown, shrinking, width, wide, pad)
            if fit is not None:
                return fit
    cols = [columns[i] for i in shown]
    widths = [shrunk_width(c) for c in cols]
    hidden = tuple(i for i in range(len(columns)) if i not in shown)
    return Fit(tuple(shown), widths, _gaps(cols, wide=False), hidden)


def _try_fit(
    columns: tuple[Column, ...],
    shown: list[int],
    shrinking: list[int],
    width: int,
    wide: bool,
    pad: int,
) -> Fit | None:
    cols = [columns[i] for i in shown]
    gaps = _gaps(cols, wide)
    widths = [min_width(c) for c in cols]
    spare = width - 2 * pad - sum(gaps) - sum(widths)
    for i in shrinking:  # the least important first
        if spare >= 0:
            break
        j = shown.index(i)
        take = min(widths[j] - shrunk_width(columns[i]), -spare)
        widths[j] -= take
        spare += take
    if spare < 0:
        return None
    _spread(cols, widths, spare)
    hidden = tuple(i for i in range(len(columns)) if i not in shown)
    return Fit(tuple(shown), widths, gaps, hidden)


def fit(text: str, width: int, right: bool = False) -> str:
    """``text`` cut (with an ellipsis) or padded to exactly ``width`` cells."""
    if width <= 0:
        return ""
    if cell_len(text) > width:
        return set_cell_size(text, width - 1) + "…"
    if right:
        return " " * (width - cell_len(text)) + text
    return set_cell_size(text, width)


class LineTable(ScrollView, can_focus=True):
    """Rows drawn on demand, a cursor row, a fixed header that sorts when clicked."""

    COMPONENT_CLASSES = {
        "line-table--header",
        "line-table--header-sorted",
        "line-table--cursor",
        "line-table--cursor-blurred",
        "line-table--placeholder",
    }

    DEFAULT_CSS = """
    LineTable {
        overflow-x: hidden;
        overflow-y: auto;
        scrollbar-gutter: stable;
        background: $surface;
    }
    LineTable > .line-table--header { color: $text-muted; text-style: bold; }
    LineTable > .line-table--header-sorted { color: $accent; text-style: bold; }
    LineTable > .line-table--cursor { background: $primary-darken-2; text-style: bold; }
    LineTable > .line-table--cursor-blurred { background: $block-cursor-blurred-background; }
    LineTable > .line-table--placeholder { color: $text-disabled; }
    """

    BINDINGS = [
        Binding("up,k", "cursor(-1)", "Up", show=False),
        Binding("down,j", "cursor(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home", "edge(0)", "First", show=False),
        Binding("end", "edge(1)", "Last", show=False),
    ]

    columns: tuple[Column, ...] = ()
    # The first column whose text moves with the clock (countdowns, "ago"): the 1 Hz tick repaints
    # the rows from it to the right edge only (``refresh_clock``). None: the whole table.
    ticking_from: str | None = None

    class CursorMoved(Message):
        """The cursor is on another row."""

        def __init__(self, table: LineTable, index: int) -> None:
            super().__init__()
            self.table = table
            self.index = index

        @property
        def control(self) -> LineTable:
            return self.table

    class HeaderClicked(Message):
        """A column header was clicked."""

        def __init__(self, table: LineTable, column: Column) -> None:
            super().__init__()
            self.table = table
            self.column = column

        @property
        def control(self) -> LineTable:
            return self.table

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._fit: Fit | None = None
        self._fit_for: tuple[int, int | None] | None = None
        # None: the columns that fit are chosen by priority. Else the optional columns are a
        # window starting at the ``column_start``-th of them (``scroll_columns``).
        self.column_start: int | None = None

    # -- what subclasses provide (checked when a subclass is defined) -------------------------

    SUBCLASS_PROVIDES = ("row_count", "cursor", "set_cursor", "row_cells", "now")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        missing = [
            n for n in LineTable.SUBCLASS_PROVIDES if getattr(cls, n) is getattr(LineTable, n)
        ]
        if missing:
            raise TypeError(f"{cls.__name__} must define {', '.join(missing)}")

    @property
    def row_count(self) -> int:
        """How many rows the table has."""
        return 0

    @property
    def cursor(self) -> int:
        """The index of the cursor row."""
        return 0

    def set_cursor(self, index: int) -> None:
        """Move the cursor to ``index`` (subclasses keep the identity of the row)."""

    def row_cells(self, index: int, now: float) -> list[Cell] | None:
        """The cells of row ``index``; None when the row is not loaded yet."""
        return None

    def now(self) -> float:
        """The time the rows are drawn at (the table's clock)."""
        return 0.0

    def sorted_column(self) -> tuple[str | None, bool]:
        """The sort key shown in the header and whether it is descending."""
        return None, False

    # -- geometry ---------------------------------------------------------------------------

    @property
    def page_height(self) -> int:
        """Rows visible below the header."""
        return max(1, self.scrollable_content_region.height - 1)

    @property
    def top(self) -> int:
        """Index of the first visible row."""
        return int(self.scroll_offset.y)

    def fit(self) -> Fit:
        """The columns shown at the current width, and their widths."""
        key = (self.scrollable_content_region.width, self.column_start)
        if self._fit is None or self._fit_for != key:
            self._fit = fit_columns(self.columns, key[0], self.column_start)
            self._fit_for = key
        return self._fit

    def widths(self) -> list[int]:
        """The widths of the shown columns."""
        return self.fit().widths

    @property
    def gaps(self) -> list[int]:
        """Cells between each shown column and the next."""
        return self.fit().gaps

    @property
    def shown_columns(self) -> list[Column]:
        return [self.columns[i] for i in self.fit().shown]

    @property
    def hidden_columns(self) -> list[Column]:
        return [self.columns[i] for i in self.fit().hidden]

    def scroll_columns(self, direction: int) -> bool:
        """Show the hidden columns to the right (``direction`` 1) or left (-1) of the optional
        columns shown, one column at a time; the others stay. False when there is none."""
        fit = self.fit()
        optional = [i for i, c in enumerate(self.columns) if c.optional]
        shown = [optional.index(i) for i in fit.shown if i in optional]
        if not fit.hidden or not shown:
            return False
        if self.column_start is not None:
            if direction > 0 and shown[-1] == len(optional) - 1:
                return False  # the last one is in view
            if direction < 0 and shown[0] == 0:
                return False
        start = max(0, min(shown[0] + (1 if direction > 0 else -1), len(optional) - 1))
        before = fit.shown
        self.column_start = start
        if self.fit().shown == before:
            return False
        self.show_hidden_columns()
        self.refresh()
        return True

    def show_hidden_columns(self) -> None:
        """Say in the bottom border which columns are hidden (nothing when none is)."""
        hidden = self.hidden_columns
        text = ""
        if hidden:
            text = f"hidden: {', '.join(c.title for c in hidden)} · ← → scroll"
        if self.border_subtitle != text:
            self.border_subtitle = text

    def update_size(self) -> None:
        """Tell the scroll machinery how many rows there are (one line more for the header)."""
        self.virtual_size = Size(self.scrollable_content_region.width, self.row_count + 1)

    def on_resize(self, event: events.Resize) -> None:
        if self.column_start is not None:
            width = self.scrollable_content_region.width
            if not fit_columns(self.columns, width).hidden:
                self.column_start = None  # everything fits again: back to the priorities
        self.show_hidden_columns()
        self.update_size()
        self.scroll_cursor_visible()

    def scroll_cursor_visible(self) -> None:
        cursor, top, height = self.cursor, self.top, self.page_height
        if cursor < top:
            self.scroll_to(y=cursor, animate=False, immediate=True)
        elif cursor >= top + height:
            self.scroll_to(y=cursor - height + 1, animate=False, immediate=True)

    def refresh_clock(self) -> None:
        """Repaint what a new second changes: the rows' cells from ``ticking_from`` on."""
        keys = [c.key for c in self.columns]
        if self.ticking_from not in keys:
            self.refresh()
            return
        first = keys.index(self.ticking_from)
        fit = self.fit()
        # The first shown column from ``ticking_from`` on.
        i = next((n for n, c in enumerate(fit.shown) if c >= first), len(fit.shown))
        widths, gaps = fit.widths, fit.gaps
        x = 1 + sum(widths[:i]) + sum(gaps[:i])
        width = self.scrollable_content_region.width
        if x < width:
            self.refresh(Region(x, 1, width - x, self.page_height))

    def cursor_on_screen(self, cursor: int, top: int) -> bool:
        """Whether row ``cursor`` is visible when row ``top`` is the first one shown."""
        return top <= cursor < top + self.page_height

    def keep_cursor_on_screen_row(self, old_cursor: int, old_top: int) -> None:
        """After the rows changed, keep the cursor on the same screen line if possible; a view
        scrolled away from the cursor (after a sort change, with the mouse wheel) stays put."""
        if not self.cursor_on_screen(old_cursor, old_top):
            self.scroll_to(y=old_top, animate=False, immediate=True)
            return
        offset = old_cursor - old_top
        self.scroll_to(y=max(0, self.cursor - offset), animate=False, immediate=True)
        self.scroll_cursor_visible()

    # -- drawing ----------------------------------------------------------------------------

    def _cell_style(self, name: str | None) -> Style:
        if not name:
            return Style()
        return self.get_component_rich_style(name, partial=True, default=Style())

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        base = self.rich_style
        if y == 0:
            return self._header_line(width, base)
        index = self.top + y - 1
        if index >= self.row_count:
            return Strip.blank(width, base)
        cells = self.row_cells(index, self.now())
        row_style = base
        if index == self.cursor:
            cursor_class = "line-table--cursor" if self.has_focus else "line-table--cursor-blurred"
            row_style = base + self._cell_style(cursor_class)
        if cells is None:
            text = fit("  loading…", width)
            style = row_style + self._cell_style("line-table--placeholder")
            return Strip([Segment(text, style)], width)
        return self._line(cells, width, row_style)

    def _line(self, cells: list[Cell], width: int, row_style: Style) -> Strip:
        segments = [Segment(" ", row_style)]
        shown = self.fit()
        for n, (i, col_width) in enumerate(zip(shown.shown, shown.widths, strict=True)):
            if n:
                segments.append(Segment(" " * shown.gaps[n - 1], row_style))
            text, style_name = cells[i] if i < len(cells) else ("", None)
            style = row_style + self._cell_style(style_name)
            segments.append(Segment(fit(text, col_width, self.columns[i].right), style))
        return Strip(segments).adjust_cell_length(width, row_style)

    def _header_line(self, width: int, base: Style) -> Strip:
        sort, descending = self.sorted_column()
        plain = base + self._cell_style("line-table--header")
        sorted_style = base + self._cell_style("line-table--header-sorted")
        segments = [Segment(" ", base)]
        shown = self.fit()
        for n, (i, col_width) in enumerate(zip(shown.shown, shown.widths, strict=True)):
            column = self.columns[i]
            if n:
                segments.append(Segment(" " * shown.gaps[n - 1], base))
            arrow = None
            style = plain
            if column.sort is not None and column.sort == sort:
                arrow = "▼" if descending else "▲"
                style = sorted_style
            title = header_text(column, arrow)
            segments.append(Segment(fit(title, col_width, column.right), style))
        return Strip(segments).adjust_cell_length(width, base)

    # -- input ------------------------------------------------------------------------------

    def column_at(self, x: int) -> Column | None:
        pos = 1
        widths, gaps = self.widths(), self.gaps
        for i, (column, width) in enumerate(zip(self.shown_columns, widths, strict=True)):
            gap = gaps[i] if i < len(gaps) else 1
            if pos <= x < pos + width + gap:
                return column
            pos += width + gap
        return None

    async def on_click(self, event: events.Click) -> None:
        if event.y == 0:
            column = self.column_at(event.x)
            if column is not None and column.sort is not None:
                self.post_message(self.HeaderClicked(self, column))
            return
        index = self.top + event.y - 1
        if 0 <= index < self.row_count:
            self.move_cursor(index)

    def move_cursor(self, index: int) -> None:
        if not self.row_count:
            return
        index = max(0, min(index, self.row_count - 1))
        before = self.cursor
        self.set_cursor(index)
        self.scroll_cursor_visible()
        self.refresh()
        if self.cursor != before:
            self.post_message(self.CursorMoved(self, self.cursor))

    def show_top(self) -> None:
        """Scroll to the first rows; the cursor stays on its row, even if that is off screen
        now (after a sort change: the top of the new order is what the operator wants to see)."""
        self.scroll_to(y=0, animate=False, immediate=True)
        self.refresh()

    def action_cursor(self, delta: int) -> None:
        self.move_cursor(self.cursor + delta)

    def action_page(self, direction: int) -> None:
        self.move_cursor(self.cursor + direction * self.page_height)

    def action_edge(self, end: int) -> None:
        self.move_cursor(self.row_count - 1 if end else 0)

    def on_focus(self) -> None:
        self.refresh()

    def on_blur(self) -> None:
        self.refresh()
