"""The time the screen is drawn at: read once per tick and shared by every part of the screen.

Countdowns are rounded to whole seconds; if the list and the detail pane each read the clock when
they happen to be drawn, a second boundary between the two readings makes one say ``2s`` and the
other ``3s``. Everything on screen asks a ``FrameClock`` instead, which the 1 Hz tick advances.
"""

from __future__ import annotations

from sessionmon.core.clock import Clock


class FrameClock:
    """A ``Clock`` that stands still between ticks."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._now = clock.now()

    def now(self) -> float:
        """The time of the current frame."""
        return self._now

    def advance(self) -> float:
        """Start a new frame at the real clock's time; returns it."""
        self._now = self.clock.now()
        return self._now
