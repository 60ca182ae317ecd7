"""The cached revocation mode: correct while Redis keeps it current, fail-closed when it cannot.

Real Redis servers only: the shared test server, and a private one (``redis_process``) that the
tests kill, freeze and restart. Waits are bounded polls (liveness), never timing assertions.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from sessionmon.core import revocation_cache
from sessionmon.core.auth import Auth
from sessionmon.core.blacklist import (
    KIND_SESSION,
    Blacklist,
    RevokeRequest,
    connect,
    remove_write_listener,
)
from sessionmon.core.clock import FrozenClock
from sessionmon.core.errors import RedisUnavailable
from sessionmon.core.revocation_cache import CachedRevocations
from sessionmon.core.store import SqliteStore
from sessionmon.core.tokens import Reason, TokenCodec
from tests.redis_server import RedisProcess
from tests.support.tcp_proxy import TcpProxy

ROOT = Path(__file__).resolve().parents[2]
STALENESS = 0.05


def eventually(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll ``predicate`` until it holds (True) or ``timeout`` passes (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


def revoke_in_subprocess(url: str, prefix: str, sids: list[str], pause: float = 0.0) -> None:
    """Another process blacklists sessions with the real Blacklist (one MULTI/EXEC each)."""
    code = textwrap.dedent(
        """
        import sys, time
        from sessionmon.core.blacklist import Blacklist, RevokeRequest, connect
        url, prefix, pause, *sids = sys.argv[1:]
        bl = Blacklist(connect(url), prefix=prefix)
        for sid in sids:
            bl.revoke([RevokeRequest("session", sid, time.time() + 300)], actor="other")
            time.sleep(float(pause))
        """
    )
    subprocess.run(
        [sys.executable, "-c", code, url, prefix, str(pause), *sids],
        check=True,
        cwd=ROOT,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


@pytest.fixture
def cache(blacklist: Blacklist) -> Iterator[CachedRevocations]:
    c = CachedRevocations(blacklist, max_staleness=STALENESS)
    assert c.start(wait=10), c.last_error
    yield c
    c.close()


def test_off_by_default(auth: Auth, blacklist: Blacklist) -> None:
    assert auth.revocation_cache is None
    assert auth._revocations is blacklist


def test_answers_from_memory_after_the_first_check(cache: CachedRevocations) -> None:
    assert cache.is_revoked("jti-1", "sid-1") is False
    misses = cache.stats.misses
    assert eventually(lambda: cache.is_revoked("jti-1", "sid-1") is False and cache.live)
    hits = cache.stats.hits
    for _ in range(50):
        assert cache.is_revoked("jti-1", "sid-1") is False
    assert cache.stats.misses == misses
    assert cache.stats.hits >= hits + 50


def test_an_idle_cache_is_confirmed_again_at_the_first_check(
    blacklist: Blacklist, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a pause the heartbeat sleeps; the first check that finds the channel unconfirmed
    wakes it at once, not at its next look (here an hour away)."""
    monkeypatch.setattr(revocation_cache, "IDLE_AFTER", 0.2)
    monkeypatch.setattr(revocation_cache, "IDLE_WAIT", 3600.0)
    with CachedRevocations(blacklist, max_staleness=STALENESS) as cache:
        assert cache.is_revoked("jti-1", "sid-1") is False
        # No check for a while: the last PING is old, so the thread is asleep, idle.
        assert eventually(lambda: time.monotonic() - cache._confirmed > 1.0)
        assert cache.from_memory("jti-1", "sid-1") is None  # not confirmed: ask Redis...
        assert eventually(lambda: cache.from_memory("jti-1", "sid-1") is False, timeout=10)
        assert cache.live  # ...and the thread PINGed at once


def test_sees_a_revocation_made_in_this_process(
    cache: CachedRevocations, blacklist: Blacklist
) -> None:
    assert cache.is_revoked("jti-1", "sid-1") is False
    blacklist.revoke([RevokeRequest(KIND_SESSION, "sid-1", time.time() + 60)])
    assert eventually(lambda: cache.is_revoked("jti-1", "sid-1"))
    assert cache.is_revoked(None, "sid-1") is True
    assert cache.is_revoked("jti-other", "sid-2") is False


