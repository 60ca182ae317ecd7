"""The activity feed in Redis: one capped stream, ``<prefix>events`` (``XADD ... MAXLEN ~ N``),
appended to by every process (web workers, CLI, demo, monitor).

Writing is fire and forget: ``StreamWriter.emit`` puts the event on a bounded in-process queue and
returns; a daemon thread writes what is queued with one pipeline per batch (it gathers events
for ``LINGER`` seconds first: a busy process wakes it a few times a second, not once per event).
A full queue or a Redis
that is down drops events (counted in ``dropped``), never fails or slows the request that emitted
them. Reading (``StreamReader``) is by stream id, so a reader that reconnects resumes after the
last id it saw: nothing lost (unless trimmed by the cap) and nothing repeated.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Sequence
from typing import Any

import redis

from sessionmon.core.blacklist import redis_errors
from sessionmon.core.events import Event

DEFAULT_MAXLEN = 100_000
STREAM = "events"
BATCH = 256
# After the first event of a batch the writer waits this long for more: a busy process makes a
# few pipelines a second, not one wake-up (and one GIL hand-over) per event.
LINGER = 0.05


def stream_key(prefix: str) -> str:
    return prefix + STREAM


class StreamWriter:
    """Appends events to the stream from a background thread; ``emit`` never blocks or raises."""

    def __init__(
        self,
        client: redis.Redis,
        prefix: str,
        *,
        maxlen: int = DEFAULT_MAXLEN,
        queue_size: int = 10_000,
        linger: float = LINGER,
    ) -> None:
        self.client = client
        self.key = stream_key(prefix)
        self.maxlen = maxlen
        self.linger = linger
        self.dropped = 0
        self.written = 0
        self._queue: queue.Queue[Event | None] = queue.Queue(maxsize=queue_size)
        self._idle = threading.Event()
        self._idle.set()
        self._thread = threading.Thread(target=self._run, name="sessionmon-events", daemon=True)
        self._thread.start()

    def emit(self, event: Event) -> None:
        self._idle.clear()
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self.dropped += 1

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything emitted so far was written (or dropped); False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._queue.empty() and self._idle.wait(0.01):
                return True
            time.sleep(0.005)
        return False

    def close(self, timeout: float = 2.0) -> None:
        """Write what is queued (up to ``timeout``), then stop the thread."""
        self.flush(timeout)
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            if self.linger > 0:
                time.sleep(self.linger)
            batch = [first]
            while len(batch) < BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._write(batch)
                    return
                batch.append(item)
            self._write(batch)
            if self._queue.empty():
                self._idle.set()

    def _write(self, batch: Sequence[Event]) -> None:
        try:
            pipe = self.client.pipeline(transaction=False)
            head = ("XADD", self.key, "MAXLEN", "~", self.maxlen, "*")
            for event in batch:
                flat = [part for pair in event.fields().items() for part in pair]
                pipe.execute_command(*head, *flat)
            pipe.execute()
            self.written += len(batch)
        except (redis.RedisError, OSError):
            self.dropped += len(batch)  # the feed is best effort: never the request's problem


class StreamReader:
    """Reads the feed by stream id (resumable: pass the last id seen)."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.client = client
        self.key = stream_key(prefix)

    def after(self, last_id: str, count: int = 500, block_ms: int | None = None) -> list[Event]:
        """Events after ``last_id`` (``"0"``: from the oldest; ``"$"``: only new ones), waiting
        up to ``block_ms`` for the first when there is none."""
        with redis_errors():
            reply: Any = self.client.xread({self.key: last_id}, count=count, block=block_ms)
        entries = reply[0][1] if reply else []  # RESP2: [[key, entries]]
        return self._events(entries)

    def since(self, at: float, count: int = 1000) -> list[Event]:
        """The oldest ``count`` events written at or after ``at`` (by the stream's clock)."""
        with redis_errors():
            entries = self.client.xrange(self.key, min=f"{int(at * 1000)}-0", count=count)
        return self._events(entries)

    def latest(self, count: int) -> list[Event]:
        """The newest ``count`` events, oldest first."""
        with redis_errors():
            entries: Any = self.client.xrevrange(self.key, count=count)
        return self._events(reversed(entries))

    def last_id(self) -> str:
        """The id of the newest event (``"0-0"`` when the feed is empty)."""
        with redis_errors():
            entries: Any = self.client.xrevrange(self.key, count=1)
        return _text(entries[0][0]) if entries else "0-0"

    @staticmethod
    def _events(entries: Any) -> list[Event]:
        out = []
        for entry_id, data in entries:
            fields_ = {_text(k): _text(v) for k, v in data.items()}
            event = Event.from_entry(_text(entry_id), fields_)
            if event is not None:
                out.append(event)
        return out


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
