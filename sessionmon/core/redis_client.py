"""The redis-py client sessionmon uses: bounded timeouts, bounded retries.

A hung server (stopped, overloaded, behind a dead network path) must cost one ``timeout``, not
several: a timed-out command is never retried. A dropped connection (a restarted server, an idle
connection closed by a proxy) is retried at most twice, and only while the first attempt is less
than ``timeout`` old, so one command costs at most about twice the timeout in the worst case.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from sessionmon.core.errors import ConfigError
from sessionmon.core.urls import mask_url

T = TypeVar("T")

# The default of --redis-timeout: a web request waits 1 s for Redis before answering 503; an
# operator's command (CLI, monitor) waits 3 s (a busy server, an AOF rewrite's fork).
WEB_TIMEOUT = 1.0
TOOL_TIMEOUT = 3.0


class BoundedRetry(Retry):
    """Retry a dropped connection ``retries`` times within ``budget`` seconds; never a timeout."""

    def __init__(self, budget: float, retries: int = 2) -> None:
        super().__init__(
            ExponentialBackoff(cap=0.2, base=0.02),
            retries,
            supported_errors=(redis.exceptions.ConnectionError,),
        )
        self.budget = budget

    def call_with_retry(
        self,
        do: Callable[[], T],
        fail: Callable[..., Any],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> T:
        started = time.monotonic()

        def retryable(error: Exception) -> bool:
            if isinstance(error, redis.exceptions.TimeoutError):
                return False
            if time.monotonic() - started >= self.budget:
                return False
            return is_retryable(error) if is_retryable is not None else True

        return super().call_with_retry(do, fail, retryable, with_failure_count)


def connect(url: str, *, timeout: float = TOOL_TIMEOUT, **kwargs: Any) -> redis.Redis:
    """A client whose every command answers (or fails) within about ``timeout`` seconds."""
    try:
        return redis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=BoundedRetry(timeout),
            health_check_interval=30,
            **kwargs,
        )
    except ValueError as exc:
        raise ConfigError(f"bad Redis URL {mask_url(url)}: {exc}") from None
