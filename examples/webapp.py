"""A demo web backend on sessionmon (Starlette): ``uvicorn examples.webapp:app`` from the repo root.

DEMO ONLY: ``POST /login`` logs in ANY email address without a password. It exists so that an
operator can watch real browser or curl sessions appear, refresh and be force-logged-out in the
``sessionmon`` monitor. Never expose it.

It reads the same ``SESSIONMON_*`` settings as the CLI (database, Redis URL or the embedded server,
prefix, algorithm and keys, TTLs), plus two of its own:

- ``SESSIONMON_COOKIE_SECURE=1``: mark the cookies ``Secure`` (serve over HTTPS then);
- ``SESSIONMON_FAIL_OPEN=1``: serve requests without a user while Redis is down, instead of 503.

Endpoints: ``POST /login`` ``{"email": ..., "name": ...}``, ``GET /me``, ``POST /logout``,
``GET /.well-known/jwks.json`` (the public keys of the next, current and previous signing keys;
``{"keys": []}`` for HMAC).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

from anyio.to_thread import run_sync
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sessionmon.core.auth import Auth
from sessionmon.core.errors import DatabaseError, RedisUnavailable, SessionmonError
from sessionmon.core.keysource import KeySource
from sessionmon.core.runtime import Runtime, open_runtime
from sessionmon.core.settings import Settings, load_settings, parse_bool
from sessionmon.web import CookieSettings, SessionMiddleware, get_user, require_user
from sessionmon.web.guards import DATABASE_UNAVAILABLE, REDIS_UNAVAILABLE
from sessionmon.web.starlette_support import EXCEPTION_HANDLERS

log = logging.getLogger("sessionmon.webapp")

MAX_EMAIL = 254
MAX_NAME = 100
RETRY_AFTER = 5
# Verifiers may cache the key set this long: the next key is published a rotation ahead, so a
# rotation never needs a refetch; a retired key may be trusted elsewhere this long after.
JWKS_MAX_AGE = 60


class Backend:
    """The runtime the app opens at startup and closes at shutdown."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.runtime: Runtime | None = None

    @property
    def auth(self) -> Auth:
        if self.runtime is None:
            raise RuntimeError("the app has not started (lifespan not run)")
        return self.runtime.auth

    @property
    def keys(self) -> KeySource:
        if self.runtime is None:
            raise RuntimeError("the app has not started (lifespan not run)")
        return self.runtime.keys


def create_app(
    settings: Settings | None = None,
    *,
    cookies: CookieSettings | None = None,
    fail_open: bool | None = None,
) -> Starlette:
    """Build the demo app; settings default to the ``SESSIONMON_*`` environment, as for the CLI."""
    settings = settings or load_settings({})
    if cookies is None:
        cookies = CookieSettings(secure=parse_bool(os.environ.get("SESSIONMON_COOKIE_SECURE", "")))
    if fail_open is None:
        fail_open = parse_bool(os.environ.get("SESSIONMON_FAIL_OPEN", ""))
    backend = Backend(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        runtime = await run_sync(open_runtime, settings)
        try:
            runtime.auth  # noqa: B018
            runtime.keys  # noqa: B018 - load the keys now: a missing or weak secret fails here
        except SessionmonError as exc:
            runtime.close()
            log.error("cannot start: %s", exc)
            raise
        backend.runtime = runtime
        log.info("sessions in %s, blacklist on %s", settings.db, settings.redis_display)
        try:
            yield
        finally:
            backend.runtime = None
            await run_sync(runtime.close)

    async def login(request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            body = None
        email = body.get("email") if isinstance(body, dict) else None
        if not isinstance(email, str) or "@" not in email or len(email) > MAX_EMAIL:
            return _error(400, "bad_request", 'send JSON {"email": "you@example.com"}')
        email = email.strip().lower()
        name = body.get("name") if isinstance(body.get("name"), str) else None
        name = (name or email.split("@", 1)[0])[:MAX_NAME]
        ip = request.client.host if request.client else None
        auth = backend.auth
        session, access, refresh = await run_sync(
            auth.login, email, email, name, ip, request.headers.get("user-agent")
        )
        user = {"session_id": session.id, "email": email, "name": name, "user_id": email}
        response = JSONResponse(
            {
                "user": {**user, "valid": True},
                "access_expires_at": session.access_exp,
                "refresh_expires_at": session.refresh_exp,
            }
        )
        for header in cookies.login_headers(access, refresh, auth.access_ttl, auth.refresh_ttl):
            response.headers.append("set-cookie", header)
        return response

    async def me(request: Request) -> Response:
        user = require_user(request)
        return JSONResponse({"user": user.to_dict(), "refreshed": request.state.auth_refreshed})

    async def logout(request: Request) -> Response:
        user = get_user(request)
        payload: dict[str, Any] = {"logged_out": False}
        if user is not None:
            result = await run_sync(backend.auth.logout, user.session_id, "user", "logout")
            payload = {
                "logged_out": True,
                "session_id": user.session_id,
                "revoked": len(result.revoked),
                "deleted": result.deleted,
                "outcome": result.outcome.value,
            }
        response = JSONResponse(payload)
        for header in cookies.logout_headers():
            response.headers.append("set-cookie", header)
        return response

    async def jwks(request: Request) -> Response:
        ring = await run_sync(backend.keys.ring)  # may re-read the key set (file I/O)
        return JSONResponse(
            ring.jwks(), headers={"Cache-Control": f"public, max-age={JWKS_MAX_AGE}"}
        )

    async def index(request: Request) -> Response:
        return JSONResponse(
            {
                "app": "sessionmon demo (any email logs in)",
                "endpoints": ["POST /login", "GET /me", "POST /logout"],
            }
        )

    async def unavailable(request: Request, exc: Exception) -> Response:
        reason = REDIS_UNAVAILABLE if isinstance(exc, RedisUnavailable) else DATABASE_UNAVAILABLE
        log.warning("%s: %s", reason, exc)
        return JSONResponse(
            {"error": "unavailable", "reason": reason},
            status_code=503,
            headers={"Retry-After": str(RETRY_AFTER)},
        )

    return Starlette(
        routes=[
            Route("/", index),
            Route("/login", login, methods=["POST"]),
            Route("/me", me),
            Route("/logout", logout, methods=["POST"]),
            Route("/.well-known/jwks.json", jwks),
        ],
        middleware=[
            Middleware(
                SessionMiddleware,
                auth=lambda: backend.auth,
                cookies=cookies,
                fail_open=fail_open,
                retry_after=RETRY_AFTER,
            )
        ],
        exception_handlers={
            **EXCEPTION_HANDLERS,
            RedisUnavailable: unavailable,
            DatabaseError: unavailable,
        },
        lifespan=lifespan,
    )


def _error(status: int, error: str, detail: str) -> Response:
    return JSONResponse({"error": error, "detail": detail}, status_code=status)


app = create_app()
