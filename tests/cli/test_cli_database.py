"""The console script and the database file: empty, damaged, missing (mistyped or first run)."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from sessionmon.core.embedded import EmbeddedRedis
from sessionmon.core.keys import KeyMaterial
from sessionmon.core.settings import Settings
from sessionmon.core.store import SESSION_COLUMNS, Session, SqliteStore
from sessionmon.core.tokens import TokenCodec
from tests.cli.test_cli import assert_clean_error
from tests.conftest import TEST_SECRET

Run = Callable[..., subprocess.CompletedProcess[str]]
EMBEDDED = {"SESSIONMON_REDIS_URL": ""}  # the embedded default, which lives beside the database
PAGE = 4096


def schema_of(path: Path) -> set[str]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        conn.close()


# -- a 0-byte file ----------------------------------------------------------------------------


def test_readers_refuse_an_empty_file_and_leave_it_empty(run_cli: Run, tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    os.utime(empty, (time.time() - 60, time.time() - 60))  # touched a minute ago
    for args in (("ls",), ("ls", "--all", "--json"), ("audit",), ("purge", "--dry-run")):
        proc = run_cli(*args, "--db", str(empty))
        assert_clean_error(proc, 2, "empty file, not a sessionmon database")
        if "--json" in args:
            assert "empty file" in json.loads(proc.stdout)["error"]
        assert empty.stat().st_size == 0, args
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.db"]  # no -wal, no -shm


def test_a_writer_may_initialise_an_empty_file(run_cli: Run, tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    proc = run_cli("purge", "--db", str(empty), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"deleted": 0}
    assert {"sessions", "audit"} <= schema_of(empty)
    assert run_cli("ls", "--db", str(empty)).returncode == 1  # now a real, empty database


# -- a damaged file ---------------------------------------------------------------------------


def damaged_database(path: Path, n: int = 3000) -> None:
    """A real sessionmon database of ``n`` live sessions and one audit row, with garbage over
    the middle fifth of the file: the first rows, the newest audit rows and the expiry index
    still read fine, so only a check of the whole file finds it."""
    now = time.time()
    sessions = [
        Session(
            f"s{i:06d}",
            f"u{i:06d}",
            f"u{i:06d}@example.com",
            f"User {i}",
            now - 100 + i / 1000,
            now - 50 + i / 1000,
            "192.0.2.1",
            "agent " + "x" * 200,
            f"a{i}",
            now + 600 + i,
            f"r{i}",
            now + 3600 + i,
            0,
            "test",
        )
        for i in range(n)
    ]
    with SqliteStore(path) as store:
        with store.transaction() as conn:
            conn.executemany(
                f"INSERT INTO sessions VALUES ({', '.join('?' * len(SESSION_COLUMNS))})",
                [tuple(s.to_dict().values()) for s in sessions],
            )
        store.write_audit([{"at": now, "actor": "t", "action": "logout", "outcome": "ok"}])
        store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(path.read_bytes())
    pages = len(data) // PAGE
    start, end = int(pages * 0.4), int(pages * 0.6)
    data[start * PAGE : end * PAGE] = b"\xde\xad\xbe\xef" * ((end - start) * PAGE // 4)
    path.write_bytes(bytes(data))
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] != "ok"
    finally:
        conn.close()


@pytest.fixture(scope="module")
def damaged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("damaged") / "damaged.db"
    damaged_database(path)
    return path


@pytest.mark.parametrize(
    "args",
    [("ls", "--limit", "3"), ("audit",), ("purge",), ("logout", "s000000"), ("ls", "--json")],
    ids=["ls", "audit", "purge", "logout", "ls-json"],
)
def test_a_damaged_database_is_refused(
    run_cli: Run, tmp_path: Path, damaged: Path, args: tuple[str, ...]
) -> None:
    db = tmp_path / "copy.db"
    shutil.copyfile(damaged, db)
    proc = run_cli(*args, "--db", str(db))
    assert_clean_error(proc, 2, f"database {db} is corrupt (quick_check: ")
    if "--json" in args:
        assert "is corrupt (quick_check: " in json.loads(proc.stdout)["error"]


# -- a database that does not exist -----------------------------------------------------------


def test_a_mistyped_db_leaves_nothing_beside_it(run_cli: Run, tmp_path: Path) -> None:
    typo = tmp_path / "notyet.db"
    env = {**EMBEDDED, "SESSIONMON_SECRET": ""}  # no secret: it would be generated beside the db
    for args in (("ls",), ("logout", "x"), ("blacklist",), ("audit",), ("purge",), ("check",)):
        proc = run_cli(*args, "--db", str(typo), input="a.b.c", env_extra=env)
        assert_clean_error(proc, 2, f"database not found: {typo}")
    assert list(tmp_path.iterdir()) == []


def test_the_monitor_starts_no_embedded_redis_beside_a_missing_database(tmp_path: Path) -> None:
    from sessionmon.tui import build_monitor

    typo = tmp_path / "notyet.db"
    monitor = build_monitor(Settings(db=typo))
    try:
        assert monitor.backend.redis_start_error is not None
        assert "waiting for the database" in monitor.backend.redis_start_error
        assert list(tmp_path.iterdir()) == []
        SqliteStore(typo).close()  # it appears: the embedded Redis may start beside it now
        monitor.backend.keeper.start()
        assert EmbeddedRedis(typo).answering()
    finally:
        monitor.close()
        EmbeddedRedis(typo).stop(force=True)


def test_check_on_a_fresh_machine_with_the_default_settings(
    run_cli: Run, tmp_path: Path, cli_env: dict[str, str]
) -> None:
    env = {**EMBEDDED, "SESSIONMON_DB": "", "SESSIONMON_PREFIX": ""}
    default = Path(cli_env["XDG_DATA_HOME"]) / "sessionmon" / "sessions.db"
    assert not default.parent.exists()
    keys = KeyMaterial("HS256", TEST_SECRET.encode(), TEST_SECRET.encode())
    token, _ = TokenCodec(keys).mint("access", sub="u1", sid="s1", ttl=60, email="a@example.com")
    try:
        proc = run_cli("check", input=token, env_extra=env)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith("valid")
        assert {"sessions", "audit"} <= schema_of(default)  # created as the monitor does
        assert not EmbeddedRedis(default).answering()  # and the embedded Redis released
    finally:
        EmbeddedRedis(default).stop(force=True)
