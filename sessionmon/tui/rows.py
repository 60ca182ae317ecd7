"""The sessions view's rows in memory: what ``render_line`` draws from, filled off the UI thread.

No Textual here. Rows arrive with each poll (the window around the top and the cursor) and from
row fetches the table asks for while scrolling; drawing only ever reads this cache. Every new
order starts a generation: a row read for an older one is still drawn (no flicker) but read
again. The cache is bounded: past ``limit`` rows, those of older generations go first.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from sessionmon.core.store import Session

GONE = object()  # the row key's session was deleted after the order was read


class RowCache:
    """Sessions by row key, each with the generation it was read in."""

    def __init__(self, limit: int = 4096) -> None:
        self.limit = limit
        self.generation = 0
        self._rows: dict[int, tuple[int, object]] = {}

    def __len__(self) -> int:
        return len(self._rows)

    def new_generation(self) -> int:
        """A new order is shown: every cached row is read again when it is next drawn."""
        self.generation += 1
        return self.generation

    def get(self, key: int) -> object | None:
        """The ``Session``, ``GONE``, or None when the row was never read."""
        entry = self._rows.get(key)
        return None if entry is None else entry[1]

    def fresh(self, key: int) -> bool:
        """True when the row was read for the current order."""
        entry = self._rows.get(key)
        return entry is not None and entry[0] == self.generation

    def put(self, keys: Iterable[int], found: Mapping[int, Session], generation: int) -> None:
        """Rows read for ``generation``: each of ``keys`` is ``found[key]`` or gone."""
        if generation < self.generation - 1:
            return  # read for an order two reloads ago: not worth keeping
        for key in keys:
            current = self._rows.get(key)
            if current is None or current[0] <= generation:
                self._rows[key] = (generation, found.get(key, GONE))
        if len(self._rows) > self.limit:
            self._rows = {k: v for k, v in self._rows.items() if v[0] == self.generation}
            if len(self._rows) > self.limit:  # one generation over the limit: keep the last read
                self._rows = dict(list(self._rows.items())[-self.limit :])

    def clear(self) -> None:
        self._rows.clear()
