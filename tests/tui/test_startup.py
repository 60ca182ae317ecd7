"""Startup with a missing, corrupt database or an embedded Redis that will not start; workers that
fail; the embedded Redis released on quit and on signals (real processes in a pseudo-terminal)."""

from __future__ import annotations

import contextlib
import os
import pty
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from sessionmon.core.auth import Auth
from sessionmon.core.blacklist import Blacklist, RevokeRequest
from sessionmon.core.embedded import EmbeddedRedis
from sessionmon.core.settings import Settings
from sessionmon.core.store import SessionStore, SqliteStore
from sessionmon.core.tokens import TokenCodec
from sessionmon.tui import Monitor, build_monitor, may_create_database
from sessionmon.tui.poller import REDIS_DOWN
from sessionmon.tui.screens.confirm import ConfirmLogout, LogoutKind
from sessionmon.tui.widgets.banner import Banner
from tests.conftest import TEST_SECRET
from tests.tui.conftest import SIZE, loaded, polled, wait_for

FAST = (0.1, 0.5)  # backoff start and cap, so retries happen within the test


def banner_text(app) -> str:
    banner = app.main.query_one(Banner)
    return "\n".join(banner.problems) if banner.has_class("-shown") else ""


def notifications(app) -> list[str]:
    return [n.message for n in app._notifications]


@pytest.fixture
def monitor_settings(settings: Settings) -> Settings:
    return settings.with_(interval=0.2, actor="tester")


@contextlib.contextmanager
def monitor(settings: Settings, clock, **options) -> Iterator[Monitor]:
    built = build_monitor(settings, clock=clock, backoff=FAST, **options)
    try:
        yield built
    finally:
        built.close()


def seed_database(path: Path, blacklist: Blacklist, codec: TokenCodec, clock, n: int = 1) -> list:
    """A real database at ``path`` with ``n`` sessions of one user (plus one of another)."""
    store = SqliteStore(path, clock=clock)
    try:
        auth = Auth(store, blacklist, codec, access_ttl=60, refresh_ttl=3600, clock=clock)
        sessions = [auth.login("u1", "one@example.com", "One")[0] for _ in range(n)]
        auth.login("u2", "two@example.com", "Two")
        return sessions
    finally:
        store.close()


# -- the database at startup -----------------------------------------------------------------


async def test_missing_database_waits_for_it_then_shows_it(
    monitor_settings: Settings, tmp_path: Path, blacklist: Blacklist, codec: TokenCodec, clock
):
    path = tmp_path / "later.db"
    blacklist.revoke([RevokeRequest("session", "sid-before", clock.now() + 300)], reason="test")
    with monitor(monitor_settings.with_(db=path), clock) as m:
        app = m.app
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: app.snapshot is not None, "first poll")
            await wait_for(pilot, lambda: "Database not found" in banner_text(app), "banner")
            assert f"Database not found: {path} — waiting for it to appear" in banner_text(app)
            assert "last rows read" not in banner_text(app)  # none were ever read
            assert not path.exists()  # a path the operator named is never created
            # Redis works: the blacklist view is live.
            await wait_for(pilot, lambda: app.snapshot.blacklist is not None, "blacklist")
            assert app.snapshot.redis.ok and app.snapshot.blacklist.count == 1
            assert REDIS_DOWN not in banner_text(app)

            seed_database(path, blacklist, codec, clock)
            await polled(pilot)
            await wait_for(pilot, lambda: banner_text(app) == "", "banner cleared")
            await wait_for(pilot, lambda: len(app.model) == 2, "sessions shown")
            assert app.main.query_one("#status").info.db_ok

            # The read-write store opens late too: force-logout works.
            await pilot.press("home")
            target = app.main.sessions.selected.id
            await pilot.press("l")
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmLogout), "dialog")
            await pilot.press("y")
            await wait_for(pilot, lambda: blacklist.is_revoked(None, target), "revoked")
            with SqliteStore(path, create=False) as check:
                assert check.get_session(target) is None


async def test_corrupt_database_says_so_and_recovers_when_replaced(
    monitor_settings: Settings, tmp_path: Path, blacklist: Blacklist, codec: TokenCodec, clock
):
    path = tmp_path / "sessions.db"
    junk = b"this is not a SQLite database\n" * 200
    path.write_bytes(junk)
    with monitor(monitor_settings.with_(db=path), clock) as m:
        app = m.app
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: "corrupt" in banner_text(app), "banner")
            assert f"Database {path} is corrupt or not a SQLite file" in banner_text(app)
            assert "retrying" in banner_text(app)
            assert path.read_bytes() == junk  # nothing was written into it

            good = tmp_path / "good.db"
            seed_database(good, blacklist, codec, clock)
            os.replace(good, path)
            await polled(pilot)
            await wait_for(pilot, lambda: banner_text(app) == "", "banner cleared")
            await wait_for(pilot, lambda: len(app.model) == 2, "sessions shown")


