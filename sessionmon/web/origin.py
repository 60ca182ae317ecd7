"""Cross-site request protection for state-changing routes, from ``Sec-Fetch-Site`` and ``Origin``.

A cross-site HTML form (or ``fetch`` in ``no-cors`` mode) can POST to the app with the user's
cookies; the app must not let it log the user in or out. The rules are those of Go's
``net/http.CrossOriginProtection`` (and the Fetch Metadata guidance):

1. ``GET``, ``HEAD`` and ``OPTIONS`` are never blocked (they must not change state).
2. A request whose ``Origin`` is one of the configured allowed origins passes.
3. With ``Sec-Fetch-Site`` (every current browser sends it): ``same-origin`` and ``none`` (typed by
   the user) pass; ``same-site`` and ``cross-site`` are refused.
4. Without it (an older browser): no ``Origin`` passes; an ``Origin`` whose host (and port) is the
   request's ``Host`` passes; any other ``Origin``, ``null`` included, is refused.

Requests without ``Sec-Fetch-Site`` and ``Origin`` are not from a browser page (curl, scripts,
server-to-server): browsers attach ``Origin`` to every cross-origin POST, so they pass. Such a
client holds its tokens itself, which a cross-site page cannot make it use.
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping
from typing import Any
from urllib.parse import urlsplit

from sessionmon.web.middleware import ASGIApp, Receive, Send
from sessionmon.web.responses import send_json

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CROSS_SITE = "cross_site_request"


def normalize_origin(origin: str) -> str:
    """``scheme://host[:port]`` lower-cased, default ports dropped; ``ValueError`` if it is not
    an origin (a path, a query or userinfo)."""
    parts = urlsplit(origin.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an origin (scheme://host[:port]): {origin!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ValueError(f"not an origin (scheme://host[:port]): {origin!r}")
    port = parts.port  # raises ValueError for a bad port
    default = {"http": 80, "https": 443}[parts.scheme]
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    return f"{parts.scheme}://{host}" + (f":{port}" if port and port != default else "")


def cross_site_reason(
    method: str, headers: Iterable[tuple[bytes, bytes]], allowed_origins: frozenset[str]
) -> str | None:
    """Why this request must be refused as cross-site, or None when it may proceed."""
    if method.upper() in SAFE_METHODS:
        return None
    values: dict[bytes, str] = {}
    for key, value in headers:
        values.setdefault(key.lower(), value.decode("latin-1"))
    origin = values.get(b"origin")
    if origin is not None and allowed_origins:
        try:
            if normalize_origin(origin) in allowed_origins:
                return None
        except ValueError:
            pass
    fetch_site = values.get(b"sec-fetch-site")
    if fetch_site is not None:
        if fetch_site.strip().lower() in ("same-origin", "none"):
            return None
        return f"Sec-Fetch-Site: {fetch_site.strip()[:20]}"
    if origin is None:
        return None
    host = values.get(b"host", "").strip().lower()
    netloc = urlsplit(origin.strip()).netloc.lower() if origin.strip() != "null" else ""
    if host and netloc == host:
        return None
    return "Origin is not this site" if netloc else "Origin: null"


class CrossSiteGuard:
    """ASGI middleware: answer ``403 {"error": "forbidden", "reason": "cross_site_request"}`` to a
    state-changing request from another site (see the module docstring for the rules)."""

    def __init__(self, app: ASGIApp, *, allowed_origins: Iterable[str] = ()) -> None:
        self.app = app
        self.allowed_origins = frozenset(normalize_origin(o) for o in allowed_origins)

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            why = cross_site_reason(
                scope.get("method", "GET"), scope.get("headers", []), self.allowed_origins
            )
            if why is not None:
                await send_json(
                    send, 403, {"error": "forbidden", "reason": CROSS_SITE, "detail": why}
                )
                return
        await self.app(scope, receive, send)
