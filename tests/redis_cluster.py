"""A real Redis Cluster for tests: masters (and replicas) from the machine's ``redis-server`` on
free loopback ports, joined with ``redis-cli --cluster create``, stopped and removed afterwards."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
from pathlib import Path

import redis

from tests.redis_server import RedisProcess, free_port, system_redis_server
from tests.redis_tls import Certificates
from tests.support.waiting import wait_until


def cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too (so at most 55535)."""
    for _ in range(200):
        port = free_port()
        if port > 55535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


class RedisClusterProcesses:
    """``masters`` masters and ``replicas`` replicas per master, in ``workdir``; with ``tls``
    every node is TLS only (client certificates required, TLS on the cluster bus)."""

    def __init__(
        self,
        workdir: Path,
        masters: int = 3,
        replicas: int = 0,
        args: tuple[str, ...] = (),
        tls: Certificates | None = None,
    ) -> None:
        self.workdir = workdir
        self.tls = tls
        self.masters = masters
        self.replicas = replicas
        self.args = args
        self.nodes: list[RedisProcess] = []

    @property
    def url(self) -> str:
        """``redis+cluster://`` with every node as a seed (``?tls=1`` with ``tls``)."""
        seeds = ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)
        return f"redis+cluster://{seeds}" + ("?tls=1" if self.tls else "")

    def start(self, timeout: float = 60.0) -> RedisClusterProcesses:
        binary = system_redis_server()
        cli = shutil.which("redis-cli")
        if binary is None or cli is None:
            raise RuntimeError("redis-server and redis-cli are needed for a Redis Cluster")
        try:
            for _i in range(self.masters * (1 + self.replicas)):
                port = cluster_port()
                node = RedisProcess(
                    self.workdir / f"node-{port}",
                    port=port,
                    binary=binary,
                    args=(
                        "--cluster-enabled", "yes",
                        "--cluster-config-file", f"nodes-{port}.conf",
                        "--cluster-node-timeout", "2000",
                        "--appendfsync", "everysec",
                        *self.args,
                        *(self.tls.server_args(port) if self.tls else ()),
                    ),
                    tls=self.tls.client_options() if self.tls else None,
                )  # fmt: skip
                self.nodes.append(node.start())
            subprocess.run(
                [
                    cli, *(self.tls.cli_args() if self.tls else ()), "--cluster", "create",
                    *(f"127.0.0.1:{n.port}" for n in self.nodes),
                    "--cluster-replicas", str(self.replicas), "--cluster-yes",
                ],
                check=True,
                capture_output=True,
                timeout=timeout,
            )  # fmt: skip
            self.wait_ok(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def state_ok(self) -> bool:
        """Every node says ``cluster_state:ok`` and knows every other node."""
        for node in self.nodes:
            if node.proc is None:
                continue
            client = node.client()
            try:
                raw = client.execute_command("CLUSTER", "INFO")
            except redis.RedisError:
                return False
            finally:
                client.close()
            text = raw.decode() if isinstance(raw, bytes) else str(raw)
            info = dict(line.split(":", 1) for line in text.split() if ":" in line)
            if info.get("cluster_state") != "ok":
                return False
            if int(info.get("cluster_known_nodes", 0)) < len(self.live()):
                return False
        return True

    def master_of(self, node: RedisProcess) -> bool:
        client = node.client()
        try:
            return client.info("replication").get("role") == "master"
        finally:
            client.close()

    def live(self) -> list[RedisProcess]:
        return [n for n in self.nodes if n.proc is not None]

    def wait_ok(self, timeout: float = 60.0) -> None:
        wait_until(self.state_ok, "the Redis Cluster to reach cluster_state:ok", timeout, 0.05)

    def flush(self) -> None:
        """FLUSHALL on every master (the fixture's own cluster only)."""
        for node in self.live():
            client = node.client()
            try:
                with contextlib.suppress(redis.exceptions.ReadOnlyError):
                    client.flushall()
            finally:
                client.close()

    def stop(self) -> None:
        for node in self.nodes:
            with contextlib.suppress(Exception):
                node.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)
