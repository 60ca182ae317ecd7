"""The example app (real uvicorn) over mutual TLS, and on each wrong TLS, ACL or Sentinel
setting: 503 ``redis_unavailable`` (never 200 for what it could not check, never a hang), with
the one-line reason in the app's log."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

from tests.redis_acl import SESSIONMON_RULES, add_user
from tests.redis_server import RedisProcess, free_port
from tests.redis_tls import TlsRedis, tls_env
from tests.web.conftest import WebServer
from tests.web.test_http_flow import assert_401, get_me, login

Start = Callable[..., WebServer]
UNAVAILABLE = {"error": "unavailable", "reason": "redis_unavailable"}


def settings_of(env: dict[str, str]) -> dict[str, str]:
    """``SESSIONMON_*`` variables as ``start_webapp`` keyword arguments."""
    return {k.removeprefix("SESSIONMON_").lower(): v for k, v in env.items()}


def assert_503(server: WebServer, access: str | None = None) -> None:
    started = time.monotonic()
    r = get_me(server, access)
    assert r.status_code == 503, r.text
    assert r.json() == UNAVAILABLE
    assert time.monotonic() - started < 5.0


def token_of(server: WebServer) -> str:
    """An access token the app signed (logged in on the app with a working Redis)."""
    return login(server)[1]


def test_the_web_app_over_mutual_tls(start_webapp: Start, tls_redis: TlsRedis) -> None:
    server = start_webapp(access_ttl="60s", **settings_of(tls_env(tls_redis)))
    _, access, refresh = login(server)
    assert get_me(server, access, refresh).status_code == 200
    r = httpx.post(server.url + "/logout", headers={"Cookie": f"accessToken={access}"})
    assert r.status_code == 200, r.text
    assert_401(get_me(server, access), "revoked")


def test_tls_mistakes_are_503(start_webapp: Start, tls_redis: TlsRedis) -> None:
    good = start_webapp(access_ttl="60s", **settings_of(tls_env(tls_redis)))
    access = token_of(good)
    for env, needle in (
        (tls_env(tls_redis, ca="other-ca.crt"), "no CA of --redis-ca-file"),
        (tls_env(tls_redis, SESSIONMON_REDIS_URL=tls_redis.url("localhost")), "Hostname mismatch"),
        (tls_env(tls_redis, client="stranger"), "client certificate: --redis-cert-file"),
    ):
        server = start_webapp(access_ttl="60s", **settings_of(env))
        assert_503(server, access)
        assert needle in server.log()


def test_an_acl_user_without_the_permissions_is_503(
    start_webapp: Start, redis_process: RedisProcess, prefix: str
) -> None:
    good = start_webapp(access_ttl="60s", redis_url=redis_process.url)
    access = token_of(good)
    elsewhere = add_user(redis_process, "elsewhere", SESSIONMON_RULES.format(prefix="other:"))
    server = start_webapp(access_ttl="60s", redis_url=elsewhere.url)
    assert_503(server, access)
    r = httpx.post(server.url + "/logout", headers={"Cookie": f"accessToken={access}"})
    assert r.status_code == 503, r.text
    assert "NOPERM" in server.log() and elsewhere.password not in server.log()
    assert get_me(good, access).status_code == 200  # nothing was revoked


def test_no_sentinel_answering_is_503(start_webapp: Start, redis_process: RedisProcess) -> None:
    good = start_webapp(access_ttl="60s", redis_url=redis_process.url)
    access = token_of(good)
    down = f"redis+sentinel://127.0.0.1:{free_port()},127.0.0.1:{free_port()}/smtest"
    server = start_webapp(access_ttl="60s", redis_url=down)
    assert_503(server, access)
    assert "no Redis Sentinel answered" in server.log()
