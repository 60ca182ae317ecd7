"""SessionMiddleware in process (httpx's ASGI transport) on real Redis and SQLite, frozen clock."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sessionmon.core.auth import Auth
from sessionmon.core.blacklist import Blacklist, connect
from sessionmon.core.clock import FrozenClock
from sessionmon.core.errors import RedisUnavailable
from sessionmon.core.store import SessionStore
from sessionmon.core.tokens import Reason, TokenCodec
from sessionmon.web import (
    REDIS_UNAVAILABLE,
    AuthRequired,
    CookieSettings,
    SessionMiddleware,
    auth_reason,
    get_user,
    require_user,
)
from sessionmon.web.cookies import parse_cookie_header
from sessionmon.web.starlette_support import EXCEPTION_HANDLERS, current_user
from tests.redis_server import RedisProcess


def make_app(auth: Auth, cookies: CookieSettings | None = None, **options: Any) -> Starlette:
    cookies = cookies or CookieSettings()

    async def optional(request: Request) -> Response:
        user = get_user(request)
        return JSONResponse(
            {
                "user": user.to_dict() if user else None,
                "reason": auth_reason(request),
                "refreshed": request.state.auth_refreshed,
            }
        )

    async def protected(request: Request) -> Response:
        return JSONResponse(current_user(request).to_dict())

    async def own_cookie(request: Request) -> Response:
        response = JSONResponse({})
        response.headers.append("set-cookie", cookies.set_header(cookies.access_name, "mine", 5))
        return response

    return Starlette(
        routes=[
            Route("/optional", optional),
            Route("/protected", protected),
            Route("/own-cookie", own_cookie),
        ],
        middleware=[Middleware(SessionMiddleware, auth=auth, cookies=cookies, **options)],
        exception_handlers=EXCEPTION_HANDLERS,
    )


async def client_for(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def cookie_header(access: str | None, refresh: str | None, names: CookieSettings) -> str:
    pairs = [(names.access_name, access), (names.refresh_name, refresh)]
    return "; ".join(f"{n}={v}" for n, v in pairs if v)


async def test_silent_refresh_sets_the_configured_cookie(auth: Auth, clock: FrozenClock) -> None:
    names = CookieSettings(access_name="at", refresh_name="rt", secure=True)
    session, access, refresh = auth.login("u1", "ann@example.com", "Ann")
    both = {"Cookie": cookie_header(access, refresh, names)}
    async with await client_for(make_app(auth, names)) as client:
        r = await client.get("/protected", headers=both)
        assert r.status_code == 200 and "set-cookie" not in r.headers

        clock.advance(auth.access_ttl + auth.codec.leeway + 1)  # the access token has expired
        expired = await client.get("/optional", headers={"Cookie": f"at={access}"})
        assert expired.json() == {"user": None, "reason": "expired", "refreshed": False}

        r = await client.get("/optional", headers=both)
        body = r.json()
        assert body["user"]["session_id"] == session.id and body["refreshed"] is True
        header, refresh_header = r.headers.get_list("set-cookie")
        attrs = header.split("; ")
        assert attrs[0].startswith("at=") and attrs[0] != f"at={access}"
        assert {"HttpOnly", "SameSite=Lax", "Secure", "Path=/", "Max-Age=60"} <= set(attrs)
        row = auth.store.get_session(session.id)
        assert row is not None and row.refresh_count == 1 and row.generation == 1
        # The rotated refresh token, for what is left of its life.
        refresh_attrs = refresh_header.split("; ")
        assert refresh_attrs[0].startswith("rt=") and refresh_attrs[0] != f"rt={refresh}"
        left = row.refresh_exp - clock.now()  # type: ignore[operator]
        assert {"HttpOnly", "Secure", f"Max-Age={int(-(-left // 1))}"} <= set(refresh_attrs)

        # A response that sets the access cookie itself wins for it; the refresh cookie (the
        # same successor: this request came within the grace window) is still sent.
        r = await client.get("/own-cookie", headers=both)
        assert r.headers.get_list("set-cookie") == [
            names.set_header("at", "mine", 5),
            refresh_header,
        ]


async def test_bearer_header_wins_over_the_cookie(auth: Auth) -> None:
    s1, a1, _ = auth.login("u1", "one@example.com", "One")
    s2, a2, _ = auth.login("u2", "two@example.com", "Two")
    async with await client_for(make_app(auth)) as client:
        r = await client.get(
            "/protected", headers={"Cookie": f"accessToken={a1}", "Authorization": f"bearer {a2}"}
        )
        assert r.status_code == 200 and r.json()["session_id"] == s2.id
        r = await client.get("/protected", headers={"Cookie": f"accessToken={a1}"})
        assert r.json()["session_id"] == s1.id


async def test_bearer_can_be_disabled(auth: Auth) -> None:
    _, access, _ = auth.login("u1", "one@example.com", "One")
    async with await client_for(make_app(auth, bearer=False)) as client:
        r = await client.get("/protected", headers={"Authorization": f"Bearer {access}"})
        assert r.status_code == 401
        assert r.json() == {"error": "unauthorized", "reason": "no_token"}


@pytest.fixture
def down_auth(
    redis_process: RedisProcess,
    store: SessionStore,
    codec: TokenCodec,
    clock: FrozenClock,
    prefix: str,
) -> Iterator[Auth]:
    """An Auth whose blacklist lives on a Redis the test can stop."""
    client = connect(redis_process.url, timeout=0.5)
    blacklist = Blacklist(client, prefix=prefix, leeway=10, clock=clock)
    yield Auth(store, blacklist, codec, access_ttl=60, refresh_ttl=3600, clock=clock)
    client.close()


async def test_fail_open_serves_without_a_user_and_never_trusts_revoked_tokens(
    down_auth: Auth, redis_process: RedisProcess
) -> None:
    live, live_access, live_refresh = down_auth.login("u1", "live@example.com", "Live")
    gone, gone_access, gone_refresh = down_auth.login("u2", "gone@example.com", "Gone")
    assert down_auth.force_logout(gone.id, actor="ops").ok
    live_cookie = {"Cookie": f"accessToken={live_access}; refreshToken={live_refresh}"}
    gone_cookie = {"Cookie": f"accessToken={gone_access}; refreshToken={gone_refresh}"}

    fail_open = make_app(down_auth, fail_open=True, retry_after=7)
    fail_closed = make_app(down_auth, retry_after=7)
    async with await client_for(fail_open) as opened, await client_for(fail_closed) as closed:
        redis_process.stop()
        for headers in (live_cookie, gone_cookie):
            r = await opened.get("/optional", headers=headers)
            assert r.status_code == 200
            assert r.json() == {"user": None, "reason": REDIS_UNAVAILABLE, "refreshed": False}
            r = await opened.get("/protected", headers=headers)
            assert r.status_code == 503 and r.headers["retry-after"] == "7"
            assert r.json() == {"error": "unavailable", "reason": REDIS_UNAVAILABLE}
            r = await closed.get("/optional", headers=headers)
            assert r.status_code == 503 and r.headers["retry-after"] == "7"
            assert r.json() == {"error": "unavailable", "reason": REDIS_UNAVAILABLE}

        redis_process.start()
        r = await opened.get("/protected", headers=live_cookie)
        assert r.status_code == 200 and r.json()["session_id"] == live.id
        r = await opened.get("/protected", headers=gone_cookie)
        assert r.status_code == 401 and r.json()["reason"] == Reason.REVOKED
        r = await closed.get("/protected", headers=live_cookie)
        assert r.status_code == 200


async def test_plain_asgi_app_without_a_framework(auth: Auth) -> None:
    _, access, _ = auth.login("u1", "one@example.com", "One")

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        try:
            user = require_user(scope)
        except AuthRequired as exc:
            await exc.send(send)
            return
        body = user.email.encode() if user.email else b""
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    async with await client_for(SessionMiddleware(app, auth=lambda: auth)) as client:
        r = await client.get("/", headers={"Authorization": f"Bearer {access}"})
        assert r.status_code == 200 and r.text == "one@example.com"
        r = await client.get("/", headers={"Authorization": "Bearer x.y.z"})
        assert r.status_code == 401 and r.json() == {"error": "unauthorized", "reason": "malformed"}
        assert r.headers["www-authenticate"] == "Bearer"


async def test_an_app_without_an_auth_yet_is_503_for_tokens_and_serves_the_rest(
    auth: Auth,
) -> None:
    """The ``auth`` callable raises ``RedisUnavailable`` while the app could not open its
    runtime (a Redis Cluster unreachable at start-up): a request with a token is 503, never let
    through; one without a token is served; once there is an ``Auth``, the token is checked."""
    _, access, _ = auth.login("u1", "one@example.com", "One")
    current: list[Auth] = []

    def get_auth() -> Auth:
        if not current:
            raise RedisUnavailable("Redis Cluster (127.0.0.1:1) unreachable: no seed answered")
        return current[0]

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        user = get_user(scope)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send(
            {"type": "http.response.body", "body": (user.email or "").encode() if user else b"-"}
        )

    async with await client_for(SessionMiddleware(app, auth=get_auth)) as client:
        r = await client.get("/", headers={"Authorization": f"Bearer {access}"})
        assert r.status_code == 503, r.text
        assert r.json() == {"error": "unavailable", "reason": REDIS_UNAVAILABLE}
        assert (await client.get("/")).text == "-"
        current.append(auth)
        r = await client.get("/", headers={"Authorization": f"Bearer {access}"})
        assert r.status_code == 200 and r.text == "one@example.com"


async def test_non_http_scopes_pass_through_untouched(auth: Auth) -> None:
    seen: list[dict[str, Any]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(scope)

    async def receive() -> dict[str, Any]:
        return {"type": "lifespan.startup"}

    async def send(message: Any) -> None:
        pass

    middleware = SessionMiddleware(app, auth=auth)
    for kind in ("lifespan", "websocket"):
        await middleware({"type": kind, "headers": []}, receive, send)
    assert [s["type"] for s in seen] == ["lifespan", "websocket"]
    assert all("state" not in s for s in seen)


def test_require_user_without_the_middleware_is_a_wiring_error() -> None:
    with pytest.raises(RuntimeError, match="did not run"):
        require_user({"type": "http", "headers": []})
    with pytest.raises(TypeError):
        require_user(42)


def test_cookie_header_parsing_is_lenient() -> None:
    assert parse_cookie_header('a=1; b="two"; junk; =x; c=3=3; a=ignored;;') == {
        "a": "1",
        "b": "two",
        "c": "3=3",
    }
    assert parse_cookie_header("") == {}


def test_cookie_settings_refuse_unsafe_or_invalid_values() -> None:
    with pytest.raises(ValueError, match="Secure"):
        CookieSettings(samesite="none")
    with pytest.raises(ValueError, match="cookie name"):
        CookieSettings(access_name="bad name")
    with pytest.raises(ValueError, match="samesite"):
        CookieSettings(samesite="sometimes")
    header = CookieSettings(samesite="strict", domain="example.com").clear_header("x")
    assert header.split("; ") == [
        'x=""',
        "Path=/",
        "Max-Age=0",
        "Expires=Thu, 01 Jan 1970 00:00:00 GMT",
        "Domain=example.com",
        "HttpOnly",
        "SameSite=Strict",
    ]