async def test_a_directory_at_the_database_path_is_named_as_such(
    monitor_settings: Settings, tmp_path: Path, clock
):
    path = tmp_path / "adir"
    path.mkdir()
    with monitor(monitor_settings.with_(db=path), clock) as m:
        app = m.app
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: "directory" in banner_text(app), "banner")
            assert f"Database path {path} is a directory" in banner_text(app)


async def test_default_database_is_created_on_first_run(
    monkeypatch, tmp_path: Path, redis_url: str, prefix: str, clock
):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    settings = Settings(redis_url=redis_url, prefix=prefix, interval=0.2)
    assert settings.db.path == tmp_path / "data" / "sessionmon" / "sessions.db"
    assert may_create_database(settings)
    assert not may_create_database(settings.with_(read_only=True))
    assert not may_create_database(settings.with_(db=tmp_path / "named.db"))
    assert may_create_database(settings.with_(db=tmp_path / "named.db"), demo=True)
    with monitor(settings, clock) as m:
        assert settings.db.exists()
        app = m.app
        async with app.run_test(size=SIZE) as pilot:
            await loaded(pilot)
            assert banner_text(app) == ""
            assert len(app.model) == 0


# -- the embedded Redis at startup -----------------------------------------------------------


def server_alive(embedded: EmbeddedRedis) -> int | None:
    """The pid of the embedded server if it runs, else None."""
    try:
        pid = int(embedded.pidfile.read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    return pid


def wait_until(check, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for: {what}")
        time.sleep(0.05)


async def test_embedded_redis_that_fails_to_start_is_retried(
    monitor_settings: Settings, tmp_path: Path, blacklist: Blacklist, codec: TokenCodec, clock
):
    path = tmp_path / "emb" / "sessions.db"
    path.parent.mkdir()
    seed_database(path, blacklist, codec, clock)
    embedded = EmbeddedRedis(path)
    embedded.logfile.mkdir()  # redis-server cannot open its log file: it exits at once
    settings = monitor_settings.with_(db=path, redis_url=None)
    try:
        with monitor(settings, clock) as m:
            assert m.backend.redis_start_error and "log file" in m.backend.redis_start_error
            app = m.app
            async with app.run_test(size=SIZE) as pilot:
                await loaded(pilot)
                await wait_for(pilot, lambda: REDIS_DOWN in banner_text(app), "banner")
                assert "Can't open the log file" in banner_text(app)
                assert len(app.model) == 2  # sessions are still shown
                await pilot.press("l")
                await pilot.pause()
                assert not isinstance(app.screen, ConfirmLogout)  # refused while Redis is down

                embedded.logfile.rmdir()  # fixed: the next attempt starts it
                await wait_for(pilot, lambda: banner_text(app) == "", "banner cleared")
                assert app.snapshot.redis.ok and app.redis_start_error is None
                pid = server_alive(embedded)
                assert pid is not None
        # The monitor was the only user: leaving shut the server down.
        wait_until(lambda: server_alive(embedded) is None, "embedded Redis stopped")
        assert not embedded.socket.exists()
    finally:
        with contextlib.suppress(Exception):
            embedded.stop(force=True)


# -- workers never show a traceback ----------------------------------------------------------


async def test_l_reads_the_users_sessions_off_the_ui_thread(
    make_app, auth: Auth, store: SessionStore
):
    mine = {auth.login("u1", "one@example.com", "One")[0].id for _ in range(3)}
    auth.login("u2", "two@example.com", "Two")
    app = make_app()
    release = threading.Event()
    holding = threading.Event()

    def hold_store() -> None:  # a slow database: busy for a while
        if isinstance(store, SqliteStore):
            with store._lock:
                holding.set()
                release.wait(5)
            return
        with psycopg.connect(store.location.url) as conn:  # every read waits on this lock
            conn.execute("LOCK TABLE sessions IN ACCESS EXCLUSIVE MODE")
            holding.set()
            release.wait(5)

    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("home")
        while app.main.sessions.selected.user_id != "u1":
            await pilot.press("down")
        holder = threading.Thread(target=hold_store)
        holder.start()
        holding.wait(5)
        try:
            await pilot.press("L")
            await pilot.pause(0.1)
            assert not isinstance(app.screen, ConfirmLogout)  # still reading
            await pilot.press("p")  # the UI answers keys meanwhile
            assert app.paused
        finally:
            release.set()
            holder.join()
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmLogout), "dialog")
        target = app.screen.target
        assert target.kind is LogoutKind.USER and target.user_id == "u1"
        assert (
            set(target.session_ids) == mine
            and "every session of one@example.com: 3 now" in target.title
        )
        await pilot.press("n")
        await pilot.pause()
        assert {s.id for s in store.list_sessions()} >= mine  # cancelled: nothing happened


