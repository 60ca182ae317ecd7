"""Read a JSON request body safely: ``application/json`` only, a size cap enforced while reading
(an oversized body is never held in full), and every failure a typed, JSON-rendered 4xx.

Framework-free: it takes the request headers and an async iterator of body chunks (Starlette's
``request.stream()``, or :func:`asgi_chunks` over a raw ASGI ``receive``).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, MutableMapping
from typing import Any

DEFAULT_MAX_BODY = 16 * 1024


class BadBody(Exception):
    """A request body the app will not read: ``status`` 400, 413 or 415 with a JSON ``body``."""

    def __init__(self, status: int, error: str, reason: str, detail: str) -> None:
        self.status_code = status
        self.error = error
        self.reason = reason
        self.detail = detail
        super().__init__(f"{status} {reason}: {detail}")

    @property
    def body(self) -> dict[str, str]:
        return {"error": self.error, "reason": self.reason, "detail": self.detail}


def bad_request(reason: str, detail: str) -> BadBody:
    return BadBody(400, "bad_request", reason, detail)


def _header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def check_json_content_type(headers: Iterable[tuple[bytes, bytes]]) -> None:
    """415 unless the ``Content-Type`` is ``application/json`` (parameters such as ``charset``
    allowed). A cross-site HTML form cannot send that type without a CORS preflight."""
    value = _header(headers, b"content-type")
    media_type = (value or "").split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        raise BadBody(
            415,
            "unsupported_media_type",
            "not_json",
            f"send Content-Type: application/json (got {media_type or 'none'})",
        )


async def read_limited(
    headers: Iterable[tuple[bytes, bytes]], chunks: AsyncIterator[bytes], limit: int
) -> bytes:
    """The body, read chunk by chunk; 413 as soon as it is over ``limit`` bytes (a declared
    ``Content-Length`` over the limit is refused before anything is read)."""
    headers = list(headers)
    declared = _header(headers, b"content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise bad_request("bad_content_length", "Content-Length is not a number")
        if int(declared) > limit:
            raise _too_large(limit)
    body = bytearray()
    async for chunk in chunks:
        body += chunk
        if len(body) > limit:
            raise _too_large(limit)
    return bytes(body)


def _too_large(limit: int) -> BadBody:
    return BadBody(413, "payload_too_large", "body_too_large", f"the body is over {limit} bytes")


def parse_json(data: bytes) -> Any:
    """The JSON document in ``data``; 400 when it is not JSON (or nested too deeply to parse)."""
    try:
        return json.loads(data)
    except RecursionError:
        raise bad_request("bad_json", "the JSON is nested too deeply") from None
    except ValueError:  # JSONDecodeError, and UnicodeDecodeError for bytes that are not text
        raise bad_request("bad_json", "the body is not valid JSON") from None


async def read_json(
    headers: Iterable[tuple[bytes, bytes]],
    chunks: AsyncIterator[bytes],
    *,
    limit: int = DEFAULT_MAX_BODY,
) -> Any:
    """Check the content type, read at most ``limit`` bytes, parse: raises :class:`BadBody`."""
    headers = list(headers)
    check_json_content_type(headers)
    return parse_json(await read_limited(headers, chunks, limit))


async def asgi_chunks(
    receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
) -> AsyncIterator[bytes]:
    """The body chunks of a raw ASGI request, as they arrive."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        yield message.get("body", b"")
        if not message.get("more_body", False):
            return
