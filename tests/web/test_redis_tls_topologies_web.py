"""The example app (real uvicorn) through ``rediss+sentinel://`` and a TLS-only Redis Cluster:
login, ``GET /me`` and a revoking logout work; through the sentinels, a bad certificate is 503
``redis_unavailable`` with the one-line reason in the app's log (never 200 for what it could not
check)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.cli.test_cli_cluster_tls import cluster_env
from tests.cli.test_cli_sentinel_tls import sentinel_env
from tests.redis_cluster import RedisClusterProcesses
from tests.redis_sentinel import SentinelSetup
from tests.redis_tls import Certificates, tls_binary
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
    start_webapp: Start, tls_cluster: RedisClusterProcesses
) -> None:
    """(A cluster is read when the app starts: a bad certificate there stops the start-up, with
    the one-line reason, instead of a 503 later.)"""
    good = start_webapp(access_ttl="60s", **settings_of(cluster_env(tls_cluster)))
    revoking_logout_works(good)
