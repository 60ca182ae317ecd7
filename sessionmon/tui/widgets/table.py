"""A table on Textual's Line API: only the visible rows are ever drawn.

``LineTable`` is a ``ScrollView`` whose ``render_line`` draws line 0 as a fixed header and every
other line from ``row_cells(index)``, so its cost depends on the window height, not on the number of
rows (the way Toolong's ``log_lines.py`` draws huge logs). Subclasses say how many rows there are
and what is in a row; this class owns columns, widths, the cursor, scrolling and header clicks.

Headers are aligned like their values (right-aligned numbers have right-aligned headers), and every
sortable header keeps room for the sort arrow, so a change of sort never moves a title: the arrow
goes after a left-aligned title and before a right-aligned one.
"""

from __future__ import annotations

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
    """A column: fixed ``width``, or ``flex`` share of what is left (never below ``width``)."""

    key: str
    title: str
    width: int
    flex: int = 0
    right: bool = False
    sort: str | None = None  # the sort key a header click selects


ARROW = 2  # a space and the ▲ / ▼ of the sorted column


def min_width(column: Column) -> int:
    """The column's width, at least its title and the room for a sort arrow."""
    title = cell_len(column.title) + (ARROW if column.sort else 0)
    return max(column.width, title)


def column_gaps(columns: tuple[Column, ...], width: int, pad: int = 1) -> list[int]:
    """Cells between each column and the next: 2 next to a right-aligned column (whose text may
    touch its neighbour's), else 1; 1 everywhere when ``width`` has no room for that."""
    gaps = [2 if a.right or b.right else 1 for a, b in pairwise(columns)]
    if 2 * pad + sum(gaps) + sum(min_width(c) for c in columns) > width:
        return [1] * len(gaps)
    return gaps


def header_text(column: Column, sorted_as: str | None) -> str:
    """The title with the sort arrow (``sorted_as``: "▲", "▼" or None) or the room for it."""
    if column.sort is None:
        return column.title
    arrow = sorted_as or " "
    return f"{arrow} {column.title}" if column.right else f"{column.title} {arrow}"


def layout(
    columns: tuple[Column, ...], width: int, gaps: list[int] | None = None, pad: int = 1
) -> list[int]:
    """Column widths that fill ``width`` (two ``pad`` cells at the ends, ``gaps`` between)."""
    if gaps is None:
        gaps = column_gaps(columns, width, pad)
    widths = [min_width(c) for c in columns]
    spare = width - 2 * pad - sum(gaps) - sum(widths)
    flex_total = sum(c.flex for c in columns)
    if spare > 0 and flex_total:
        given = 0
        flexible = [i for i, c in enumerate(columns) if c.flex]
        for i in flexible:
            share = spare * columns[i].flex // flex_total
            widths[i] += share
            given += share
        widths[flexible[0]] += spare - given
    return widths


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
        self._widths: list[int] = []
        self._widths_for = -1
        self._gaps: list[int] = []

    # -- what subclasses provide (checked when a subclass is defined) -------------------------

    SUBCLASS_PROVIDES = ("row_count", "cursor", "set_cursor", "row_cells")

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
        raise NotImplementedError

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

    def widths(self) -> list[int]:
        width = self.scrollable_content_region.width
        if width != self._widths_for:
            self._gaps = column_gaps(self.columns, width)
            self._widths = layout(self.columns, width, self._gaps)
            self._widths_for = width
        return self._widths

    @property
    def gaps(self) -> list[int]:
        """Cells between each column and the next."""
        self.widths()
        return self._gaps

    def update_size(self) -> None:
        """Tell the scroll machinery how many rows there are (one line more for the header)."""
        self.virtual_size = Size(self.scrollable_content_region.width, self.row_count + 1)

    def on_resize(self, event: events.Resize) -> None:
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
        i = keys.index(self.ticking_from)
        widths, gaps = self.widths(), self.gaps
        x = 1 + sum(widths[:i]) + sum(gaps[:i])
        width = self.scrollable_content_region.width
        if x < width:
            self.refresh(Region(x, 1, width - x, self.page_height))

    def keep_cursor_on_screen_row(self, old_cursor: int, old_top: int) -> None:
        """After the rows changed, keep the cursor on the same screen line if possible."""
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
        gaps = self.gaps
        for i, ((text, style_name), col_width) in enumerate(
            zip(cells, self.widths(), strict=False)
        ):
            if i:
                segments.append(Segment(" " * gaps[i - 1], row_style))
            column = self.columns[i]
            style = row_style + self._cell_style(style_name)
            segments.append(Segment(fit(text, col_width, column.right), style))
        return Strip(segments).adjust_cell_length(width, row_style)

    def _header_line(self, width: int, base: Style) -> Strip:
        sort, descending = self.sorted_column()
        plain = base + self._cell_style("line-table--header")
        sorted_style = base + self._cell_style("line-table--header-sorted")
        segments = [Segment(" ", base)]
        gaps = self.gaps
        for i, (column, col_width) in enumerate(zip(self.columns, self.widths(), strict=False)):
            if i:
                segments.append(Segment(" " * gaps[i - 1], base))
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
        for i, (column, width) in enumerate(zip(self.columns, widths, strict=False)):
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
