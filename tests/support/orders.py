"""Holding an order's exact count back, to look at what the reader hands out without it."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from sessionmon.core.store import Order
from sessionmon.core.store import order as order_module


class CountGate:
    """Holds every exact count of an order's background thread (``OrderSnapshot.count``) until
    ``open()``: what the reader hands out meanwhile was made without it. ``counting`` is set
    once a count is waiting."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.gate = threading.Event()
        self.counting = threading.Event()
        fill_init = order_module._Fill.__init__
        gate = self

        def gated_init(fill: Any, open_snapshot: Any, *args: Any, **kwargs: Any) -> None:
            def opened() -> Any:
                snap = open_snapshot()
                count = snap.count

                def gated_count() -> int:
                    gate.counting.set()
                    assert gate.gate.wait(20), "the count was never let through"
                    return count()

                snap.count = gated_count
                return snap

            fill_init(fill, opened, *args, **kwargs)

        monkeypatch.setattr(order_module._Fill, "__init__", gated_init)

    def open(self) -> None:
        self.gate.set()


def exact_of(order: Order) -> Order:
    """The exact order that follows an estimated one (waits for the reader's thread)."""
    got: list[Order | None] = []
    arrived = threading.Event()

    def settled(exact: Order | None) -> None:
        got.append(exact)
        arrived.set()

    order.when_exact(settled)
    assert arrived.wait(20), "the exact order never came"
    assert got[0] is not None, "reading the exact order failed"
    return got[0]
