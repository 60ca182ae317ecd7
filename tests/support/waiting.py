"""Waiting for a condition with a deadline (never a fixed sleep)."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(
    condition: Callable[[], bool], what: str, timeout: float = 5.0, poll: float = 0.01
) -> float:
    """Poll ``condition`` until it holds; returns how long that took. Fails naming ``what``."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(poll)
    return time.monotonic() - start