async def test_a_failing_worker_is_a_notification_not_a_traceback(
    make_app, auth: Auth, blacklist: Blacklist, redis_client: redis.Redis, caplog
):
    session = auth.login("u1", "one@example.com", "One")[0]
    # A key of the wrong type where the session's blacklist key belongs: redis-py raises a
    # ResponseError (WRONGTYPE) that no core code expects, inside the detail worker.
    redis_client.hset(blacklist.sid_key(session.id), "x", "y")
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await wait_for(
            pilot, lambda: any("internal error" in n for n in notifications(app)), "notice"
        )
        note = next(n for n in notifications(app) if "internal error" in n)
        assert "ResponseError" in note and "Traceback" not in note and "\n" not in note
        await wait_for(pilot, lambda: app.main.query_one("#detail").detail is not None, "detail")
        detail = app.main.query_one("#detail").detail
        assert detail.session.id == session.id and detail.keys is None  # the rest is shown
        assert app.screen is app.main  # no crash screen; the app keeps polling
        polls = app.polls
        await polled(pilot)
        assert app.polls > polls

        # The blacklist index of the wrong type: the poller's Redis half fails the same way.
        redis_client.set(blacklist.index_keys[0], "not a sorted set")
        await polled(pilot)
        await wait_for(pilot, lambda: "internal error" in banner_text(app), "banner")
        assert REDIS_DOWN in banner_text(app) and "Traceback" not in banner_text(app)
        assert app.main.check_action("force_logout", ()) is None  # state unknown: refused
    logged = [r for r in caplog.records if r.name == "sessionmon.tui" and r.exc_info]
    assert logged, "the traceback goes to the log"


# -- real processes: the embedded Redis is released on quit and on signals -------------------


