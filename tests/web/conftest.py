"""Run the example app as a real uvicorn server on 127.0.0.1 against this test's DB and Redis."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.redis_server import free_port

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = 30.0


class WebServer:
    """``python -m uvicorn examples.webapp:app`` (or another ``app``) in a subprocess, from the
    repo root."""

    def __init__(
        self,
        env: dict[str, str],
        log_path: Path,
        workers: int = 1,
        args: tuple[str, ...] = (),
        app: str = "examples.webapp:app",
    ) -> None:
        self.env = env
        self.log_path = log_path
        self.workers = workers
        self.args = args
        self.app = app
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> WebServer:
        for _attempt in range(3):  # a free port can be taken between probe and bind: retry
            self.port = free_port()
            with open(self.log_path, "ab") as log:
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
                        "--log-level",
                        "warning",
                        *(["--workers", str(self.workers)] if self.workers > 1 else []),
                        *self.args,
                    ],
                    cwd=REPO,
                    env=self.env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            if self._wait_ready():
                return self
            self.stop()
        raise AssertionError(f"the example app did not start:\n{self.log()}")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return False
            try:
                if httpx.get(self.url + "/", timeout=1.0).status_code == 200:
                    return True
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        return False

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None


@pytest.fixture
def start_webapp(cli_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., WebServer]]:
    """Start the example app (``workers`` uvicorn worker processes, extra uvicorn ``args``, another
    ``app`` import string); other keyword arguments become ``SESSIONMON_<NAME>`` variables."""
    servers: list[WebServer] = []

    def start(
        workers: int = 1,
        args: tuple[str, ...] = (),
        app: str = "examples.webapp:app",
        **settings: str,
    ) -> WebServer:
        env = dict(cli_env)
        env.update(SESSIONMON_LEEWAY="0", SESSIONMON_REFRESH_TTL="120s")
        env.update({f"SESSIONMON_{k.upper()}": v for k, v in settings.items()})
        server = WebServer(env, tmp_path / f"webapp-{len(servers)}.log", workers, args, app)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()
