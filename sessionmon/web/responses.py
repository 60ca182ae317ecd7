"""Minimal JSON responses written straight to an ASGI ``send`` (no framework needed)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

Send = Callable[[dict[str, Any]], Awaitable[None]]


def json_headers(
    body: bytes, headers: Mapping[str, str] | None = None, cookies: Iterable[str] = ()
) -> list[tuple[bytes, bytes]]:
    """Raw ASGI headers for a JSON body, extra headers and ``Set-Cookie`` values."""
    raw = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
    ]
    raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    raw += [(b"set-cookie", c.encode("latin-1")) for c in cookies]
    return raw


async def send_json(
    send: Send,
    status: int,
    payload: Mapping[str, Any],
    headers: Mapping[str, str] | None = None,
) -> None:
    """Send a complete JSON response."""
    body = json.dumps(payload, separators=(",", ":")).encode()
    await send(
        {"type": "http.response.start", "status": status, "headers": json_headers(body, headers)}
    )
    await send({"type": "http.response.body", "body": body})
