"""A blacklist whose Redis could not be reached when it was opened (a Redis Cluster's layout is
read when its client is made: every seed down, a refused certificate).

A long-running process (the monitor) opens anyway with a :class:`PendingBlacklist`: every use
raises ``RedisUnavailable`` with the reason (the monitor's banner) and tries to open the
blacklist again, at most once per ``retry`` seconds; once that works, every attribute is the
real blacklist's. Nothing is ever answered without Redis.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

from sessionmon.core.blacklist import Blacklist
from sessionmon.core.errors import RedisUnavailable

RETRY = 0.5


class PendingBlacklist:
    """Stands for the ``Blacklist`` ``open_blacklist`` makes, once it can make it."""

    def __init__(
        self,
        open_blacklist: Callable[[], Blacklist],
        error: RedisUnavailable,
        retry: float = RETRY,
    ) -> None:
        self._open = open_blacklist
        self._error = error
        self._retry = retry
        self._next = time.monotonic() + retry
        self._lock = threading.Lock()
        self._blacklist: Blacklist | None = None
        self._closed = False

    def resolve(self) -> Blacklist:
        """The blacklist; ``RedisUnavailable`` (the last reason) while it cannot be opened."""
        blacklist = self._blacklist
        if blacklist is not None:
            return blacklist
        # One attempt at a time: another caller meanwhile gets the last reason at once.
        if time.monotonic() >= self._next and self._lock.acquire(blocking=False):
            try:
                if self._blacklist is None and not self._closed:
                    try:
                        self._blacklist = self._open()
                    except RedisUnavailable as exc:
                        self._error = exc
                    finally:
                        self._next = time.monotonic() + self._retry
            finally:
                self._lock.release()
            if self._blacklist is not None:
                return self._blacklist
        raise RedisUnavailable(str(self._error))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.resolve(), name)

    def close(self) -> None:
        """Close the blacklist's client if one was opened; no attempt is made after this."""
        with self._lock:
            self._closed = True
            blacklist, self._blacklist = self._blacklist, None
        if blacklist is not None:
            with contextlib.suppress(Exception):
                blacklist.client.close()
