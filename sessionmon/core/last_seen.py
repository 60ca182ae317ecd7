"""Last-seen updates written in the background, many in one transaction.

A request whose session's ``last_seen_at`` is due for an update (at most once per touch interval
per session and process) notes it here and goes on: it never waits for the database, so an async
server decides it on its event loop. A thread writes what was noted every ``flush_every`` seconds
(``SessionStore.touch_many``: one transaction, never moving a time back), and ``close()`` writes
the rest. With four web workers and 1,000 active sessions that is 4 transactions a second instead
of ~270, and no request queues behind SQLite's write lock.

Best effort, as the synchronous update it replaces: a batch the database refuses is dropped and
the failure kept in ``last_error``; the sessions are noted again at their next due request. A
noted time reaches the database within ``flush_every`` (1 s), so the idle-timeout policy, which
reads ``last_seen_at``, sees a request at most that much later than it happened.
"""

from __future__ import annotations

import contextlib
import threading

from sessionmon.core.errors import DatabaseError
from sessionmon.core.store import SessionStore

DEFAULT_FLUSH_EVERY = 1.0


class DeferredTouches:
    """Noted last-seen times of sessions, written by a thread of its own (started on first use).

    Thread-safe; ``note`` never waits on I/O.
    """

    def __init__(self, store: SessionStore, *, flush_every: float = DEFAULT_FLUSH_EVERY) -> None:
        if flush_every <= 0:
            raise ValueError("flush_every must be positive")
        self.store = store
        self.flush_every = float(flush_every)
        self.written = 0  # rows updated so far
        self.last_error: str | None = None
        self._pending: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False

    def note(self, session_id: str, at: float) -> None:
        """Session ``session_id`` was seen at ``at``: written at the next flush."""
        with self._lock:
            if self._closed:
                return
            if at > self._pending.get(session_id, float("-inf")):
                self._pending[session_id] = at
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="sessionmon-last-seen", daemon=True
                )
                self._thread.start()

    def pending(self) -> int:
        """Times noted and not written yet."""
        return len(self._pending)

    def flush(self) -> int:
        """Write every noted time now (one transaction); rows updated (0 when it failed)."""
        with self._lock:
            seen, self._pending = self._pending, {}
        if not seen:
            return 0
        try:
            n = self.store.touch_many(sorted(seen.items()))
        except DatabaseError as exc:  # best effort: dropped, noted again at the next request
            self.last_error = str(exc)
            return 0
        self.last_error = None
        self.written += n
        return n

    def close(self) -> None:
        """Stop the thread and write what is left (before the store closes)."""
        with self._lock:
            self._closed = True
            thread = self._thread
        self._stop.set()
        if thread is not None:
            thread.join(timeout=10)
        with contextlib.suppress(Exception):
            self.flush()

    def _run(self) -> None:
        while not self._stop.wait(self.flush_every):
            with contextlib.suppress(Exception):  # never let the thread die on a surprise
                self.flush()
