"""Keeping the embedded Redis alive for every sessionmon process: the monitor, the CLI, the web app.

``EmbeddedKeeper`` starts (or joins, or restarts) the server that belongs to one database and
leaves it exactly once; ``Reviver`` restarts it in the background when commands find it gone (a
crash, an OOM kill, ``redis-cli shutdown``), at most one attempt at a time and backing off, so a
web app recovers on its own instead of answering 503 until some other process starts the server.
The monitor drives its keeper from its poll loop; ``open_runtime`` gives the others a reviver.
"""

from __future__ import annotations

import threading
import time

from sessionmon.core.embedded import EmbeddedRedis
from sessionmon.core.errors import RedisUnavailable, SessionmonError


class EmbeddedKeeper:
    """Starts (or joins, or restarts) the embedded Redis; ``close`` leaves it exactly once.

    ``start`` and ``close`` hold one lock, so a start running in a worker when the monitor quits
    finishes first and is then released: a server started late is never left behind.
    """

    def __init__(self, embedded: EmbeddedRedis, *, make_dir: bool = True) -> None:
        self.embedded = embedded
        # False: never start the server beside a database that does not exist (it would leave
        # its files beside a mistyped path); wait for the database to appear.
        self.make_dir = make_dir
        self._lock = threading.Lock()
        self._joined = False
        self._closed = False

    @property
    def url(self) -> str:
        return self.embedded.url

    def start(self) -> None:
        """Make sure the server answers and this process is one of its users.

        Raises ``RedisUnavailable`` with one line saying why it could not start.
        """
        with self._lock:
            if self._closed:
                raise RedisUnavailable("sessionmon is shutting down")
            if not self.make_dir and not self.embedded.db_path.exists():
                raise RedisUnavailable(
                    f"embedded Redis not started: waiting for the database "
                    f"{self.embedded.db_path} (it lives beside it)"
                )
            try:
                self.embedded.start()
            except RedisUnavailable:
                raise
            except SessionmonError as exc:  # e.g. no redis-server binary (a ConfigError)
                raise RedisUnavailable(f"embedded Redis not started: {exc}") from None
            except OSError as exc:  # e.g. a directory where its socket should be
                what = exc.strerror or str(exc)
                where = f": {exc.filename}" if exc.filename else ""
                raise RedisUnavailable(f"embedded Redis not started: {what}{where}") from None
            self._joined = True

    def close(self) -> bool:
        """Leave the server (shutting it down if no other process uses it); True if it stopped."""
        with self._lock:
            if self._closed:
                return False
            self._closed = True
            if not self._joined:
                return False  # never registered: another process's server is not ours to stop
            return self.embedded.stop()


class Reviver:
    """Restart the embedded server in the background after a command found Redis unavailable.

    ``poke`` returns at once: the request that noticed the outage is answered (503) without
    waiting for a server to start. Attempts never overlap and back off from ``backoff_start``
    doubling to ``backoff_cap`` seconds while they fail; a server that answers costs one PING.
    """

    def __init__(
        self, keeper: EmbeddedKeeper, *, backoff_start: float = 0.2, backoff_cap: float = 5.0
    ) -> None:
        self.keeper = keeper
        self.backoff_start = backoff_start
        self.backoff_cap = backoff_cap
        self.last_error: str | None = None
        self._lock = threading.Lock()
        self._running = False
        self._backoff = backoff_start
        self._next = 0.0  # monotonic: the earliest next attempt

    def poke(self) -> None:
        """Redis did not answer: try to (re)start the server soon, in a thread of its own."""
        with self._lock:
            if self._running or time.monotonic() < self._next:
                return
            self._running = True
        threading.Thread(target=self._attempt, name="sessionmon-revive", daemon=True).start()

    def _attempt(self) -> None:
        error: str | None = None
        try:
            self.keeper.start()
        except RedisUnavailable as exc:
            error = str(exc)
        with self._lock:
            self.last_error = error
            if error is None:
                self._backoff = self.backoff_start
                self._next = 0.0
            else:
                self._next = time.monotonic() + self._backoff
                self._backoff = min(self._backoff * 2, self.backoff_cap)
            self._running = False
