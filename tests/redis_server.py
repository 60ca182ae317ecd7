"""A private, real redis-server for tests that stop and restart Redis."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import redis

from sessionmon.core.embedded import redis_server_binary


def system_redis_server() -> str | None:
    """The machine's ``redis-server`` (Redis 7, built with TLS here), or None."""
    return shutil.which("redis-server")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisProcess:
    """A redis-server on 127.0.0.1 and a free port, which a test can kill, restart, pause.

    ``args``: more redis-server options (they win over the defaults: ``--appendonly no``).
    ``binary``: another redis-server (default: the embedded server's, see ``system_redis_server``).
    ``tls``: redis-py's ``ssl_*`` options of a TLS-only server (``--port 0 --tls-port`` in
    ``args``): the start-up ping and ``client()`` speak TLS with them.
    """

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        args: Sequence[str] = (),
        binary: str | None = None,
        tls: Mapping[str, Any] | None = None,
    ) -> None:
        self.workdir = workdir
        self.tls = dict(tls or {})
        self.port = port or free_port()
        self.args = list(args)
        self.binary = binary
        self.proc: subprocess.Popen[bytes] | None = None
        self.paused = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                self.binary or redis_server_binary(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.workdir),
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                *self.args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        client = redis.Redis(
            host="127.0.0.1", port=self.port, socket_connect_timeout=0.2, **self.tls
        )
        try:
            while time.monotonic() < deadline:
                with contextlib.suppress(redis.RedisError):
                    if client.ping():
                        return self
                time.sleep(0.02)
        finally:
            client.close()
        raise RuntimeError(f"redis-server on port {self.port} did not start")

    def client(self, **kwargs: object) -> redis.Redis:
        """A plain redis-py client of this server (the test closes it)."""
        options = self.tls | kwargs
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5, **options)

    def pause(self) -> None:
        """SIGSTOP: the server hangs (connections are accepted by the kernel, never answered)."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        """SIGCONT a paused server."""
        if self.proc is not None and self.paused:
            os.kill(self.proc.pid, signal.SIGCONT)
        self.paused = False

    def stop(self) -> None:
        """Kill the server (SIGKILL: like a crash, nothing is flushed that wasn't already)."""
        self.resume()
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


# Servers with the faults a blacklist must notice (options for ``RedisProcess(args=...)``).
EVICTING = ("--maxmemory", "3mb", "--maxmemory-policy", "allkeys-lru")
FULL = ("--maxmemory", "2mb", "--maxmemory-policy", "noeviction", "--appendonly", "no")
NO_PERSISTENCE = ("--save", "", "--appendonly", "no")

StartRedis = Callable[..., RedisProcess]


@contextlib.contextmanager
def memory_full(proc: RedisProcess) -> Iterator[None]:
    """Write filler keys (no TTL, another prefix) until Redis refuses them (OOM), then keep it
    full: idle clients' buffers are freed by the server's cron, which would leave room for a few
    small keys again, so maxmemory is lowered 256 KB under what the server now uses."""
    client = proc.client()
    n = 0
    try:
        for size in (64 * 1024, 4096):
            blob = b"x" * size
            for _ in range(100_000):
                n += 1
                try:
                    client.set(f"filler:{n}", blob)
                except redis.exceptions.OutOfMemoryError:
                    break
            else:
                raise AssertionError("Redis never ran out of memory")
        used = int(client.info("memory")["used_memory"])
        client.config_set("maxmemory", str(used - 256 * 1024))
        with contextlib.suppress(redis.exceptions.OutOfMemoryError):
            client.set("filler:check", b"x")
            raise AssertionError("Redis still takes writes")
        yield
    finally:
        client.close()


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def start_replica(start_redis: StartRedis, master: RedisProcess) -> RedisProcess:
    replica = start_redis("--replicaof", "127.0.0.1", str(master.port))
    client = master.client()
    try:
        wait_for(
            lambda: (
                client.info("replication").get("connected_slaves") == 1
                and "online" in str(client.info("replication").get("slave0", ""))
            ),
            "the replica to be online",
        )
    finally:
        client.close()
    return replica
