"""What the web benchmarks share: the environment the apps read (SQLite file, the benchmark Redis,
a prefix and a secret of their own), the logged-in sessions, and ``uvicorn --workers N`` processes
on free loopback ports.

The secret goes to the servers through the environment, the tokens through a file only this user
can read (deleted at the end): never on a command line.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

from bench.bench_check import scratch_db
from bench.data import CACHE_DIR, clear_prefix
from bench.fixtures import bench_redis
from sessionmon.core.auth import Auth
from sessionmon.core.blacklist import connect
from sessionmon.core.keysource import open_keys
from sessionmon.core.runtime import make_blacklist, make_codec
from sessionmon.core.settings import load_settings
from sessionmon.core.store import SqliteStore

ROOT = Path(__file__).resolve().parent.parent
PREFIX = "benchweb:"  # its own prefix: force-logouts here never change the other benchmarks' keys
WORKERS = 4
START_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_stack() -> str:
    """Which HTTP parser and event loop uvicorn picks here (``auto``)."""
    try:
        import httptools  # noqa: F401

        http_impl = "httptools"
    except ImportError:
        http_impl = "h11"
    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:
        loop = "asyncio"
    import uvicorn

    return f"uvicorn {uvicorn.__version__} ({http_impl}, {loop})"


class WebSetup:
    """The SQLite store and the benchmark Redis with ``sessions`` sessions logged in, the
    environment for the apps, and the access tokens in a private file."""

    def __init__(self, name: str, n_keys: int, sessions: int) -> None:
        self.server = bench_redis(n_keys)
        self.db = scratch_db(name)
        self.secret = secrets.token_urlsafe(48)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SESSIONMON_")}
        self.env.update(
            PYTHONPATH=str(ROOT),
            SESSIONMON_DB=str(self.db),
            SESSIONMON_REDIS_URL=self.server.url,
            SESSIONMON_PREFIX=PREFIX,
            SESSIONMON_SECRET=self.secret,
            SESSIONMON_ALGORITHM="HS256",
            XDG_CONFIG_HOME=str(CACHE_DIR / "xdg-config"),  # no user config file
            XDG_DATA_HOME=str(CACHE_DIR / "xdg-data"),
        )
        self.client = connect(self.server.url)
        clear_prefix(self.client, PREFIX)
        settings = load_settings({}, self.env)
        self.store = SqliteStore(self.db)
        self.auth = Auth(
            self.store,
            make_blacklist(settings, self.client),
            make_codec(settings, keys=open_keys(settings, self.env)),
            access_ttl=settings.access_ttl,
            refresh_ttl=settings.refresh_ttl,
        )
        self.sessions = [
            self.auth.login(f"u{i}", f"user{i}@example.com", f"User {i}") for i in range(sessions)
        ]
        self.tokens = [access for _, access, _ in self.sessions]
        self.token_file = CACHE_DIR / f"tokens-{name}.txt"
        fd = os.open(self.token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write("\n".join(self.tokens) + "\n")

    def close(self) -> None:
        self.token_file.unlink(missing_ok=True)
        with contextlib.suppress(Exception):
            clear_prefix(self.client, PREFIX)
        self.client.close()
        self.store.close()


class Uvicorn:
    """``python -m uvicorn APP --workers N`` on a free loopback port (stop() ends it)."""

    def __init__(
        self, app: str, env: dict[str, str], workers: int = WORKERS, args: tuple[str, ...] = ()
    ) -> None:
        self.app = app
        self.env = env
        self.workers = workers
        self.args = args
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        self.log_path = CACHE_DIR / f"uvicorn-{app.rsplit(':', 1)[-1]}.log"

    def start(self) -> Uvicorn:
        for _attempt in range(3):  # a free port can be taken between probe and bind
            self.port = free_port()
            with open(self.log_path, "wb") as log:
                self.proc = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "uvicorn",
                        self.app,
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(self.port),
                        "--workers",
                        str(self.workers),
                        "--log-level",
                        "warning",
                        "--no-access-log",
                        *self.args,
                    ],
                    cwd=ROOT,
                    env=self.env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            if self._wait_ready():
                return self
            self.stop()
        raise RuntimeError(f"{self.app} did not start: {self.log()}")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return False
            try:
                self.get("/me", None)
                return True
            except OSError:
                time.sleep(0.05)
        return False

    def get(self, path: str, token: str | None) -> tuple[int, bytes]:
        """One request on a new connection: (status, body)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def __enter__(self) -> Uvicorn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
