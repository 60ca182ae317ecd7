"""SessionMiddleware with a revocation cache: a valid token the cache answers from memory is decided
on the event loop (no worker thread), and everything else still goes through ``authenticate``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

import sessionmon.web.middleware as middleware
from sessionmon.core.auth import Auth
from sessionmon.core.blacklist import KIND_SESSION, Blacklist, RevokeRequest
from sessionmon.core.clock import FrozenClock
from sessionmon.core.revocation_cache import CachedRevocations
from sessionmon.core.store import SessionStore
from sessionmon.core.tokens import TokenCodec
from tests.web.test_middleware import client_for, make_app

STALENESS = 0.05


@pytest.fixture
def cached_auth(
    store: SessionStore, blacklist: Blacklist, codec: TokenCodec, clock: FrozenClock
) -> Iterator[Auth]:
    cache = CachedRevocations(blacklist, max_staleness=STALENESS)
    assert cache.start(wait=10), cache.last_error
    yield Auth(
        store,
        blacklist,
        codec,
        access_ttl=60,
        refresh_ttl=3600,
        clock=clock,
        revocation_cache=cache,
    )
    cache.close()


@pytest.fixture
def thread_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the middleware's hand-offs to a worker thread (and still makes them)."""
    calls: list[int] = []
    real = middleware._in_thread

    async def counting(fn: Any, *args: Any) -> Any:
        calls.append(1)
        return await real(fn, *args)

    monkeypatch.setattr(middleware, "_in_thread", counting)
    return calls


async def test_a_cached_valid_token_needs_no_worker_thread(
    cached_auth: Auth, blacklist: Blacklist, thread_calls: list[int]
) -> None:
    session, access, _ = cached_auth.login("u1", "ann@example.com", "Ann")
    bearer = {"Authorization": f"Bearer {access}"}
    async with await client_for(make_app(cached_auth)) as client:
        r = await client.get("/protected", headers=bearer)
        assert r.status_code == 200 and r.json()["session_id"] == session.id
        assert len(thread_calls) == 1  # the first check asks Redis and writes last_seen_at
        deadline = time.monotonic() + 10
        while True:  # once the cache holds the answer and its channel is confirmed
            before = len(thread_calls)
            r = await client.get("/protected", headers=bearer)
            assert r.status_code == 200 and r.json()["session_id"] == session.id
            if len(thread_calls) == before:
                break
            assert time.monotonic() < deadline, "never decided from memory"
        # Most of 20 on the event loop. A hit needs the channel confirmed within 50 ms: on a
        # starved machine a late heartbeat sends a whole batch to Redis, so up to 5 batches.
        handed_off = []
        for _batch in range(5):
            before = len(thread_calls)
            for _ in range(20):
                r = await client.get("/protected", headers=bearer)
                assert r.status_code == 200 and r.json()["session_id"] == session.id
            handed_off.append(len(thread_calls) - before)
            if handed_off[-1] < 20:
                break
        assert handed_off[-1] < 20, f"every check went to a worker thread: {handed_off}"

        blacklist.revoke([RevokeRequest(KIND_SESSION, session.id, time.time() + 60)])
        deadline = time.monotonic() + 10
        while (r := await client.get("/protected", headers=bearer)).status_code == 200:
            assert time.monotonic() < deadline, "the revocation was never seen"
        assert r.status_code == 401 and r.json()["reason"] == "revoked"
        r = await client.get("/protected", headers={"Authorization": "Bearer nonsense"})
        assert r.status_code == 401 and r.json()["reason"] == "malformed"
