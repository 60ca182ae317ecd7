"""The example app (real uvicorn) on a hung Redis, an evicting Redis, and an embedded Redis that
dies under it: 503 within the timeout, never 200 for a revoked token, recovery on its own."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import httpx
import pytest

from sessionmon.core.embedded import EmbeddedRedis
from sessionmon.core.store import DatabaseUrl, SessionStore
from tests.redis_server import EVICTING, RedisProcess, StartRedis
from tests.web.conftest import WebServer
from tests.web.test_http_flow import get_me, login

Start = Callable[..., WebServer]
MARGIN = 0.75  # seconds beyond the timeout: the request's own work on a shared, busy machine


def timed(fn: Callable[[], httpx.Response]) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = fn()
    return response, time.monotonic() - started


@pytest.mark.parametrize("cache", ["1", "0"], ids=["cache", "no-cache"])
def test_a_hung_redis_is_503_within_the_web_timeout(
    start_webapp: Start, redis_process: RedisProcess, store: SessionStore, cache: str
) -> None:
    server = start_webapp(  # default timeout: 1 s
        access_ttl="60s", redis_url=redis_process.url, revocation_cache=cache
    )
    sid, access, refresh = login(server)
    assert get_me(server, access, refresh).status_code == 200
    redis_process.pause()
    paused = time.monotonic()
    try:
        if cache == "1":
            # The cache answers from memory only while its channel was confirmed within the
            # last 50 ms: a request right after the freeze may still be 200, none after that.
            while (r := timed(lambda: get_me(server, access, refresh)))[0].status_code == 200:
                assert time.monotonic() - paused < 0.05 + MARGIN, "200 from a stale cache"
            response, took = r
            assert response.status_code == 503, response.text
            assert took < 1.0 + MARGIN, f"answered after {took:.2f}s"
        for _ in range(3):  # the pooled connection, then new ones: each within the timeout
            r, took = timed(lambda: get_me(server, access, refresh))
            assert r.status_code == 503, r.text
            assert r.json() == {"error": "unavailable", "reason": "redis_unavailable"}
            assert took < 1.0 + MARGIN, f"answered after {took:.2f}s"
        r, took = timed(
            lambda: httpx.post(
                server.url + "/logout", headers={"Cookie": f"accessToken={access}"}, timeout=30
            )
        )
        assert r.status_code == 503 and took < 1.0 + MARGIN, (r.status_code, took)
        assert store.get_session(sid) is not None
    finally:
        redis_process.resume()
    deadline = time.monotonic() + 15
    while get_me(server, access, refresh).status_code != 200:
        assert time.monotonic() < deadline, "still failing 15 s after Redis was resumed"
        time.sleep(0.05)


def test_an_evicting_redis_refuses_logout_with_503_and_reads_keep_working(
    start_webapp: Start, start_redis: StartRedis, store: SessionStore
) -> None:
    proc = start_redis(*EVICTING)
    server = start_webapp(access_ttl="60s", redis_url=proc.url)
    sid, access, refresh = login(server)
    assert get_me(server, access, refresh).status_code == 200  # authenticate is a read
    r = httpx.post(server.url + "/logout", headers={"Cookie": f"accessToken={access}"})
    assert r.status_code == 503, r.text
    assert "set-cookie" not in r.headers  # the client keeps its cookies and retries
    assert store.get_session(sid) is not None
    [row] = store.audit(session_id=sid)
    assert row.outcome == "failed: redis may evict"


def server_pid(embedded: EmbeddedRedis) -> int | None:
    """The pid of the embedded server if one answers, else None."""
    if not embedded.answering():
        return None
    try:
        return int(embedded.pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def test_the_web_app_restarts_a_dead_embedded_redis(
    start_webapp: Start,
    db_url: DatabaseUrl,
    cli_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", cli_env["XDG_DATA_HOME"])  # the app's anchor for PG
    embedded = EmbeddedRedis(db_url.anchor)
    try:
        server = start_webapp(access_ttl="60s", redis_url="")  # the embedded default
        _, access, refresh = login(server, "ann@example.com")
        _, gone_access, gone_refresh = login(server, "bob@example.com")
        r = httpx.post(server.url + "/logout", headers={"Cookie": f"accessToken={gone_access}"})
        assert r.status_code == 200 and r.json()["logged_out"], r.text
        assert get_me(server, access, refresh).status_code == 200

        first = server_pid(embedded)
        assert first is not None
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while embedded.answering():
            assert time.monotonic() < deadline, "the embedded Redis did not die"
            time.sleep(0.02)

        deadline = time.monotonic() + 20
        while True:
            revoked = get_me(server, gone_access, gone_refresh)
            assert revoked.status_code in (401, 503), revoked.text  # never 200
            ok = get_me(server, access, refresh)
            if ok.status_code == 200:
                break
            assert ok.status_code == 503, ok.text
            assert time.monotonic() < deadline, "no recovery within 20 s of the crash"
            time.sleep(0.05)
        second = server_pid(embedded)
        assert second is not None and second != first  # the app started a new server itself
        revoked = get_me(server, gone_access, gone_refresh)
        assert revoked.status_code == 401 and revoked.json()["reason"] == "revoked"
    finally:
        embedded.stop(force=True)
