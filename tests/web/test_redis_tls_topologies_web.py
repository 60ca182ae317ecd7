"""The example app (real uvicorn) through ``rediss+sentinel://`` and a TLS-only Redis Cluster:
login, ``GET /me`` and a revoking logout work; a bad certificate is 503 ``redis_unavailable`` with
the one-line reason in the app's log (never 200 for what it could not check). A cluster that
cannot be reached when the app starts (its layout is read then) does not stop the app: 503 until
it can, then 200 by itself."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.cli.test_cli_cluster_tls import cluster_env
from tests.cli.test_cli_sentinel_tls import sentinel_env
from tests.redis_cluster import RedisClusterProcesses
from tests.redis_sentinel import SentinelSetup
from tests.redis_tls import Certificates, tls_binary
from tests.support.waiting import wait_until
from tests.web.conftest import WebServer
from tests.web.test_http_flow import assert_401, get_me, login
from tests.web.test_redis_remote_web import assert_503, settings_of

Start = Callable[..., WebServer]


@pytest.fixture(scope="module")
def tls_sentinel(
    certs: Certificates, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SentinelSetup]:
    setup = SentinelSetup(tmp_path_factory.mktemp("tls-sentinel"), tls_binary(), tls=certs)
    try:
        yield setup.start()
    finally:
        setup.stop()


@pytest.fixture(scope="module")
def tls_cluster(
    certs: Certificates, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RedisClusterProcesses]:
    tls_binary()
    cluster = RedisClusterProcesses(tmp_path_factory.mktemp("tls-cluster"), masters=3, tls=certs)
    yield cluster.start()
    cluster.stop()


def revoking_logout_works(server: WebServer) -> str:
    _, access, refresh = login(server)
    assert get_me(server, access, refresh).status_code == 200
    r = httpx.post(server.url + "/logout", headers={"Cookie": f"accessToken={access}"})
    assert r.status_code == 200, r.text
    assert_401(get_me(server, access), "revoked")
    return access


def test_the_web_app_through_tls_sentinels(
    start_webapp: Start, tls_sentinel: SentinelSetup
) -> None:
    good = start_webapp(access_ttl="60s", **settings_of(sentinel_env(tls_sentinel)))
    revoking_logout_works(good)
    _, access, _ = login(good)
    bad = start_webapp(
        access_ttl="60s", **settings_of(sentinel_env(tls_sentinel, ca="other-ca.crt"))
    )
    assert_503(bad, access)
    assert "no Redis Sentinel answered" in bad.log() and "no CA of --redis-ca-file" in bad.log()


def test_the_web_app_on_a_tls_cluster(
    start_webapp: Start, tls_cluster: RedisClusterProcesses, tmp_path: Path
) -> None:
    """A cluster's layout is read when the client is made: with a CA that did not sign the
    nodes' certificates the app starts anyway, answers 503 with the one-line reason, and
    recovers by itself once the CA file is the right one."""
    good = start_webapp(access_ttl="60s", **settings_of(cluster_env(tls_cluster)))
    revoking_logout_works(good)
    _, access, _ = login(good)
    assert tls_cluster.tls is not None
    ca_file = tmp_path / "ca-in-use.crt"
    shutil.copyfile(tls_cluster.tls.path("other-ca.crt"), ca_file)
    bad = start_webapp(
        access_ttl="60s",
        **settings_of(cluster_env(tls_cluster, SESSIONMON_REDIS_CA_FILE=str(ca_file))),
    )
    assert_503(bad, access)
    assert_one_line_reason(bad, "TLS handshake failed", "no CA of --redis-ca-file")
    shutil.copyfile(tls_cluster.tls.path("ca.crt"), ca_file)
    wait_until(lambda: get_me(bad, access).status_code == 200, "the app to recover", 15)
    assert bad.alive


def test_the_web_app_starts_with_its_cluster_down_and_recovers(
    start_webapp: Start, tmp_path: Path
) -> None:
    cluster = RedisClusterProcesses(tmp_path / "cluster", masters=3).start()
    try:
        good = start_webapp(access_ttl="60s", redis_url=cluster.url)
        _, access, _ = login(good)
        assert get_me(good, access).status_code == 200
        for node in cluster.nodes:
            node.stop()
        down = start_webapp(access_ttl="60s", redis_url=cluster.url)
        assert_503(down, access)
        r = httpx.post(down.url + "/login", json={"email": "x@example.com", "name": "x"})
        assert r.status_code == 503 and r.json()["reason"] == "redis_unavailable", r.text
        assert_one_line_reason(down, "Redis Cluster", "no seed answered")
        for node in cluster.nodes:
            node.start()
        cluster.wait_ok()
        wait_until(lambda: get_me(down, access).status_code == 200, "the app to recover", 15)
        assert down.alive and "Traceback" not in down.log()
    finally:
        cluster.stop()


def assert_one_line_reason(server: WebServer, *words: str) -> None:
    """The app's log names the reason in one line and has no traceback (the app kept running)."""
    wait_until(lambda: all(w in server.log() for w in words), f"{words} in the app's log")
    log = server.log()
    assert "Traceback" not in log and "Application startup failed" not in log, log
    assert any(all(w in line for w in words) for line in log.splitlines()), log
    assert server.alive
