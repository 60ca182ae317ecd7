"""A demo web backend on sessionmon (Starlette): ``uvicorn examples.webapp:app`` from the repo root.

DEMO ONLY: ``POST /login`` logs in ANY email address without a password. It exists so that an
operator can watch real browser or curl sessions appear, refresh and be force-logged-out in the
``sessionmon`` monitor. Never expose it.

It reads the same ``SESSIONMON_*`` settings as the CLI (database, Redis URL or the embedded server,
prefix, algorithm and keys, TTLs), plus the web layer's own (cookie attributes, trusted proxy,
allowed origins, body cap, fail-open: see :mod:`sessionmon.web.config`).

Endpoints: ``POST /login`` ``{"email": ..., "name": ...}``, ``GET /me``, ``POST /logout``,
``GET /.well-known/jwks.json`` (the public keys of the next, current and previous signing keys;
``{"keys": []}`` for HMAC).

Each worker process answers revocation checks from memory
(:class:`~sessionmon.core.revocation_cache.CachedRevocations`, one invalidation connection per
process; ``SESSIONMON_REVOCATION_CACHE=0`` turns it off): a force-logout from anywhere is seen by
every worker within its ``max_staleness`` (50 ms), one made by the worker itself at once; while
the channel is not confirmed every check asks Redis.

Refresh tokens rotate on every silent refresh (``SESSIONMON_ROTATE_REFRESH``, on by default): the
middleware sets both cookies, and a refresh token used again after ``SESSIONMON_REUSE_GRACE``
revokes the session (``401 refresh_reused``). With rotation off (``SESSIONMON_ROTATE_REFRESH=0``)
a copied refresh cookie keeps working until it expires and nothing detects it. A login over
``SESSIONMON_MAX_SESSIONS_PER_USER`` (with ``SESSIONMON_ON_MAX_SESSIONS=deny``) gets 429.
``POST`` routes refuse cross-site requests (403), bodies that are not ``application/json`` (415),
over the cap (413, read incrementally) or not the expected JSON (400), each with a JSON reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
from collections.abc import AsyncIterator
from typing import Any

import anyio
from anyio.to_thread import run_sync
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sessionmon.core.auth import Auth, LogoutOutcome
from sessionmon.core.errors import (
    DatabaseError,
    NotDurable,
    RedisUnavailable,
    SessionmonError,
    TooManySessions,
)
from sessionmon.core.keysource import KeySource, open_keys
from sessionmon.core.revocation_cache import CachedRevocations
from sessionmon.core.runtime import Runtime, open_runtime
from sessionmon.core.settings import Settings, load_settings
from sessionmon.web import CookieSettings, SessionMiddleware, auth_reason, get_user, require_user
from sessionmon.web.body import BadBody, bad_request, read_json
from sessionmon.web.config import WebSettings, load_web_settings
from sessionmon.web.guards import DATABASE_UNAVAILABLE, REDIS_UNAVAILABLE
from sessionmon.web.middleware import request_tokens
from sessionmon.web.origin import CrossSiteGuard
from sessionmon.web.starlette_support import EXCEPTION_HANDLERS

log = logging.getLogger("sessionmon.webapp")

MAX_EMAIL = 254
MAX_NAME = 100
RETRY_AFTER = 5
# Verifiers may cache the key set this long: the next key is published a rotation ahead, so a
# rotation never needs a refetch; a retired key may be trusted elsewhere this long after.
JWKS_MAX_AGE = 60
# Redis unreachable at startup: the runtime is opened again after 0.05 s, 0.1 s, ... then every 1 s.
RECONNECT_FIRST_DELAY = 0.05
RECONNECT_MAX_DELAY = 1.0


class Backend:
    """The runtime the app opens at startup and closes at shutdown.

    A Redis that cannot be reached at startup (a Redis Cluster's layout is read when its client
    is made: every seed down, a bad certificate) does not stop the app: ``auth`` raises
    ``RedisUnavailable`` with the reason (503) until a retry in the background opens the
    runtime."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.runtime: Runtime | None = None
        self.cache: CachedRevocations | None = None
        self.unreachable: str | None = None  # why there is no runtime yet
        self.keys_at_start: KeySource | None = None  # checked while Redis was unreachable
        self.closing = False
        self.lock = threading.Lock()

    @property
    def auth(self) -> Auth:
        runtime = self.runtime
        if runtime is None:
            if self.unreachable is not None:
                raise RedisUnavailable(self.unreachable)
            raise RuntimeError("the app has not started (lifespan not run)")
        return runtime.auth

    @property
    def keys(self) -> KeySource:
        runtime = self.runtime
        if runtime is not None:
            return runtime.keys
        if self.keys_at_start is not None:
            return self.keys_at_start
        raise RuntimeError("the app has not started (lifespan not run)")

    def attach(self, runtime: Runtime, cache: CachedRevocations | None) -> bool:
        """Use ``runtime`` from now on; False (and both closed) once the app is shutting down."""
        with self.lock:
            if not self.closing:
                self.runtime, self.cache, self.unreachable = runtime, cache, None
                return True
        if cache is not None:
            cache.close()
        runtime.close()
        return False

    def detach(self) -> tuple[Runtime | None, CachedRevocations | None]:
        with self.lock:
            self.closing = True
            runtime, cache, self.runtime, self.cache = self.runtime, self.cache, None, None
        return runtime, cache


