"""Checks of a SQLite database file before it is used: an empty file, a damaged one.

``check_sqlite_file`` runs when a process first opens a database (``SqliteStore`` calls it).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from sessionmon.core.errors import DatabaseCorrupt, DatabaseEmpty
from sessionmon.core.store.sqlite_schema import translate

# (resolved path, st_dev, st_ino) of the files that passed quick_check in this process.
_checked: set[tuple[str, int, int]] = set()
_checked_lock = threading.Lock()
# How long after its last change a 0-byte file may still be a database being created.
CREATION_GRACE = 2.0


def check_sqlite_file(path: Path, *, may_initialise: bool, busy_timeout: float = 5.0) -> None:
    """Refuse an empty or damaged database file with one line (a ``DatabaseError`` subclass).

    - A missing path or a directory is left to the caller (nothing is created here).
    - A 0-byte file is what ``touch`` or a failed copy leaves: only a caller that writes
      (``may_initialise``) may turn it into a fresh database; a reader gets ``DatabaseEmpty``
      instead of reporting "no sessions" from a file that holds none (unless the file gets its
      first page within ``CREATION_GRACE`` of being created: another process creating it).
    - Otherwise ``PRAGMA quick_check`` runs on a read-only connection, once per process per file
      (keyed by resolved path, device and inode: a file replaced by another is checked again; a
      file damaged in place while this process has it open is not). A failure is
      ``DatabaseCorrupt``; passing is remembered.

    Cost: quick_check reads every page of the file (it skips only the index-content checks of
    ``integrity_check``), so it is linear in the file size. Measured on SQLite 3.40 with the file
    in the page cache: 0.3 s for 200k sessions (140 MB), 1.5 s for 1M sessions (715 MB); reading
    a cold 1M file from disk first took 8-15 s on the shared 2-core machine. A command that
    reads a few rows pays this once per process; the monitor pays it once at startup.
    """
    try:
        st = path.stat()
    except OSError:
        return  # missing (or unreachable): the caller says so
    if not path.is_file():
        return
    if st.st_size == 0:
        if may_initialise:
            return  # nothing to check: the caller turns it into a database
        if not _initialised_soon(path, st.st_mtime):
            raise DatabaseEmpty(f"database {path} is an empty file, not a sessionmon database")
    key = (str(path.resolve()), st.st_dev, st.st_ino)
    with _checked_lock:
        if key in _checked:
            return
    problem = _quick_check(path, busy_timeout)
    if problem is not None:
        raise DatabaseCorrupt(f"database {path} is corrupt (quick_check: {problem})")
    with _checked_lock:
        _checked.add(key)


def _initialised_soon(path: Path, mtime: float) -> bool:
    """Whether a 0-byte file gets its SQLite header within ``CREATION_GRACE`` of its mtime.

    SQLite creates a new database as a 0-byte file and writes its first page a moment later
    (``PRAGMA journal_mode = WAL`` in ``Store``), so a reader racing the process that creates the
    database sees a 0-byte file for a few milliseconds. A file older than the grace is answered
    at once; a fresher one is watched until it is that old.
    """
    wait = min(CREATION_GRACE, max(0.0, mtime + CREATION_GRACE - time.time()))
    deadline = time.monotonic() + wait
    while True:
        try:
            if path.stat().st_size > 0:
                return True
        except OSError:
            return False
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)


def _quick_check(path: Path, busy_timeout: float) -> str | None:
    """None when quick_check says ``ok``; else its first finding, on one line."""
    try:
        conn = sqlite3.connect(
            f"file:{path}?mode=ro", uri=True, timeout=busy_timeout, isolation_level=None
        )
    except sqlite3.Error as exc:
        raise translate(exc, path) from None
    try:
        rows = conn.execute("PRAGMA quick_check(1)").fetchall()
    except sqlite3.Error as exc:
        raise translate(exc, path) from None
    finally:
        conn.close()
    first = str(rows[0][0]) if rows else "no answer"
    if first == "ok":
        return None
    return " ".join(first.split())  # its findings span lines ("*** in database main ***\n...")
