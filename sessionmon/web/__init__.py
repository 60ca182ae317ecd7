"""Web integration: ``SessionMiddleware`` (plain ASGI) and helpers for routes that need a user.

Starlette/FastAPI glue (a ``current_user`` dependency, the 401/503 exception handler) lives in
:mod:`sessionmon.web.starlette_support`, the only module here that imports a framework.
"""

from sessionmon.core.auth import User
from sessionmon.web.cookies import CookieSettings
from sessionmon.web.guards import (
    DATABASE_UNAVAILABLE,
    REDIS_UNAVAILABLE,
    AuthRequired,
    auth_reason,
    get_user,
    require_user,
)
from sessionmon.web.middleware import SessionMiddleware, request_tokens
from sessionmon.web.origin import CrossSiteGuard

__all__ = [
    "DATABASE_UNAVAILABLE",
    "REDIS_UNAVAILABLE",
    "AuthRequired",
    "CookieSettings",
    "CrossSiteGuard",
    "SessionMiddleware",
    "User",
    "auth_reason",
    "get_user",
    "request_tokens",
    "require_user",
]
