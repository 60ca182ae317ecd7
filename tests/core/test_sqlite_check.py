"""The checks a database file passes when a process first opens it: not empty, quick_check ok."""

from __future__ import annotations

import os
import shutil
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from sessionmon.core.errors import DatabaseCorrupt, DatabaseEmpty
from sessionmon.core.store import Session, SqliteStore
from sessionmon.core.store.sqlite_check import CREATION_GRACE, check_sqlite_file

PAGE = 4096


def filled(path: Path, n: int = 400) -> Path:
    with SqliteStore(path) as store:
        for i in range(n):
            store.insert_session(
                Session(f"s{i:04d}", "u", "e@x", "n", 1.0, 1.0, None, "x" * 100, "a", 2.0, "r", 3.0)
            )
        store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path


def damage_middle(path: Path) -> None:
    """Garbage over the middle fifth of the file, in place (same inode)."""
    pages = path.stat().st_size // PAGE
    start, end = int(pages * 0.4), int(pages * 0.6)
    with open(path, "r+b") as fh:
        fh.seek(start * PAGE)
        fh.write(b"\xde\xad\xbe\xef" * ((end - start) * PAGE // 4))


def test_an_empty_file_is_refused_unless_the_caller_may_initialise_it(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    os.utime(empty, (time.time() - 60, time.time() - 60))  # touched a minute ago
    with pytest.raises(DatabaseEmpty, match="empty file, not a sessionmon database"):
        check_sqlite_file(empty, may_initialise=False)
    check_sqlite_file(empty, may_initialise=True)
    for options in ({"create": False}, {"readonly": True}):
        with pytest.raises(DatabaseEmpty, match=str(empty)):
            SqliteStore(empty, **options)  # type: ignore[arg-type]
    assert empty.stat().st_size == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.db"]
    with SqliteStore(empty) as store:  # a writer that may create it
        assert store.schema_version() > 0


def test_a_reader_racing_the_creator_waits_for_the_first_page(tmp_path: Path) -> None:
    """SQLite creates a database as a 0-byte file and writes its first page a moment later."""
    db = tmp_path / "new.db"
    db.write_bytes(b"")  # what the creating process's connect() leaves, just now
    errors: list[BaseException] = []

    def read() -> None:
        try:
            SqliteStore(db, create=False).close()
        except BaseException as exc:
            errors.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    with SqliteStore(db) as creator:  # the creator (allowed to initialise it) goes on
        creator.insert_session(
            Session("s1", "u", "e@x", "n", 1.0, 1.0, None, None, "a", 2.0, "r", 3.0)
        )
    reader.join(timeout=30)
    assert not reader.is_alive() and errors == []

    stale = tmp_path / "stale.db"
    stale.write_bytes(b"")  # nobody creates it: refused once the grace is over
    start = time.monotonic()
    with pytest.raises(DatabaseEmpty):
        check_sqlite_file(stale, may_initialise=False)
    assert time.monotonic() - start >= CREATION_GRACE - 0.5


def test_a_missing_file_is_left_to_the_caller(tmp_path: Path) -> None:
    check_sqlite_file(tmp_path / "missing.db", may_initialise=False)
    assert list(tmp_path.iterdir()) == []


def test_a_damaged_file_is_refused_with_one_line(tmp_path: Path) -> None:
    db = filled(tmp_path / "sessions.db")
    damage_middle(db)
    with pytest.raises(DatabaseCorrupt) as info:
        SqliteStore(db, create=False)
    message = str(info.value)
    assert message.startswith(f"database {db} is corrupt (quick_check: ") and "\n" not in message


def test_garbage_is_corrupt_or_not_a_sqlite_file(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database " * 500)
    with pytest.raises(DatabaseCorrupt, match="corrupt or not a SQLite file"):
        check_sqlite_file(junk, may_initialise=True)


def test_quick_check_runs_once_per_process_per_file(tmp_path: Path) -> None:
    db = filled(tmp_path / "sessions.db")
    check_sqlite_file(db, may_initialise=False)
    good = tmp_path / "good.db"
    shutil.copyfile(db, good)
    damage_middle(db)  # in place: the same file, already checked by this process
    check_sqlite_file(db, may_initialise=False)
    # Replaced by another file (a restored backup, a copy): checked again.
    damaged = tmp_path / "damaged.db"
    shutil.copyfile(db, damaged)
    os.replace(damaged, db)
    with pytest.raises(DatabaseCorrupt):
        check_sqlite_file(db, may_initialise=False)
    os.replace(good, db)
    check_sqlite_file(db, may_initialise=False)
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()