def create_app(
    settings: Settings | None = None,
    *,
    cookies: CookieSettings | None = None,
    fail_open: bool | None = None,
    web: WebSettings | None = None,
) -> Starlette:
    """Build the demo app; settings default to the ``SESSIONMON_*`` environment, as for the CLI
    (``cookies`` and ``fail_open`` override what ``web`` says)."""
    settings = settings or load_settings({})
    web = web or load_web_settings()
    if cookies is None:
        cookies = web.cookies()
    if fail_open is None:
        fail_open = web.fail_open
    backend = Backend(settings)

    def open_backend() -> bool:
        # web=True: Redis commands time out after 1 s unless SESSIONMON_REDIS_TIMEOUT says
        # otherwise; a dead embedded Redis is restarted by the first request that finds it gone.
        runtime = open_runtime(settings, web=True)
        cache: CachedRevocations | None = None
        try:
            if web.revocation_cache:
                # Before the first runtime.auth: the Auth is built with the cache. Not live yet
                # (or the channel down later): every check asks Redis, as without the cache.
                cache = CachedRevocations(runtime.blacklist)
                runtime.auth_options["revocation_cache"] = cache
                if not cache.start():
                    log.warning(
                        "revocation cache not live yet (%s); checks ask Redis until it is",
                        cache.last_error or "no confirmation",
                    )
            runtime.auth  # noqa: B018
            runtime.keys  # noqa: B018 - load the keys now: a missing or weak secret fails here
        except BaseException:
            if cache is not None:
                cache.close()
            runtime.close()
            raise
        return backend.attach(runtime, cache)

    async def reconnect() -> None:
        """Open the runtime again and again (backoff up to RECONNECT_MAX_DELAY) until Redis
        answers; each attempt is bounded by the Redis timeout."""
        delay = RECONNECT_FIRST_DELAY
        while True:
            await anyio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_DELAY)
            try:
                if not await run_sync(open_backend):
                    return
            except SessionmonError as exc:  # still unreachable (or the database now)
                if str(exc) != backend.unreachable:
                    log.warning("still cannot reach Redis: %s (answering 503)", exc)
                backend.unreachable = str(exc)
                continue
            log.info("Redis reachable: sessions in %s, blacklist on %s", settings.db,
                     settings.redis_display)  # fmt: skip
            return

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        retry: asyncio.Task[None] | None = None
        try:
            await run_sync(open_backend)
        except RedisUnavailable as exc:
            # Start anyway: every request that needs Redis is 503 with this reason until the
            # retry opens the runtime. A key or settings error still stops the start.
            try:
                backend.keys_at_start = await run_sync(open_keys, settings)
            except SessionmonError as key_error:
                log.error("cannot start: %s", key_error)
                raise
            backend.unreachable = str(exc)
            log.warning("cannot reach Redis at start-up: %s (answering 503 until it answers)", exc)
            retry = asyncio.create_task(reconnect())
        except SessionmonError as exc:
            log.error("cannot start: %s", exc)
            raise
        else:
            log.info("sessions in %s, blacklist on %s", settings.db, settings.redis_display)
        try:
            yield
        finally:
            if retry is not None:
                retry.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await retry
            runtime, cache = backend.detach()
            if cache is not None:
                await run_sync(cache.close)
            if runtime is not None:
                await run_sync(runtime.close)

    async def login(request: Request) -> Response:
        try:
            body = await read_json(request.headers.raw, request.stream(), limit=web.max_body)
            email, name = _login_fields(body)
        except BadBody as exc:
            return JSONResponse(exc.body, status_code=exc.status_code)
        ip = request.client.host if request.client else None
        auth = backend.auth
        try:
            session, access, refresh = await run_sync(
                auth.login, email, email, name, ip, request.headers.get("user-agent")
            )
        except TooManySessions as exc:  # --max-sessions-per-user with --on-max-sessions deny
            return JSONResponse({"error": "too_many_sessions", "detail": str(exc)}, status_code=429)
        except NotDurable as exc:  # evict-oldest: the eviction reached too few replicas
            log.warning("login of %s: %s", email, exc)
            return JSONResponse(
                {"error": "unavailable", "reason": "not_durable"},
                status_code=503,
                headers={"Retry-After": str(RETRY_AFTER)},
            )
        user = {"session_id": session.id, "email": email, "name": name, "user_id": email}
        response = JSONResponse(
            {
                "user": {**user, "valid": True},
                "access_expires_at": session.access_exp,
                "refresh_expires_at": session.refresh_exp,
            }
        )
        https = cookies.over_https(request.scope)
        for header in cookies.login_headers(
            access, refresh, auth.access_ttl, auth.refresh_ttl, https=https
        ):
            response.headers.append("set-cookie", header)
        return response

    async def me(request: Request) -> Response:
        user = require_user(request)
        return JSONResponse({"user": user.to_dict(), "refreshed": request.state.auth_refreshed})

    async def logout(request: Request) -> Response:
        # Every token presented is blacklisted, whatever the session store says (its row may be
        # gone): the session id comes from the user, or else from a presented token.
        auth = backend.auth
        user = get_user(request)
        access, refresh = request_tokens(request.scope, cookies)
        presented = await run_sync(auth.presented_claims, access, refresh)
        sid = user.session_id if user is not None else next((c.sid for c in presented), None)
        payload: dict[str, Any] = {
            "logged_out": False,
            "reason": auth_reason(request) or "no_token",
        }
        if sid is not None:
            result = await run_sync(
                functools.partial(auth.logout, sid, "user", "logout", tokens=presented)
            )
            if result.outcome is LogoutOutcome.NOT_DURABLE:
                # Written on the master only: not logged out yet; the client keeps its cookies
                # and retries (the same logout completes once the replicas answer).
                log.warning("logout of %s: %s", sid, result.error)
                return JSONResponse(
                    {"error": "unavailable", "reason": "not_durable"},
                    status_code=503,
                    headers={"Retry-After": str(RETRY_AFTER)},
                )
            # Never claim a logout that revoked nothing.
            payload = {
                "logged_out": bool(result.revoked),
                "session_id": sid,
                "revoked": len(result.revoked),
                "deleted": result.deleted,
                "outcome": result.outcome.value,
            }
            if not result.revoked:
                payload["reason"] = "nothing_revoked"
        response = JSONResponse(payload)
        for header in cookies.logout_headers(https=cookies.over_https(request.scope)):
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
            # Outermost: a cross-site POST is refused before any token is looked at.
            Middleware(CrossSiteGuard, allowed_origins=web.allowed_origins),
            Middleware(
                SessionMiddleware,
                auth=lambda: backend.auth,
                cookies=cookies,
                fail_open=fail_open,
                retry_after=RETRY_AFTER,
            ),
        ],
        exception_handlers={
            **EXCEPTION_HANDLERS,
            RedisUnavailable: unavailable,
            DatabaseError: unavailable,
        },
        lifespan=lifespan,
    )


def _login_fields(body: Any) -> tuple[str, str]:
    """The email and display name of a login body; ``BadBody`` (400) for any other shape."""
    email = body.get("email") if isinstance(body, dict) else None
    if not isinstance(email, str) or "@" not in email or len(email) > MAX_EMAIL:
        raise bad_request("bad_shape", 'send JSON {"email": "you@example.com"}')
    email = email.strip().lower()
    name = body.get("name")
    if name is not None and not isinstance(name, str):
        raise bad_request("bad_shape", '"name" must be a string')
    return email, (name or email.split("@", 1)[0])[:MAX_NAME]


app = create_app()
