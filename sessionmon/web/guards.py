"""Where the middleware leaves its decision, and ``require_user`` for routes that need a user.

The middleware writes into ``scope["state"]`` (Starlette exposes it as ``request.state``):

- ``user``: a :class:`sessionmon.core.auth.User`, or ``None``;
- ``auth_reason``: why there is no user: a :class:`sessionmon.core.tokens.Reason` value, or
  ``"redis_unavailable"`` / ``"database_unavailable"`` (only with ``fail_open=True``);
- ``auth_detail``: a one-line explanation for logs (never sent to the client);
- ``auth_refreshed``: True when this request was silently refreshed.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any

from sessionmon.core.auth import User
from sessionmon.core.tokens import Reason
from sessionmon.web.responses import Send, send_json

USER = "user"
REASON = "auth_reason"
DETAIL = "auth_detail"
REFRESHED = "auth_refreshed"
RETRY_AFTER = "auth_retry_after"

REDIS_UNAVAILABLE = "redis_unavailable"
DATABASE_UNAVAILABLE = "database_unavailable"
UNAVAILABLE_REASONS = (REDIS_UNAVAILABLE, DATABASE_UNAVAILABLE)
DEFAULT_RETRY_AFTER = 5


class AuthRequired(Exception):
    """A route needed a user and there is none: 401 (or 503 while the auth backend is down).

    ``body`` is ``{"error": "unauthorized", "reason": <Reason>}``; the reason says what was wrong
    with the token (expired, revoked, ...), never which key or secret failed.
    """

    def __init__(self, reason: str, *, retry_after: int = DEFAULT_RETRY_AFTER) -> None:
        self.reason = reason
        self.unavailable = reason in UNAVAILABLE_REASONS
        self.status_code = 503 if self.unavailable else 401
        self.retry_after = retry_after
        super().__init__(f"{self.status_code}: {reason}")

    @property
    def body(self) -> dict[str, str]:
        error = "unavailable" if self.unavailable else "unauthorized"
        return {"error": error, "reason": self.reason}

    @property
    def headers(self) -> dict[str, str]:
        if self.unavailable:
            return {"Retry-After": str(self.retry_after)}
        return {"WWW-Authenticate": "Bearer"}

    async def send(self, send: Send) -> None:
        """Write the JSON response to a raw ASGI ``send`` (for plain ASGI apps)."""
        await send_json(send, self.status_code, self.body, self.headers)


def _state(source: Any) -> Mapping[str, Any]:
    scope = getattr(source, "scope", source)  # a Starlette Request/WebSocket, or a scope
    if not isinstance(scope, Mapping):
        raise TypeError("pass an ASGI scope or an object with a .scope (e.g. a Starlette Request)")
    state = scope.get("state")
    return state if isinstance(state, Mapping) else {}


def get_user(source: Any) -> User | None:
    """The user the middleware put on the request (``None`` if there is none)."""
    user = _state(source).get(USER)
    return user if isinstance(user, User) else None


def auth_reason(source: Any) -> str | None:
    """Why the request has no user (``None`` when it has one or the middleware did not run)."""
    return _state(source).get(REASON)


def require_user(source: Any) -> User:
    """The request's user, or raise :class:`AuthRequired` (401, or 503 when Redis is down).

    ``source`` is an ASGI scope or a Starlette/FastAPI ``Request``. Raises ``RuntimeError`` when
    the middleware did not run (a wiring bug must not look like an anonymous request).
    """
    state = _state(source)
    user = state.get(USER)
    if isinstance(user, User):
        return user
    if USER not in state and REASON not in state:
        raise RuntimeError("SessionMiddleware did not run for this request")
    reason = state.get(REASON) or Reason.NO_TOKEN.value
    raise AuthRequired(str(reason), retry_after=int(state.get(RETRY_AFTER, DEFAULT_RETRY_AFTER)))


def set_decision(
    scope: MutableMapping[str, Any],
    user: User | None,
    reason: str | None,
    detail: str = "",
    *,
    refreshed: bool = False,
    retry_after: int = DEFAULT_RETRY_AFTER,
) -> None:
    """Record the middleware's decision in ``scope["state"]``."""
    state = scope.get("state")
    if not isinstance(state, MutableMapping):
        state = scope["state"] = {}
    state[USER] = user
    state[REASON] = None if user is not None else reason
    state[DETAIL] = detail
    state[REFRESHED] = refreshed
    state[RETRY_AFTER] = retry_after
