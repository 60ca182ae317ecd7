"""A real Sentinel deployment for tests: 1 master, 1 replica, 3 sentinels on free loopback ports,
all started from the machine's ``redis-server`` (``--sentinel``), with a quick failover
(down-after 1 s, failover-timeout 3 s); with ``tls`` every one of them speaks TLS only (client
certificates required), and so do their links to each other."""

from __future__ import annotations

import contextlib
import subprocess
import time
from pathlib import Path

import redis

from tests.redis_server import RedisProcess, free_port, wait_for
from tests.redis_tls import Certificates

SERVICE = "smtest"
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 3000


class SentinelProcess:
    """One ``redis-server sentinel.conf --sentinel`` (it rewrites its config file: a copy each)."""

    def __init__(
        self,
        workdir: Path,
        binary: str,
        master_port: int,
        tls: Certificates | None = None,
        listen_tls: bool = True,
    ) -> None:
        self.workdir = workdir
        self.tls = tls
        self.listen_tls = listen_tls
        self.binary = binary
        self.port = free_port()
        self.master_port = master_port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> SentinelProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "sentinel.conf"
        # The TLS options as config lines ("--tls-port" "P" -> "tls-port P").
        args = list(self.tls.server_args(self.port)) if self.tls else []
        tls = "".join(f"{k[2:]} {v}\n" for k, v in zip(args[::2], args[1::2], strict=True))
        tls = tls.replace("tls-cluster yes\n", "")  # not a sentinel's option
        if not self.listen_tls:  # plain clients, TLS to the data nodes
            tls = tls.replace("port 0\n", "").replace(f"tls-port {self.port}\n", "")
        conf.write_text(
            f"port {self.port}\n"
            f"{tls}"
            "bind 127.0.0.1\n"
            f"dir {self.workdir}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {self.master_port} 2\n"
            f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}\n"
            f"sentinel parallel-syncs {SERVICE} 1\n"
        )
        with open(self.workdir / "sentinel.log", "ab") as log:
            self.proc = subprocess.Popen(
                [self.binary, str(conf), "--sentinel"], stdout=log, stderr=subprocess.STDOUT
            )
        return self

    def client(self) -> redis.Redis:
        tls = self.tls.client_options() if self.tls and self.listen_tls else {}
        return redis.Redis(
            host="127.0.0.1", port=self.port, socket_timeout=2, decode_responses=True, **tls
        )

    def master_state(self) -> dict[str, object] | None:
        client = self.client()
        try:
            return dict(client.sentinel_master(SERVICE))
        except redis.RedisError:
            return None
        finally:
            client.close()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None


class SentinelSetup:
    """Master, replica and three sentinels; ``url(...)`` is sessionmon's URL of the service."""

    def __init__(
        self,
        workdir: Path,
        binary: str,
        tls: Certificates | None = None,
        sentinel_tls: bool = True,
    ) -> None:
        """``tls``: every server speaks TLS only; ``sentinel_tls=False``: the sentinels take
        plain clients (and speak TLS to the data nodes)."""
        self.workdir = workdir
        self.binary = binary
        self.tls = tls
        self.sentinel_tls = sentinel_tls
        self.master = self._server(workdir / "master")
        self.replica: RedisProcess | None = None
        self.sentinels: list[SentinelProcess] = []

    def start(self) -> SentinelSetup:
        self.master.start()
        self.replica = self._server(
            self.workdir / "replica", "--replicaof", "127.0.0.1", str(self.master.port)
        ).start()
        client = self.master.client()
        try:
            wait_for(
                lambda: "online" in str(client.info("replication").get("slave0", "")),
                "the replica to be online",
            )
        finally:
            client.close()
        self.sentinels = [
            SentinelProcess(
                self.workdir / f"sentinel-{i}",
                self.binary,
                self.master.port,
                self.tls,
                self.sentinel_tls,
            ).start()
            for i in range(3)
        ]
        # Every sentinel sees the master, the replica and the two other sentinels (their hello
        # messages go through the master every 2 s).
        wait_for(lambda: all(self._ready(s) for s in self.sentinels), "the sentinels to agree", 30)
        return self

    def _server(self, workdir: Path, *args: str) -> RedisProcess:
        """A data node (TLS only with ``tls``)."""
        if self.tls is None:
            return RedisProcess(workdir, args=args, binary=self.binary)
        port = free_port()
        return RedisProcess(
            workdir,
            port=port,
            args=(*args, *self.tls.server_args(port)),
            binary=self.binary,
            tls=self.tls.client_options(),
        )

    @staticmethod
    def _ready(sentinel: SentinelProcess) -> bool:
        state = sentinel.master_state()
        return (
            state is not None
            and int(str(state.get("num-other-sentinels", 0))) == 2
            and int(str(state.get("num-slaves", 0))) == 1
        )

    def url(self, service: str = SERVICE, userinfo: str = "") -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        scheme = "rediss+sentinel" if self.tls else "redis+sentinel"
        plain_sentinels = "?sentinel_tls=0" if self.tls and not self.sentinel_tls else ""
        return f"{scheme}://{userinfo}{hosts}/{service}{plain_sentinels}"

    def master_port(self) -> int | None:
        """The master's port as the sentinels say (None while none answers)."""
        for sentinel in self.sentinels:
            client = sentinel.client()
            try:
                address = client.sentinel_get_master_addr_by_name(SERVICE)
            except redis.RedisError:
                continue
            finally:
                client.close()
            if address:
                return int(address[1])
        return None

    def stop(self) -> None:
        for sentinel in self.sentinels:
            with contextlib.suppress(Exception):
                sentinel.stop()
        for proc in (self.replica, self.master):
            if proc is not None:
                with contextlib.suppress(Exception):
                    proc.stop()


def wait_for_failover(setup: SentinelSetup, old_port: int, timeout: float = 30.0) -> int:
    """Wait until the sentinels name another master; its port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        port = setup.master_port()
        if port is not None and port != old_port:
            return port
        time.sleep(0.05)
    raise AssertionError("the sentinels did not fail over")
