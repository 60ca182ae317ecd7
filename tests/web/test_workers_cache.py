"""Four uvicorn workers with ``SESSIONMON_REVOCATION_CACHE=1``: each worker keeps its own cache
(its own invalidation connection), and a force-logout from the CLI, another process, is rejected
by every one of them, including workers whose cache held "not revoked" for that token."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
from collections.abc import Callable, Iterator

import httpx
import pytest
from redis.cluster import RedisCluster

from sessionmon.core.blacklist import connect
from tests.support.waiting import wait_until
from tests.web.conftest import REPO, WebServer

WORKERS = 4
CACHE_CLIENT = "sessionmon-revocation-cache"


class Worker:
    """A keep-alive connection one worker serves; every answer must come from that worker."""

    def __init__(self, conn: http.client.HTTPConnection, pid: str) -> None:
        self.conn = conn
        self.pid = pid

    def me(self, access: str) -> tuple[int, str]:
        self.conn.request("GET", "/me", headers={"Cookie": f"accessToken={access}"})
        response = self.conn.getresponse()
        body = json.loads(response.read())
        assert response.getheader("x-worker-pid") == self.pid, "answered by another worker"
        return response.status, body.get("reason", "") if response.status == 401 else ""


@pytest.fixture
def workers_of() -> Iterator[Callable[[WebServer, str], list[Worker]]]:
    opened: list[Worker] = []

    def connect(server: WebServer, access: str) -> list[Worker]:
        """New connections until each of the WORKERS workers answered on one."""
        found: dict[str, Worker] = {}

        def another() -> bool:
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
            conn.request("GET", "/me", headers={"Cookie": f"accessToken={access}"})
            response = conn.getresponse()
            response.read()
            assert response.status == 200
            pid = response.getheader("x-worker-pid") or ""
            if pid and pid not in found:
                found[pid] = Worker(conn, pid)
                opened.append(found[pid])
            else:
                conn.close()
            return len(found) == WORKERS

        wait_until(another, f"a connection to each of {WORKERS} workers", timeout=30)
        return list(found.values())

    yield connect
    for worker in opened:
        worker.conn.close()


def cache_clients(redis_url: str) -> int:
    """Invalidation connections (on a cluster: the fewest any master has, one per worker each)."""
    client = connect(redis_url)
    try:
        if isinstance(client, RedisCluster):
            lists = [client.get_redis_connection(n).client_list() for n in client.get_primaries()]
        else:
            lists = [client.client_list()]
        return min(sum(1 for c in listing if c.get("name") == CACHE_CLIENT) for listing in lists)
    finally:
        client.close()


def test_a_force_logout_from_the_cli_is_rejected_by_every_cached_worker(
    start_webapp: Callable[..., WebServer],
    workers_of: Callable[[WebServer, str], list[Worker]],
    cli_env: dict[str, str],
    redis_url: str,
) -> None:
    before = cache_clients(redis_url)
    server = start_webapp(workers=WORKERS, app="tests.web.pid_app:app", revocation_cache="1")
    logins = []
    for email in ("victim@example.com", "bystander@example.com"):
        r = httpx.post(server.url + "/login", json={"email": email})
        assert r.status_code == 200, r.text
        logins.append((r.json()["user"]["session_id"], r.cookies["accessToken"]))
    (victim, access), (_, other) = logins
    workers = workers_of(server, access)
    # One invalidation connection per worker: the cache is on in every one of them.
    wait_until(lambda: cache_clients(redis_url) - before >= WORKERS, "4 cache connections")
    for worker in workers:  # each caches "not revoked" for both tokens
        for token in (access, other):
            wait_until(lambda w=worker, t=token: w.me(t) == (200, ""), f"200 from {worker.pid}")

    proc = subprocess.run(
        [sys.executable, "-m", "sessionmon", "logout", victim],
        cwd=REPO,
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr

    for worker in workers:
        wait_until(
            lambda w=worker: w.me(access) == (401, "revoked"),
            f"worker {worker.pid} to reject the revoked token",
            timeout=10,
        )
        assert worker.me(access) == (401, "revoked")  # and it stays rejected
        assert worker.me(other) == (200, "")
