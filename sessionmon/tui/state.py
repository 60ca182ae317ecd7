"""The monitor's view state, with one owner: the app. No Textual here.

Widgets read it and the screen asks the app to change it (``set_query``, ``set_blacklist_filter``,
pause); a worker's result is applied only if it was made for the state as it is now (a poll for
another query is dropped, a search for another filter text is not shown).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sessionmon.tui.model import SessionList


@dataclass
class MonitorState:
    """What the operator is looking at and how."""

    # The sessions view: its query (sort, direction, filter), cursor and marks.
    sessions: SessionList = field(default_factory=SessionList)
    blacklist_descending: bool = False  # the blacklist view's order (soonest expiry first)
    blacklist_filter: str = ""  # the blacklist view's filter text
    paused: bool = False  # polls keep the current order (Redis and the clock still run)
