"""The apps the web benchmarks serve with uvicorn (``bench.web_apps:<name>``), next to
``examples.webapp:app`` itself. Settings come from the same ``SESSIONMON_*`` environment as the
example app (the secret too: never argv).

- ``noauth``: the example's routes (the same paths in the same order, so routing costs the same)
  with no auth middleware; ``GET /me`` answers a body of the same shape as the example's (a fixed
  user); the same cross-site guard in front.
- ``naive``: the same routes behind the middleware the issue names as the baseline:
  ``jwt.decode`` (PyJWT) and one ``EXISTS`` of the token's jti key, on a ``redis.asyncio`` client
  (the non-blocking choice in an ASGI app); ``GET /me`` answers 401 when either fails.
- ``sessionmon_pid``: ``examples.webapp:app`` with an ``X-Worker-Pid`` response header, so a client
  can tell which uvicorn worker answered (the propagation benchmark).
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from typing import Any

import jwt
import redis
import redis.asyncio
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sessionmon.core.blacklist import Blacklist
from sessionmon.web.origin import CrossSiteGuard
from sessionmon.web.starlette_support import EXCEPTION_HANDLERS

Scope = MutableMapping[str, Any]

_FIXED_USER = {
    "session_id": "x" * 22,
    "email": "user0@example.com",
    "name": "User 0",
    "user_id": "u0",
    "valid": True,
}


def _env(name: str, default: str | None = None) -> str:
    value = os.environ.get("SESSIONMON_" + name, default)
    if value is None:
        raise RuntimeError(f"SESSIONMON_{name} is not set")
    return value


def _routes(me: Any) -> list[Route]:
    """The example app's routes, in its order; only ``/me`` is measured."""

    async def other(request: Request) -> Response:
        return JSONResponse({"error": "not_measured"}, status_code=404)

    return [
        Route("/", other),
        Route("/login", other, methods=["POST"]),
        Route("/me", me),
        Route("/logout", other, methods=["POST"]),
        Route("/.well-known/jwks.json", other),
    ]


def _noauth_app() -> Starlette:
    async def me(request: Request) -> Response:
        return JSONResponse({"user": _FIXED_USER, "refreshed": False})

    return Starlette(
        routes=_routes(me),
        middleware=[Middleware(CrossSiteGuard, allowed_origins=frozenset())],
        exception_handlers=EXCEPTION_HANDLERS,
    )


class NaiveMiddleware:
    """``jwt.decode`` + one ``EXISTS`` of the jti key; the user (the claims) in scope state."""

    def __init__(self, app: Any, secret: str, redis_url: str, prefix: str) -> None:
        self.app = app
        self.secret = secret
        self.redis_url = redis_url
        # The key sessionmon writes for a revoked token (the layout follows the Blacklist).
        self.keys = Blacklist(redis.Redis(), prefix=prefix)
        self.client: redis.asyncio.Redis | None = None

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.client is None:  # created in the worker's event loop
            self.client = redis.asyncio.Redis.from_url(self.redis_url)
        claims = None
        for key, value in scope.get("headers", []):
            if key == b"authorization":
                token = value.decode("latin-1").partition(" ")[2]
                try:
                    claims = jwt.decode(token, self.secret, algorithms=["HS256"])
                except jwt.PyJWTError:
                    claims = None
                if claims is not None and await self.client.exists(
                    self.keys.token_key(claims["sid"], claims["jti"])
                ):
                    claims = None
                break
        scope.setdefault("state", {})["claims"] = claims
        await self.app(scope, receive, send)


def _naive_app() -> Starlette:
    async def me(request: Request) -> Response:
        c = request.state.claims
        if c is None:
            return JSONResponse({"error": "unauthorized", "reason": "invalid"}, status_code=401)
        user = {
            "session_id": c["sid"],
            "email": c.get("email"),
            "name": c.get("name"),
            "user_id": c["sub"],
            "valid": True,
        }
        return JSONResponse({"user": user, "refreshed": False})

    return Starlette(
        routes=_routes(me),
        middleware=[
            Middleware(CrossSiteGuard, allowed_origins=frozenset()),
            Middleware(
                NaiveMiddleware,
                secret=_env("SECRET"),
                redis_url=_env("REDIS_URL"),
                prefix=_env("PREFIX", "sessionmon:"),
            ),
        ],
        exception_handlers=EXCEPTION_HANDLERS,
    )


class WorkerPid:
    """Adds ``X-Worker-Pid: <pid>`` to every HTTP response."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_pid(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                pid = (b"x-worker-pid", str(os.getpid()).encode())
                message = {**message, "headers": [*message.get("headers", []), pid]}
            await send(message)

        await self.app(scope, receive, send_with_pid)


def __getattr__(name: str) -> Any:
    # Built on first access: uvicorn imports only the one it serves.
    if name == "noauth":
        return _noauth_app()
    if name == "naive":
        return _naive_app()
    if name == "sessionmon_pid":
        from examples.webapp import app

        return WorkerPid(app)
    raise AttributeError(name)
