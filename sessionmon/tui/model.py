"""The sessions view's model: row ids in view order, the cursor (kept on the same session), marks.

No Textual here. At a million sessions the order is one ``array('q')`` of row keys (8 MB);
finding where the cursor's session went after a reload is a ``bytes.find`` over that array. The
order may still be filling (``store.Order``): positions not read yet hold 0, and the query the
model hands out names the cursor's row (``ViewQuery.around``) so the reader reads it first.
"""

from __future__ import annotations

import dataclasses
import struct
from array import array
from collections.abc import Iterable

from sessionmon.core.store import SORT_CYCLE, Order, ViewQuery

_PACK = struct.Struct("q")


def find_rowid(order: array, rowid: int) -> int:
    """Index of ``rowid`` in ``order`` or -1, at memory speed (no Python loop over the array);
    at once for the row a new ``Order`` was read around (``Order.anchor``)."""
    hint = getattr(order, "anchor", None)
    if hint is not None and hint[0] == rowid and 0 <= hint[1] < len(order):
        at = int(hint[1])
        if order[at] == rowid:
            return at
    data = order.tobytes()
    needle = _PACK.pack(rowid)
    start = data.find(needle)
    while start != -1 and start % _PACK.size:
        start = data.find(needle, start + 1)
    return -1 if start == -1 else start // _PACK.size


class SessionList:
    """Which sessions the view shows, in which order, where the cursor is, which are marked."""

    def __init__(self, query: ViewQuery | None = None) -> None:
        self._query = query or ViewQuery()
        self.order: array = array("q")
        self.cursor = 0
        self.cursor_rowid: int | None = None
        self.marks: dict[str, str] = {}  # session id -> email, captured when marked
        self.loaded = False
        # The cursor's session when a filling order did not have it yet: looked up when complete.
        self._lost_rowid: int | None = None

    @property
    def query(self) -> ViewQuery:
        """The current query, naming the cursor's row so a reload reads around it first."""
        rowid = self._lost_rowid or self.cursor_rowid
        if self._query.around == rowid:
            return self._query
        return dataclasses.replace(self._query, around=rowid)

    @query.setter
    def query(self, query: ViewQuery) -> None:
        self._query = query

    def __len__(self) -> int:
        return len(self.order)

    @property
    def complete(self) -> bool:
        """False while the order is still being filled."""
        return not isinstance(self.order, Order) or self.order.complete

    @property
    def estimated(self) -> bool:
        """True while the order's length and the cursor's position are estimates (the exact
        order follows: ``Order.when_exact``)."""
        return isinstance(self.order, Order) and self.order.estimated

    def rowid_at(self, index: int) -> int | None:
        """The row id at ``index``; None outside the order or where it is not read yet."""
        if 0 <= index < len(self.order):
            return self.order[index] or None
        return None

    def set_order(self, order: array, query: ViewQuery | None = None) -> None:
        """Replace the order; the cursor stays on its session, else at the same position.

        ``query`` is the query the order was read for. It never replaces the current one: the
        operator may have changed the sort or filter while that poll ran, and the reload of the
        new query follows (until then these rows are shown, as after any change of the query).
        """
        self.order = order
        self.loaded = True
        wanted = self._lost_rowid or self.cursor_rowid
        self._lost_rowid = None
        if not order:
            self.cursor, self.cursor_rowid = 0, None
            return
        index = -1 if wanted is None else find_rowid(order, wanted)
        if index < 0:
            if wanted is not None and isinstance(order, Order) and not order.complete:
                self._lost_rowid = wanted  # maybe further down: look again when it is complete
            index = min(self.cursor, len(order) - 1)
        self.cursor = index
        self.cursor_rowid = self.rowid_at(index)

    def order_completed(self, order: array) -> bool:
        """The filling ``order`` is complete: find the cursor's session if it was not in yet.

        Returns True when the cursor moved to it.
        """
        if order is not self.order:
            return False
        wanted, self._lost_rowid = self._lost_rowid, None
        if wanted is not None:
            index = find_rowid(order, wanted)
            if index >= 0:
                self.cursor, self.cursor_rowid = index, wanted
                return True
        self.cursor_rowid = self.rowid_at(self.cursor)
        return False

    def move_to(self, index: int) -> bool:
        """Put the cursor on ``index`` (clamped); True if it moved."""
        if not self.order:
            return False
        index = max(0, min(index, len(self.order) - 1))
        rowid = self.rowid_at(index)
        moved = index != self.cursor or self.cursor_rowid != rowid
        self.cursor = index
        self.cursor_rowid = rowid
        self._lost_rowid = None  # the operator moved on
        return moved

    # -- query ----------------------------------------------------------------------------------

    def next_sort(self) -> ViewQuery:
        """The query with the next sort column (in its natural direction)."""
        i = SORT_CYCLE.index(self.query.sort)
        return ViewQuery(SORT_CYCLE[(i + 1) % len(SORT_CYCLE)], False, self.query.text)

    def reversed_sort(self) -> ViewQuery:
        return ViewQuery(self.query.sort, not self.query.reverse, self.query.text)

    def sorted_by(self, sort: str) -> ViewQuery:
        """Sort by ``sort``; the same column again reverses it (a header click)."""
        if sort == self.query.sort:
            return self.reversed_sort()
        return ViewQuery(sort, False, self.query.text)

    def filtered(self, text: str) -> ViewQuery:
        return ViewQuery(self.query.sort, self.query.reverse, text)

    # -- marks ----------------------------------------------------------------------------------

    def toggle_mark(self, session_id: str, email: str | None) -> bool:
        """Mark or unmark; returns True when now marked."""
        if session_id in self.marks:
            del self.marks[session_id]
            return False
        self.marks[session_id] = email or ""
        return True

    def unmark(self, session_ids: Iterable[str]) -> None:
        for sid in session_ids:
            self.marks.pop(sid, None)
