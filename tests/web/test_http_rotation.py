"""Refresh-token rotation over real HTTP with the example app: cookie jars as browsers keep them."""

from __future__ import annotations

import time

import httpx

from sessionmon.core.auth import REUSE_DETECTED
from sessionmon.core.store import SessionStore
from tests.redis_server import RedisProcess, StartRedis, start_replica
from tests.web.test_http_flow import Start, assert_401, get_me, login

UA_LAPTOP = "Laptop/1.0"
UA_THIEF = "Thief/6.6"


def refresh_in(client: httpx.Client, deadline_s: float = 10.0) -> httpx.Response:
    """GET /me until the middleware refreshes silently (the access cookie has expired)."""
    deadline = time.monotonic() + deadline_s
    while True:
        r = client.get("/me")
        assert r.status_code == 200, r.text
        if r.json()["refreshed"]:
            return r
        assert time.monotonic() < deadline, "no silent refresh"
        time.sleep(0.05)


def wait_for_access_expiry(client: httpx.Client, seconds: float) -> None:
    """Let the access cookie lapse in the jar (Max-Age) without a request from this jar."""
    deadline = time.monotonic() + seconds + 5
    while client.cookies.get("accessToken") is not None or time.monotonic() < deadline - 5:
        client.cookies.jar.clear_expired_cookies()
        assert time.monotonic() < deadline, "the access cookie did not lapse"
        time.sleep(0.05)


def test_a_copied_cookie_jar_used_after_the_original_refreshed_logs_both_out(
    start_webapp: Start, store: SessionStore
) -> None:
    server = start_webapp(access_ttl="1s", reuse_grace="0")
    with httpx.Client(base_url=server.url, headers={"User-Agent": UA_LAPTOP}) as laptop:
        r = laptop.post("/login", json={"email": "ann@example.com"})
        assert r.status_code == 200
        sid = r.json()["user"]["session_id"]
        with httpx.Client(
            base_url=server.url,
            cookies=httpx.Cookies(laptop.cookies),
            headers={"User-Agent": UA_THIEF},
        ) as thief:
            refreshed = refresh_in(laptop)
            assert {"accessToken", "refreshToken"} <= set(refreshed.cookies.keys())
            assert laptop.cookies["refreshToken"] != thief.cookies["refreshToken"]
            wait_for_access_expiry(thief, 1)
            assert_401(thief.get("/me"), "refresh_reused")
            assert_401(laptop.get("/me"), "refresh_reused")
    assert store.get_session(sid) is None
    (entry,) = [e for e in store.audit(session_id=sid) if e.action == REUSE_DETECTED]
    assert entry.detail is not None
    assert entry.detail["legitimate"]["user_agent"] == UA_LAPTOP
    assert entry.detail["reuse"]["user_agent"] == UA_THIEF
    assert entry.detail["reuse"]["ip"] == "127.0.0.1"
    assert (entry.detail["presented_generation"], entry.detail["live_generation"]) == (0, 1)


def test_two_tabs_refreshing_together_share_one_successor(
    start_webapp: Start, store: SessionStore
) -> None:
    """Within the grace window (default 10 s) the second tab gets the same new pair."""
    server = start_webapp(access_ttl="1s")
    with httpx.Client(base_url=server.url) as tab1:
        r = tab1.post("/login", json={"email": "ann@example.com"})
        sid = r.json()["user"]["session_id"]
        with httpx.Client(base_url=server.url, cookies=httpx.Cookies(tab1.cookies)) as tab2:
            wait_for_access_expiry(tab1, 1)
            wait_for_access_expiry(tab2, 1)
            one, two = tab1.get("/me"), tab2.get("/me")
            assert one.status_code == two.status_code == 200
            assert one.json()["refreshed"] and two.json()["refreshed"]
            assert one.cookies["refreshToken"] == two.cookies["refreshToken"]
            assert one.cookies["accessToken"] == two.cookies["accessToken"]
            # Read before the next requests: the new access token lives 1 s too, and on a loaded
            # machine a later request may rightly refresh again (generation 2).
            row = store.get_session(sid)
            assert row is not None and row.generation == 1
            assert tab1.get("/me").status_code == tab2.get("/me").status_code == 200
    assert store.get_session(sid) is not None
    assert not [e for e in store.audit(session_id=sid) if e.action == REUSE_DETECTED]


def test_a_replay_while_redis_is_down_is_503_and_rotates_nothing(
    start_webapp: Start, redis_process: RedisProcess, store: SessionStore
) -> None:
    server = start_webapp(access_ttl="1s", reuse_grace="0", redis_url=redis_process.url)
    sid, _, refresh = login(server)
    first = get_me(server, None, refresh)
    assert first.status_code == 200 and first.json()["refreshed"]
    before = store.get_session(sid)
    redis_process.stop()
    try:
        r = get_me(server, None, refresh)
        assert r.status_code == 503, r.text
        assert r.json() == {"error": "unavailable", "reason": "redis_unavailable"}
        assert "set-cookie" not in r.headers
        assert store.get_session(sid) == before
    finally:
        redis_process.start()
    deadline = time.monotonic() + 15
    while (r := get_me(server, None, refresh)).status_code == 503:
        assert time.monotonic() < deadline, "still 503 after Redis came back"
        time.sleep(0.05)
    assert_401(r, "refresh_reused")
    assert store.get_session(sid) is None


def test_without_rotation_a_copied_jar_keeps_working(
    start_webapp: Start, store: SessionStore
) -> None:
    """What --no-rotate-refresh loses: the copy is never detected."""
    server = start_webapp(access_ttl="1s", rotate_refresh="0", reuse_grace="0")
    with httpx.Client(base_url=server.url) as laptop:
        sid = laptop.post("/login", json={"email": "ann@example.com"}).json()["user"]["session_id"]
        with httpx.Client(base_url=server.url, cookies=httpx.Cookies(laptop.cookies)) as copy:
            refreshed = refresh_in(laptop)
            assert "refreshToken" not in refreshed.cookies
            wait_for_access_expiry(copy, 1)
            r = copy.get("/me")
            assert r.status_code == 200 and r.json()["refreshed"]
    assert store.get_session(sid) is not None


def test_a_login_over_the_session_limit_is_429(start_webapp: Start, store: SessionStore) -> None:
    server = start_webapp(max_sessions_per_user="2", on_max_sessions="deny")
    for _ in range(2):
        login(server)
    r = httpx.post(server.url + "/login", json={"email": "ann@example.com"})
    assert r.status_code == 429, r.text
    assert r.json()["error"] == "too_many_sessions" and "set-cookie" not in r.headers
    assert len(store.sessions_for_user("ann@example.com")) == 2


def test_a_login_whose_eviction_is_not_durable_is_503(
    start_webapp: Start, start_redis: StartRedis, store: SessionStore
) -> None:
    master = start_redis()
    replica = start_replica(start_redis, master)
    server = start_webapp(
        redis_url=master.url,
        redis_wait_replicas="1",
        max_sessions_per_user="1",
        on_max_sessions="evict-oldest",
    )
    first, _, _ = login(server)
    replica.pause()
    r = httpx.post(server.url + "/login", json={"email": "ann@example.com"}, timeout=30)
    assert r.status_code == 503, r.text
    assert r.json() == {"error": "unavailable", "reason": "not_durable"}
    assert "set-cookie" not in r.headers
    assert [s.id for s in store.sessions_for_user("ann@example.com")] == [first]
    replica.resume()
