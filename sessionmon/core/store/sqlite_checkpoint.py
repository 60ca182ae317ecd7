"""PASSIVE WAL checkpoints in a background thread, one per SQLite file per process."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from pathlib import Path
from typing import ClassVar


class Checkpointer:
    """PASSIVE WAL checkpoints off the request path: one thread per database file per process.

    PASSIVE never waits for readers or writers, so the stall a checkpoint costs is no longer
    paid by the commit that happens to cross the auto-checkpoint threshold.
    """

    _registry: ClassVar[dict[Path, Checkpointer]] = {}
    _registry_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, path: Path, interval: float) -> None:
        self.path = path
        self.interval = interval
        self.users = 0
        self.passes_with_work = 0  # checkpoints that found frames to copy
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"sessionmon-checkpoint-{path.name}", daemon=True
        )

    @classmethod
    def acquire(cls, path: Path, interval: float) -> Checkpointer:
        key = path.resolve()
        with cls._registry_lock:
            cp = cls._registry.get(key)
            if cp is None:
                cp = cls._registry[key] = cls(key, interval)
                cp._thread.start()
            cp.users += 1
            return cp

    def release(self) -> None:
        with self._registry_lock:
            self.users -= 1
            if self.users > 0:
                return
            self._registry.pop(self.path, None)
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        try:
            conn = sqlite3.connect(str(self.path), timeout=0.05, check_same_thread=False)
        except sqlite3.Error:
            return
        try:
            while not self._stop.wait(self.interval):
                try:
                    _, _, done = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except sqlite3.Error:
                    continue  # busy (another checkpoint) or the file went away: next time
                if done > 0:
                    self.passes_with_work += 1
        finally:
            # One last pass, so a short-lived process leaves no WAL behind it.
            with contextlib.suppress(sqlite3.Error):
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            conn.close()