def test_a_revocation_made_in_this_process_is_seen_before_redis_pushes_it(
    blacklist: Blacklist, redis_url: str, prefix: str, request: pytest.FixtureRequest
) -> None:
    """Read your own writes: a logout answered by this process is never followed by a request
    this process answers from memory as "not revoked", however late Redis's push comes (here
    never: pushes are dropped). Through any ``Blacklist`` of the process, not only the cache's."""
    with CachedRevocations(blacklist, max_staleness=30.0) as cache:
        cache._on_push = lambda message: None  # type: ignore[method-assign]
        other = Blacklist(connect(redis_url), prefix=prefix)
        request.addfinalizer(other.client.close)
        for sid in ("sid-1", "sid-2", "sid-3"):
            assert cache.is_revoked("jti-1", sid) is False
        assert eventually(lambda: cache.from_memory("jti-1", "sid-3") is False)
        blacklist.revoke([RevokeRequest(KIND_SESSION, "sid-1", time.time() + 60)])
        other.revoke([RevokeRequest(KIND_SESSION, "sid-2", time.time() + 60)])
        assert cache.from_memory("jti-1", "sid-1") is None  # forgotten: only Redis can tell
        assert cache.is_revoked("jti-1", "sid-1") is True
        assert cache.is_revoked("jti-1", "sid-2") is True
        assert cache.from_memory("jti-1", "sid-3") is False  # the rest is still remembered
        assert cache.stats.local_writes == 2
        (key,) = blacklist.revoke([RevokeRequest(KIND_SESSION, "sid-3", time.time() + 60)])
        assert cache.is_revoked("jti-1", "sid-3") is True
        blacklist.unrevoke([key])
        assert cache.is_revoked("jti-1", "sid-3") is False
    blacklist.revoke([RevokeRequest(KIND_SESSION, "sid-4", time.time() + 60)])
    assert cache.stats.local_writes == 4  # closed: no longer told


def test_a_miss_read_just_before_a_local_revoke_is_not_kept(blacklist: Blacklist) -> None:
    """The forget runs after Redis took the write: a check that read "not revoked" just before
    it (here: inside the revoke, before the write) is dropped, not remembered. Pushes dropped."""
    with CachedRevocations(blacklist, max_staleness=30.0) as cache:
        cache._on_push = lambda message: None  # type: ignore[method-assign]
        assert eventually(lambda: cache.live)
        write = blacklist._guarded

        def check_then_write(fn: Callable[[], object]) -> object:
            assert cache.is_revoked("jti-1", "sid-1") is False  # read before the write
            return write(fn)

        blacklist._guarded = check_then_write  # type: ignore[method-assign]
        blacklist.revoke([RevokeRequest(KIND_SESSION, "sid-1", time.time() + 60)])
        assert cache.from_memory("jti-1", "sid-1") is None
        assert cache.is_revoked("jti-1", "sid-1") is True


def test_a_server_that_refuses_tracking_is_asked_less_and_less_often(
    private: tuple[RedisProcess, Blacklist],
) -> None:
    """Refused (an ACL user without CLIENT): ``start`` returns after the first attempt, and
    the attempts back off (each wait is at least twice the one before, up to the cap)."""
    proc, bl = private
    admin = redis.Redis.from_url(proc.url)
    admin.execute_command("ACL", "SETUSER", "default", "-client")
    attempts: list[float] = []

    def factory() -> object:
        attempts.append(time.monotonic())
        return revocation_cache._tracking_connection(bl.client.connection_pool)

    cache = CachedRevocations(bl, reconnect_delay=0.05, connection_factory=factory)
    try:
        assert cache.start(wait=3600) is False  # not an hour: the first refusal ends the wait
        assert eventually(lambda: len(attempts) >= 5, timeout=30)
        gaps = [b - a for a, b in itertools.pairwise(attempts)]
        assert gaps[3] >= 0.4 and gaps[3] >= gaps[0], gaps  # 0.05, 0.1, 0.2, 0.4, ...
    finally:
        cache.close()
        admin.execute_command("ACL", "SETUSER", "default", "+client")
        admin.close()


def test_sees_a_revocation_made_by_another_process(
    cache: CachedRevocations, redis_url: str, prefix: str
) -> None:
    sids = [f"sid-{i}" for i in range(5)]
    for sid in sids:
        assert cache.is_revoked("j", sid) is False  # cached "not revoked"
    revoke_in_subprocess(redis_url, prefix, sids[:3])
    for sid in sids[:3]:
        assert eventually(lambda sid=sid: cache.is_revoked("j", sid)), sid
    assert cache.is_revoked("j", sids[3]) is False
    assert cache.stats.invalidations >= 3


