"""The example app over real HTTP: uvicorn on 127.0.0.1, real cookies, real Redis and SQLite."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable

import httpx
import redis

from sessionmon.core.auth import Auth
from sessionmon.core.blacklist_keys import KeyLayout
from sessionmon.core.store import SessionStore
from sessionmon.core.tokens import Reason, TokenCodec
from tests.redis_server import RedisProcess
from tests.web.conftest import WebServer

Start = Callable[..., WebServer]
REASONS = {r.value for r in Reason}


def login(server: WebServer, email: str = "Ann@Example.com") -> tuple[str, str, str]:
    """Log in over HTTP; returns (session id, access token, refresh token)."""
    r = httpx.post(server.url + "/login", json={"email": email})
    assert r.status_code == 200, r.text
    user = r.json()["user"]
    assert user["email"] == email.lower() and user["valid"] is True
    return user["session_id"], r.cookies["accessToken"], r.cookies["refreshToken"]


def get_me(
    server: WebServer,
    access: str | None = None,
    refresh: str | None = None,
    authorization: str | None = None,
) -> httpx.Response:
    """GET /me with exactly the credentials given (no cookie jar in between)."""
    headers = {}
    cookies = [f"{n}={v}" for n, v in (("accessToken", access), ("refreshToken", refresh)) if v]
    if cookies:
        headers["Cookie"] = "; ".join(cookies)
    if authorization is not None:
        headers["Authorization"] = authorization
    return httpx.get(server.url + "/me", headers=headers)


def assert_401(r: httpx.Response, reason: str) -> None:
    assert r.status_code == 401, r.text
    assert r.json() == {"error": "unauthorized", "reason": reason}
    assert reason in REASONS
    assert "set-cookie" not in r.headers


def set_cookies(r: httpx.Response) -> dict[str, str]:
    """Set-Cookie headers of a response by cookie name."""
    return {h.split("=", 1)[0]: h for h in r.headers.get_list("set-cookie")}


def test_login_me_then_silent_refresh_after_the_access_ttl(
    start_webapp: Start, store: SessionStore, codec: TokenCodec
) -> None:
    server = start_webapp(access_ttl="1s")
    r = httpx.post(server.url + "/login", json={"email": "Ann@Example.com", "name": "Ann"})
    assert r.status_code == 200
    login_cookies = set_cookies(r)
    for name, max_age in (("accessToken", "Max-Age=1"), ("refreshToken", "Max-Age=120")):
        attrs = login_cookies[name].split("; ")
        assert {"HttpOnly", "SameSite=Lax", "Path=/", max_age} <= set(attrs)
        assert "Secure" not in attrs
    sid = r.json()["user"]["session_id"]
    access, refresh = r.cookies["accessToken"], r.cookies["refreshToken"]
    before = store.get_session(sid)
    assert before is not None

    first = get_me(server, access, refresh)
    assert first.status_code == 200
    assert first.json()["user"] == {
        "session_id": sid,
        "email": "ann@example.com",
        "name": "Ann",
        "user_id": "ann@example.com",
        "valid": True,
    }

    # Keep sending the ORIGINAL tokens: every answer is 200, and once the access token has
    # expired the middleware refreshes silently and sends a new accessToken cookie.
    deadline = time.monotonic() + 10
    while True:
        r = get_me(server, access, refresh)
        assert r.status_code == 200, r.text
        if "accessToken" in set_cookies(r):
            break
        assert time.monotonic() < deadline, "no silent refresh within 10 s"
        time.sleep(0.05)
    assert r.json()["refreshed"] is True
    attrs = set_cookies(r)["accessToken"].split("; ")
    assert {"HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=1"} <= set(attrs)
    # Rotation: a new refresh token too, for what is left of the refresh life.
    refresh_attrs = set_cookies(r)["refreshToken"].split("; ")
    assert {"HttpOnly", "SameSite=Lax", "Path=/"} <= set(refresh_attrs)
    assert 100 <= int(next(a for a in refresh_attrs if a.startswith("Max-Age="))[8:]) <= 120
    assert r.cookies["refreshToken"] != refresh

    new_access = r.cookies["accessToken"]
    assert new_access != access
    after = store.get_session(sid)
    assert after is not None
    assert after.access_exp > before.access_exp
    assert after.access_jti != before.access_jti and after.refresh_count >= 1
    claims = codec.verify(new_access, "access")
    assert claims.sid == sid and claims.jti == after.access_jti
    new_refresh = codec.verify(r.cookies["refreshToken"], "refresh")
    assert (
        (new_refresh.jti, new_refresh.gen)
        == (after.refresh_jti, after.generation)
        == (
            after.refresh_jti,
            1,
        )
    )
    assert server.alive


def test_force_logout_from_the_core_revokes_an_unexpired_access_token(
    start_webapp: Start, auth: Auth, codec: TokenCodec, store: SessionStore
) -> None:
    server = start_webapp(access_ttl="60s")
    sid, access, refresh = login(server)
    assert get_me(server, access, refresh).status_code == 200
    assert get_me(server, authorization=f"Bearer {access}").status_code == 200

    result = auth.force_logout(sid, actor="ops", reason="incident")  # as the monitor does
    assert result.ok and result.deleted == 1
    assert store.get_session(sid) is None

    assert codec.verify(access, "access").exp > time.time()  # not expired: only revoked
    # Another process's revocation reaches the server's revocation cache within its 50 ms bound.
    deadline = time.monotonic() + 10
    while (first := get_me(server, access)).status_code == 200:
        assert time.monotonic() < deadline, "still accepted 10 s after the force-logout"
    assert_401(first, Reason.REVOKED)
    assert_401(get_me(server, access, refresh), Reason.REVOKED)
    assert_401(get_me(server, authorization=f"Bearer {access}"), Reason.REVOKED)
    # A replay of the old refresh token (alone, as after the access cookie expired) is refused.
    assert_401(get_me(server, refresh=refresh), Reason.REVOKED)


def test_logout_clears_cookies_blacklists_deletes_and_audits(
    start_webapp: Start, store: SessionStore, redis_client: redis.Redis, prefix: str
) -> None:
    server = start_webapp(access_ttl="60s")
    with httpx.Client(base_url=server.url) as client:
        r = client.post("/login", json={"email": "bob@example.com"})
        assert r.status_code == 200
        sid = r.json()["user"]["session_id"]
        access, refresh = client.cookies["accessToken"], client.cookies["refreshToken"]
        session = store.get_session(sid)
        assert session is not None
        assert client.get("/me").status_code == 200

        r = client.post("/logout")
        assert r.status_code == 200, r.text
        assert r.json()["logged_out"] is True and r.json()["deleted"] == 1
        cleared = set_cookies(r)
        for name in ("accessToken", "refreshToken"):
            assert "Max-Age=0" in cleared[name].split("; ")
        assert not client.cookies  # the client dropped both cookies
        assert_401(client.get("/me"), Reason.NO_TOKEN)

    layout = KeyLayout(prefix)
    keys = [
        layout.token_key(sid, session.access_jti),
        layout.token_key(sid, session.refresh_jti),
        layout.sid_key(sid),
    ]
    for key in keys:
        assert redis_client.exists(key), key
        ttl = redis_client.ttl(key)
        assert 0 < ttl <= 121, (key, ttl)  # every key has a TTL (the token's remaining life)
    assert store.get_session(sid) is None
    audit = store.audit(session_id=sid)
    assert len(audit) == 1
    row = audit[0]
    assert (row.action, row.actor, row.outcome) == ("logout", "user", "ok")
    assert set(row.revoked) == set(keys)

    assert_401(get_me(server, access, refresh), Reason.REVOKED)
    assert_401(get_me(server, refresh=refresh), Reason.REVOKED)


def _b64(data: dict[str, object] | bytes) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def test_bad_tokens_are_401_with_a_reason_and_the_server_keeps_serving(
    start_webapp: Start,
) -> None:
    server = start_webapp(access_ttl="60s")
    sid, access, refresh = login(server)
    header, payload, signature = access.split(".")

    # One flipped character in the middle of the signature (the last one may only flip
    # padding bits).
    i = len(signature) // 2
    flipped = signature[:i] + ("A" if signature[i] != "A" else "B") + signature[i + 1 :]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    forged_payload = _b64({**claims, "email": "admin@example.com"})
    alg_none = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{payload}."
    cases = [
        ({"access": f"{header}.{payload}.{flipped}"}, Reason.BAD_SIGNATURE),
        ({"access": f"{header}.{forged_payload}.{signature}"}, Reason.BAD_SIGNATURE),
        ({"access": alg_none}, Reason.BAD_SIGNATURE),
        ({"access": alg_none, "refresh": refresh}, Reason.BAD_SIGNATURE),  # no refresh for it
        ({"access": "garbage"}, Reason.MALFORMED),
        ({"authorization": "Bearer not-a-jwt"}, Reason.MALFORMED),
        ({"authorization": "Bearer a.b.c"}, Reason.MALFORMED),
        ({"authorization": "Bearer"}, Reason.MALFORMED),
        ({"authorization": "Bearer " + "x" * 9000}, Reason.TOO_LARGE),
        ({"authorization": f"Bearer {refresh}"}, Reason.WRONG_TYPE),
        ({"authorization": "Basic dXNlcjpwYXNz"}, Reason.NO_TOKEN),
        ({"refresh": access}, Reason.WRONG_TYPE),
        ({}, Reason.NO_TOKEN),
    ]
    for kwargs, reason in cases:
        r = get_me(server, **kwargs)
        assert_401(r, reason)
        assert "secret" not in r.text.lower() and "key" not in r.text.lower()

    # A garbage Authorization header wins over good cookies: it is what the client sent.
    assert_401(get_me(server, access, refresh, authorization="Bearer junk"), Reason.MALFORMED)
    # A Cookie header that is not even well-formed is not an error, just no user.
    r = httpx.get(server.url + "/me", headers={"Cookie": 'accessToken="x; ;=; =="; junk'})
    assert r.status_code == 401 and r.json()["reason"] in REASONS

    assert server.alive
    ok = get_me(server, access, refresh)
    assert ok.status_code == 200 and ok.json()["user"]["session_id"] == sid


def test_redis_down_is_503_and_the_app_recovers_when_redis_is_back(
    start_webapp: Start, redis_process: RedisProcess, store: SessionStore
) -> None:
    server = start_webapp(access_ttl="60s", redis_url=redis_process.url)
    sid, access, refresh = login(server)
    assert get_me(server, access, refresh).status_code == 200

    redis_process.stop()
    r = get_me(server, access, refresh)
    assert r.status_code == 503, r.text
    assert r.json() == {"error": "unavailable", "reason": "redis_unavailable"}
    assert int(r.headers["retry-after"]) > 0
    assert "set-cookie" not in r.headers  # the client keeps its tokens
    # A logout cannot blacklist anything now, so nothing is deleted either.
    r = httpx.post(server.url + "/logout", headers={"Cookie": f"accessToken={access}"})
    assert r.status_code == 503 and "set-cookie" not in r.headers
    assert store.get_session(sid) is not None
    # The app itself stays up: requests without tokens do not need Redis.
    assert httpx.get(server.url + "/").status_code == 200
    assert_401(get_me(server), Reason.NO_TOKEN)
    assert server.alive

    redis_process.start()
    deadline = time.monotonic() + 15
    while True:
        r = get_me(server, access, refresh)
        if r.status_code == 200:
            break
        assert r.status_code == 503, r.text
        assert time.monotonic() < deadline, "still 503 15 s after Redis came back"
        time.sleep(0.05)
    assert r.json()["user"]["session_id"] == sid