class PtyProcess:
    """``sessionmon`` in a pseudo-terminal (a session leader, like in a real terminal window).

    ``pipe_stdout``: its stdout goes to a pipe instead (``sessionmon | tee log``); what comes out
    of it is in ``piped``."""

    def __init__(self, args: list[str], env: dict[str, str], *, pipe_stdout: bool = False) -> None:
        import fcntl
        import struct
        import termios

        pipe = os.pipe() if pipe_stdout else None
        pid, fd = pty.fork()
        if pid == 0:  # the child
            if pipe is not None:
                os.dup2(pipe[1], 1)
                os.close(pipe[0])
                os.close(pipe[1])
            os.execve(args[0], args, env)
        self.pid, self.fd = pid, fd
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 45, 160, 0, 0))
        self.output = bytearray()
        self.piped = bytearray()
        self.code: int | None = None
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()
        if pipe is not None:
            os.close(pipe[1])
            threading.Thread(target=self._drain_pipe, args=(pipe[0],), daemon=True).start()

    def _drain_pipe(self, fd: int) -> None:
        with os.fdopen(fd, "rb", buffering=0) as pipe:
            while data := pipe.read(65536):
                self.piped += data

    def _drain(self) -> None:
        while True:
            try:
                data = os.read(self.fd, 65536)
            except OSError:
                return
            if not data:
                return
            self.output += data

    def send(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def resize(self, columns: int, lines: int) -> None:
        """Resize the terminal (the kernel sends SIGWINCH)."""
        import fcntl
        import struct
        import termios

        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", lines, columns, 0, 0))

    def hang_up(self) -> None:
        """Close the terminal (the kernel sends SIGHUP)."""
        os.close(self.fd)

    def wait(self, timeout: float = 20.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.code = os.waitstatus_to_exitcode(status)
                return self.code
            time.sleep(0.05)
        raise AssertionError(f"sessionmon did not exit; output: {bytes(self.output[-2000:])!r}")

    def kill(self) -> None:
        if self.code is None:
            with contextlib.suppress(ProcessLookupError, ChildProcessError):
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)


@pytest.fixture
def process_env(tmp_path: Path) -> dict[str, str]:
    """The console script on an embedded Redis beside this test's database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SESSIONMON_")}
    env.update(
        SESSIONMON_DB=str(tmp_path / "proc" / "sessions.db"),
        SESSIONMON_SECRET=TEST_SECRET,
        XDG_CONFIG_HOME=str(tmp_path / "xdg-config"),
        XDG_DATA_HOME=str(tmp_path / "xdg-data"),
        XDG_STATE_HOME=str(tmp_path / "xdg-state"),
        TERM="xterm-256color",
    )
    return env


def sessionmon_exe() -> str:
    import sys

    return str(Path(sys.executable).with_name("sessionmon"))


def real_sessions(path: Path, clock) -> None:
    """A database holding a session that the demo did not create."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with SqliteStore(path, clock=clock) as store:
        from sessionmon.core.store import Session

        now = time.time()
        store.insert_session(
            Session(
                id="real-session",
                user_id="u1",
                email="real@example.com",
                name="Real",
                created_at=now,
                last_seen_at=now,
                ip=None,
                user_agent=None,
                access_jti="a",
                access_exp=now + 600,
                refresh_jti="r",
                refresh_exp=now + 3600,
                refresh_count=0,
                source=None,
            )
        )


def demo_sessions(path: Path) -> int:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT COUNT(*) FROM sessions WHERE source = 'demo'").fetchone()[0]
    finally:
        conn.close()


def test_refused_demo_is_one_line_before_the_app_and_leaves_no_server(
    process_env: dict[str, str], clock
):
    import subprocess

    path = Path(process_env["SESSIONMON_DB"])
    real_sessions(path, clock)
    embedded = EmbeddedRedis(path)
    try:
        proc = subprocess.run(
            [sessionmon_exe(), "--demo"],
            env=process_env,
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        assert proc.returncode == 2
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "holds sessions the demo did not create" in lines[0]
        assert "--force" in lines[0] and "Traceback" not in proc.stderr
        assert server_alive(embedded) is None and not embedded.socket.exists()
        assert demo_sessions(path) == 0
    finally:
        with contextlib.suppress(Exception):
            embedded.stop(force=True)


@pytest.mark.parametrize("how", ["q", "SIGTERM", "hang up"])
def test_embedded_redis_stops_when_the_monitor_leaves(process_env: dict[str, str], clock, how):
    path = Path(process_env["SESSIONMON_DB"])
    real_sessions(path, clock)
    embedded = EmbeddedRedis(path)
    # --demo --force: the demo writes into a database with real sessions, as asked.
    proc = PtyProcess([sessionmon_exe(), "--demo", "--force"], process_env)
    try:
        wait_until(lambda: b"blacklisted" in proc.output, "the app on screen", 30)
        wait_until(lambda: demo_sessions(path) > 0, "the demo's sessions", 20)
        pid = server_alive(embedded)
        assert pid is not None
        if how == "q":
            proc.send("q")
            assert proc.wait() == 0
        elif how == "SIGTERM":
            os.kill(proc.pid, signal.SIGTERM)
            assert proc.wait() == 128 + signal.SIGTERM  # handled: it quit by itself
        else:
            proc.hang_up()
            proc.wait()
        wait_until(lambda: server_alive(embedded) is None, "embedded Redis stopped", 10)
        assert not embedded.socket.exists()
        assert b"Traceback" not in proc.output
    finally:
        proc.kill()
        pid = server_alive(embedded)
        if pid is not None:  # a failed test must not leave a server behind
            os.kill(pid, signal.SIGKILL)


# -- output piped or redirected -------------------------------------------------------------


def longest_rule(output: bytes) -> int:
    """The longest run of "─" drawn (a box's top border spans the width of the screen)."""
    import re

    runs = re.findall("─+", output.decode("utf-8", "replace"))
    return max((len(r) for r in runs), default=0)


def test_piped_stdout_draws_at_the_size_of_the_terminal(process_env: dict[str, str]):
    """``sessionmon --demo | tee log`` in a 160x45 terminal, then resized to 150x40: frames as wide
    as the terminal, never 80x24 (the size of a pipe, for Textual's own size reading)."""
    embedded = EmbeddedRedis(Path(process_env["SESSIONMON_DB"]))
    proc = PtyProcess([sessionmon_exe(), "--demo"], process_env, pipe_stdout=True)
    try:
        wait_until(lambda: "Sessions ·".encode() in proc.output, "the app on screen", 30)
        wait_until(lambda: longest_rule(bytes(proc.output)) >= 120, "a 160-column frame", 10)
        mark = len(proc.output)
        proc.resize(150, 40)
        wait_until(lambda: longest_rule(bytes(proc.output[mark:])) >= 110, "a 150-column frame", 10)
        proc.send("q")
        assert proc.wait() == 0
        assert b"Traceback" not in proc.output
    finally:
        proc.kill()
        with contextlib.suppress(Exception):
            embedded.stop(force=True)  # a failed test must not leave a server behind


def test_stderr_not_a_terminal_is_refused_in_one_line(process_env: dict[str, str]):
    import subprocess

    embedded = EmbeddedRedis(Path(process_env["SESSIONMON_DB"]))
    try:
        proc = subprocess.run(
            [sessionmon_exe(), "--demo"],
            env=process_env,
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        assert proc.returncode == 2
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "not a terminal" in lines[0], proc.stderr
        assert "\x1b" not in proc.stderr + proc.stdout  # nothing drawn
        assert server_alive(embedded) is None  # the embedded Redis was released
    finally:
        with contextlib.suppress(Exception):
            embedded.stop(force=True)  # a failed test must not leave a server behind