def test_unrevoke_and_expiry_are_seen(cache: CachedRevocations, blacklist: Blacklist) -> None:
    remove_write_listener(cache._forget_written)  # the deletes come as Redis's pushes
    keys = blacklist.revoke([RevokeRequest(KIND_SESSION, "sid-x", time.time() - 8)])  # TTL 2 s
    assert cache.is_revoked(None, "sid-x") is True
    (key,) = keys
    blacklist.unrevoke([key])
    assert eventually(lambda: cache.is_revoked(None, "sid-x") is False)
    blacklist.revoke([RevokeRequest(KIND_SESSION, "sid-y", time.time() - 9)])  # TTL 1 s
    assert cache.is_revoked(None, "sid-y") is True
    assert eventually(lambda: cache.is_revoked(None, "sid-y") is False, timeout=15)


def test_auth_uses_the_cache_and_rejects_revoked_sessions(
    store: SqliteStore, blacklist: Blacklist, codec: TokenCodec, clock: FrozenClock, redis_url: str
) -> None:
    cache = CachedRevocations(blacklist, max_staleness=STALENESS)
    assert cache.start(wait=10)
    try:
        auth = Auth(store, blacklist, codec, clock=clock, revocation_cache=cache)
        session, access, _ = auth.login("u1", "a@example.com", "A")
        assert auth.authenticate(access).ok
        assert auth.authenticate(access).ok
        assert cache.stats.hits >= 1
        revoke_in_subprocess(redis_url, blacklist.prefix, [session.id])
        assert eventually(lambda: auth.authenticate(access).reason is Reason.REVOKED)
    finally:
        cache.close()


