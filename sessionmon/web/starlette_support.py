"""Starlette and FastAPI glue: a ``current_user`` dependency and the ``AuthRequired`` handler.

    app = Starlette(routes=..., exception_handlers=EXCEPTION_HANDLERS,
                    middleware=[Middleware(SessionMiddleware, auth=auth)])

    @app.get("/me")                                 # FastAPI
    def me(user: User = Depends(current_user)): ...

The middleware itself never imports a framework; this module is the only one that does.
"""

from __future__ import annotations

from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response

from sessionmon.core.auth import User
from sessionmon.web.guards import AuthRequired, require_user


def current_user(request: Request) -> User:
    """The request's user; raises :class:`AuthRequired` (401/503) when there is none."""
    return require_user(request)


async def auth_required_handler(conn: HTTPConnection, exc: Exception) -> Response:
    """Render :class:`AuthRequired` as ``{"error": ..., "reason": ...}`` with its status."""
    assert isinstance(exc, AuthRequired)
    return JSONResponse(exc.body, status_code=exc.status_code, headers=exc.headers)


EXCEPTION_HANDLERS = {AuthRequired: auth_required_handler}
