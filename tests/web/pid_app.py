"""``examples.webapp:app`` with an ``X-Worker-Pid`` response header, so a test can tell which
uvicorn worker answered (``uvicorn tests.web.pid_app:app --workers 4``)."""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from typing import Any

from examples.webapp import app as example


async def app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        await example(scope, receive, send)
        return

    async def send_with_pid(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            pid = (b"x-worker-pid", str(os.getpid()).encode())
            message = {**message, "headers": [*message.get("headers", []), pid]}
        await send(message)

    await example(scope, receive, send_with_pid)