def test_concurrent_revocations_never_leave_a_stale_not_revoked(
    cache: CachedRevocations, redis_url: str, prefix: str
) -> None:
    """Checks race with revocations from another process; afterwards every revoked session must
    read as revoked (a cached "no" that survived an invalidation would fail here)."""
    import threading

    sids = [f"race-{i}" for i in range(60)]
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            for sid in sids:
                cache.is_revoked(f"j-{sid}", sid)

    threads = [threading.Thread(target=hammer) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        revoke_in_subprocess(redis_url, prefix, sids[::2], pause=0.002)
    finally:
        stop.set()
        for t in threads:
            t.join()
    time.sleep(STALENESS * 2)
    assert all(cache.is_revoked(f"j-{sid}", sid) for sid in sids[::2])
    assert not any(cache.is_revoked(f"j-{sid}", sid) for sid in sids[1::2])


@pytest.fixture
def private(redis_process: RedisProcess) -> Iterator[tuple[RedisProcess, Blacklist]]:
    client = connect(redis_process.url, timeout=0.5)
    yield redis_process, Blacklist(client, prefix="p:")
    client.close()


def test_connection_loss_fails_closed(private: tuple[RedisProcess, Blacklist]) -> None:
    proc, bl = private
    cache = CachedRevocations(bl, max_staleness=STALENESS, reconnect_delay=0.05)
    assert cache.start(wait=10)
    try:
        assert cache.is_revoked("j", "s") is False
        assert cache.is_revoked("j", "s") is False  # now a hit
        proc.stop()  # SIGKILL
        time.sleep(STALENESS * 2)
        # The cached "not revoked" must not be served: Redis is asked, and it is gone.
        with pytest.raises(RedisUnavailable):
            cache.is_revoked("j", "s")
        assert eventually(lambda: not cache._live)
        assert len(cache) == 0
        assert cache.last_error
    finally:
        cache.close()


def test_an_idle_channel_gone_silent_mid_message_is_dropped(
    private: tuple[RedisProcess, Blacklist], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An idle channel gets half a push and then nothing (the path went silent, the connection
    still open): a PING decides, and without its PONG the cache drops the channel and connects
    again. It never spins on the half message, and close() stops it."""
    monkeypatch.setattr(revocation_cache, "IDLE_AFTER", 0.2)
    proc, direct = private
    proxy = TcpProxy("127.0.0.1", proc.port).start()
    client = connect(f"redis://127.0.0.1:{proxy.port}/0", timeout=0.5)
    cache = CachedRevocations(Blacklist(client, prefix="p:"), max_staleness=STALENESS)
    try:
        assert cache.start(wait=10)
        assert cache.is_revoked("j", "s") is False
        assert eventually(lambda: time.monotonic() - cache._confirmed > 1.0)  # idle now
        proxy.stall_replies(5)
        direct.revoke([RevokeRequest(KIND_SESSION, "s", time.time() + 60)])  # pushes to it
        assert proxy.stalled.wait(10), "the push never reached the proxy"
        assert eventually(lambda: "no PONG" in (cache.last_error or ""), timeout=10)
        thread = cache._thread
        assert thread is not None
    finally:
        cache.close()
        proxy.close()
        client.close()
    assert not thread.is_alive()


def test_silent_stall_stops_answers_from_memory(private: tuple[RedisProcess, Blacklist]) -> None:
    """Redis frozen (SIGSTOP): the connection stays open but no PONG comes back. The lease
    lapses, so the cache asks Redis, which times out: RedisUnavailable, never a stale "no"."""
    proc, bl = private
    cache = CachedRevocations(bl, max_staleness=STALENESS)
    assert cache.start(wait=10)
    assert proc.proc is not None
    try:
        assert cache.is_revoked("j", "s") is False
        assert eventually(lambda: cache.live)
        os.kill(proc.proc.pid, signal.SIGSTOP)
        try:
            time.sleep(STALENESS * 2)
            assert not cache.live
            with pytest.raises(RedisUnavailable):
                cache.is_revoked("j", "s")
        finally:
            os.kill(proc.proc.pid, signal.SIGCONT)
        assert eventually(lambda: cache.live)
    finally:
        cache.close()


def test_redis_restart(private: tuple[RedisProcess, Blacklist]) -> None:
    proc, bl = private
    cache = CachedRevocations(bl, max_staleness=STALENESS, reconnect_delay=0.05)
    assert cache.start(wait=10)
    try:
        assert cache.is_revoked("j", "before") is False
        assert cache.is_revoked("j", "after") is False
        bl.revoke([RevokeRequest(KIND_SESSION, "before", time.time() + 60)])
        assert eventually(lambda: cache.is_revoked("j", "before"))
        proc.restart()  # AOF (fsync always) keeps "before"
        assert eventually(lambda: cache._live, timeout=15), cache.last_error
        assert cache.stats.connects >= 2
        assert cache.is_revoked("j", "before") is True
        assert cache.is_revoked("j", "after") is False
        revoke_in_subprocess(proc.url, "p:", ["after"])
        assert eventually(lambda: cache.is_revoked("j", "after"))
    finally:
        cache.close()


def test_flushdb_empties_the_cache(private: tuple[RedisProcess, Blacklist]) -> None:
    _, bl = private
    cache = CachedRevocations(bl, max_staleness=STALENESS)
    assert cache.start(wait=10)
    try:
        bl.revoke([RevokeRequest(KIND_SESSION, "s", time.time() + 60)])
        assert eventually(lambda: cache.is_revoked("j", "s"))
        bl.client.flushdb()
        assert eventually(lambda: cache.is_revoked("j", "s") is False)
    finally:
        cache.close()


def test_a_server_that_refuses_tracking_means_no_cache(
    private: tuple[RedisProcess, Blacklist],
) -> None:
    proc, bl = private
    admin = redis.Redis.from_url(proc.url)
    admin.execute_command("ACL", "SETUSER", "default", "-client")  # CLIENT ... now refused
    try:
        cache = CachedRevocations(bl, max_staleness=STALENESS, reconnect_delay=0.05)
        assert cache.start(wait=1) is False
        try:
            bl.revoke([RevokeRequest(KIND_SESSION, "s", time.time() + 60)])
            assert cache.is_revoked("j", "s") is True
            assert cache.is_revoked("j", "t") is False
            assert cache.stats.bypassed == 2 and cache.stats.hits == 0
            assert "permissions" in (cache.last_error or "")
        finally:
            cache.close()
    finally:
        admin.execute_command("ACL", "SETUSER", "default", "+client")
        admin.close()


class _SlowReader(CachedRevocations):
    """Lets a revocation land (and its invalidation be applied) between Redis answering a miss
    and the answer being stored: the classic client-side-caching race, made deterministic."""

    def __init__(self, blacklist: Blacklist, writer: Blacklist) -> None:
        super().__init__(blacklist, max_staleness=STALENESS)
        self.writer = writer
        self.raced = False

    def _query(self, keys: list[str]) -> list[bool]:
        answers = super()._query(keys)
        if not self.raced:
            self.raced = True
            seen = self.stats.invalidations
            self.writer.revoke([RevokeRequest(KIND_SESSION, "raced", time.time() + 60)])
            assert eventually(lambda: self.stats.invalidations > seen)
        return answers


def test_an_invalidation_during_a_miss_discards_the_answer(
    blacklist: Blacklist, redis_url: str, prefix: str
) -> None:
    writer_client = connect(redis_url)
    cache = _SlowReader(blacklist, Blacklist(writer_client, prefix=prefix))
    assert cache.start(wait=10)
    try:
        assert cache.is_revoked(None, "raced") is False  # Redis said no, before the revocation
        assert cache.raced
        assert cache.is_revoked(None, "raced") is True  # the stale "no" was not kept
    finally:
        cache.close()
        writer_client.close()
