"""``SessionMiddleware``: the original design's Express ``deserializeUser`` as plain ASGI.

For every HTTP request it reads the access and refresh tokens (cookies, or ``Authorization:
Bearer <access>``), asks :meth:`sessionmon.core.auth.Auth.authenticate` (in a worker thread: the
core is synchronous and a slow Redis must not block the event loop; with a revocation cache, a
valid token the cache answers from memory is decided on the event loop, see
:meth:`~sessionmon.core.auth.Auth.authenticate_from_memory`) and records the outcome in
``scope["state"]`` (see :mod:`sessionmon.web.guards`). After a silent refresh the response gets a
new access-token cookie, and a new refresh-token cookie when the refresh token was rotated.
Requests without a user are passed on, never rejected here: routes decide with
:func:`sessionmon.web.require_user`.

The one exception is an unreachable Redis (or an unusable database) while a request carries tokens:
the blacklist cannot be checked, so by default the request is answered ``503`` with ``Retry-After``
and the client keeps its cookies. See ``fail_open`` for the alternative.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from sessionmon.core.auth import Auth, AuthResult
from sessionmon.core.errors import DatabaseError, RedisUnavailable
from sessionmon.core.tokens import Reason
from sessionmon.web.cookies import CookieSettings, parse_cookie_header, set_cookie_names
from sessionmon.web.guards import (
    DATABASE_UNAVAILABLE,
    DEFAULT_RETRY_AFTER,
    REDIS_UNAVAILABLE,
    set_decision,
)
from sessionmon.web.responses import send_json

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("sessionmon.web")

try:  # anyio (installed with Starlette) runs on asyncio and trio alike
    from anyio.to_thread import run_sync as _run_sync

    async def _in_thread(fn: Callable[..., AuthResult], *args: Any) -> AuthResult:
        return await _run_sync(fn, *args)

except ImportError:  # pragma: no cover - plain asyncio servers without anyio
    import asyncio

    async def _in_thread(fn: Callable[..., AuthResult], *args: Any) -> AuthResult:
        return await asyncio.to_thread(fn, *args)


class SessionMiddleware:
    """Resolve the user of each request from its tokens, with silent refresh.

    :param app: the ASGI application to wrap.
    :param auth: an :class:`~sessionmon.core.auth.Auth`, or a zero-argument callable returning
        one (called per request, so an app can open its runtime in its lifespan; it may raise
        ``RedisUnavailable`` or ``DatabaseError`` while it has none: handled as an outage).
    :param cookies: cookie names and attributes (default ``accessToken`` / ``refreshToken``,
        HttpOnly, SameSite=Lax, Secure when the request came over HTTPS; see
        :class:`~sessionmon.web.CookieSettings`).
    :param bearer: also accept ``Authorization: Bearer <access>`` (it wins over the cookie).
    :param fail_open: what to do when Redis (or the database) cannot be reached for a request
        that carries tokens. ``False`` (default, fail closed): answer ``503`` with
        ``Retry-After`` and a JSON body; the client keeps its cookies and retries. ``True``:
        let the request through **without a user** and with ``auth_reason`` set to
        ``"redis_unavailable"`` (or ``"database_unavailable"``). Tokens are never trusted
        unverified, so a revoked token cannot get in; the cost is that during the outage
        signed-in users are served as anonymous by routes that do not require a user (and
        :func:`~sessionmon.web.require_user` answers ``503``, not ``401``, so clients do not
        throw away tokens that are still good).
    :param retry_after: seconds for the ``Retry-After`` header of the 503.
    """

    def __init__(
        self,
        app: ASGIApp,
        auth: Auth | Callable[[], Auth],
        *,
        cookies: CookieSettings | None = None,
        bearer: bool = True,
        fail_open: bool = False,
        retry_after: int = DEFAULT_RETRY_AFTER,
    ) -> None:
        self.app = app
        self._auth = auth
        self.cookies = cookies or CookieSettings()
        self.bearer = bearer
        self.fail_open = fail_open
        self.retry_after = int(retry_after)
        self._degraded = False

    @property
    def auth(self) -> Auth:
        """The ``Auth`` in use (resolving the callable, if one was given)."""
        return self._auth if isinstance(self._auth, Auth) else self._auth()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan; websockets pass through without a user
            await self.app(scope, receive, send)
            return
        access, refresh = self.tokens(scope)
        if access is None and refresh is None:
            set_decision(
                scope, None, Reason.NO_TOKEN.value, "no token", retry_after=self.retry_after
            )
            await self.app(scope, receive, send)
            return

        try:
            auth = self.auth  # an app whose Redis was unreachable at start-up may have none yet
        except RedisUnavailable as exc:
            await self._unavailable(scope, receive, send, REDIS_UNAVAILABLE, str(exc))
            return
        except DatabaseError as exc:
            await self._unavailable(scope, receive, send, DATABASE_UNAVAILABLE, str(exc))
            return
        # With a revocation cache, a valid token is usually decided from memory, here on the
        # event loop: no thread hand-off. Anything that may wait (Redis, the database, key files,
        # a refresh) goes to a worker thread.
        result = auth.authenticate_from_memory(access)
        if result is None:
            client = scope.get("client")
            ip = str(client[0]) if client else None
            user_agent = _header(scope, b"user-agent")

            def authenticate() -> AuthResult:
                return auth.authenticate(access, refresh, ip=ip, user_agent=user_agent)

            try:
                result = await _in_thread(authenticate)
            except RedisUnavailable as exc:
                await self._unavailable(scope, receive, send, REDIS_UNAVAILABLE, str(exc))
                return
            except DatabaseError as exc:
                await self._unavailable(scope, receive, send, DATABASE_UNAVAILABLE, str(exc))
                return
        if self._degraded:
            self._degraded = False
            log.warning("auth backend reachable again")

        reason = result.reason.value if result.reason is not None else None
        set_decision(
            scope,
            result.user,
            reason,
            result.detail,
            refreshed=result.refreshed,
            retry_after=self.retry_after,
        )
        if result.user is None:
            log.debug("no user: %s (%s)", reason, result.detail)
        if result.new_access_token is None:
            await self.app(scope, receive, send)
            return

        https = self.cookies.over_https(scope)
        cookies = {
            self.cookies.access_name: self.cookies.set_header(
                self.cookies.access_name, result.new_access_token, auth.access_ttl, https=https
            ).encode("latin-1")
        }
        if result.new_refresh_token is not None and result.refresh_exp is not None:
            cookies[self.cookies.refresh_name] = self.cookies.set_header(
                self.cookies.refresh_name,
                result.new_refresh_token,
                result.refresh_exp - auth.clock.now(),
                https=https,
            ).encode("latin-1")

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                # A response that sets or clears a cookie itself (login, logout) wins for that
                # cookie; the other is still sent (a client left with the replaced refresh token
                # would present it again after the grace window: reuse).
                own = set_cookie_names(headers)
                added = [(b"set-cookie", v) for name, v in cookies.items() if name not in own]
                if added:
                    message = {**message, "headers": headers + added}
            await send(message)

        await self.app(scope, receive, send_with_cookie)

    def tokens(self, scope: Scope) -> tuple[str | None, str | None]:
        """The access and refresh tokens the request carries (``None`` when absent)."""
        return request_tokens(scope, self.cookies, bearer=self.bearer)

    async def _unavailable(
        self, scope: Scope, receive: Receive, send: Send, reason: str, detail: str
    ) -> None:
        if not self._degraded:
            self._degraded = True
            mode = "letting requests through without a user" if self.fail_open else "503"
            log.warning("cannot check tokens (%s): %s; %s", reason, detail, mode)
        if self.fail_open:
            set_decision(scope, None, reason, detail, retry_after=self.retry_after)
            await self.app(scope, receive, send)
            return
        await send_json(
            send,
            503,
            {"error": "unavailable", "reason": reason},
            {"Retry-After": str(self.retry_after)},
        )


def _header(scope: Scope, name: bytes) -> str | None:
    """The first value of request header ``name`` (lower case), or None."""
    for key, value in scope.get("headers", []):
        if key == name:
            return str(value.decode("latin-1"))
    return None


def request_tokens(
    scope: Scope, cookies: CookieSettings, *, bearer: bool = True
) -> tuple[str | None, str | None]:
    """The access and refresh tokens a request (an ASGI scope) carries (``None`` when absent):
    the cookies, or ``Authorization: Bearer <access>`` (it wins over the cookie)."""
    cookie_parts: list[str] = []
    authorization: str | None = None
    for key, value in scope.get("headers", []):
        if key == b"cookie":
            cookie_parts.append(value.decode("latin-1"))
        elif key == b"authorization" and authorization is None:
            authorization = value.decode("latin-1")
    jar = parse_cookie_header("; ".join(cookie_parts)) if cookie_parts else {}
    access = jar.get(cookies.access_name) or None
    refresh = jar.get(cookies.refresh_name) or None
    if bearer and authorization is not None:
        scheme, _, credentials = authorization.strip().partition(" ")
        if scheme.lower() == "bearer":
            access = credentials.strip() or "-"  # an empty Bearer is a malformed token
    return access, refresh
