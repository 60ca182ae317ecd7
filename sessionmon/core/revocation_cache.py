"""Cached revocation checks: a local mirror of blacklist lookups, kept current by Redis itself.

``Auth`` uses one when given (the example web app gives each worker one unless
``SESSIONMON_REVOCATION_CACHE=0``). ``CachedRevocations`` answers ``is_revoked(jti, sid)`` from
memory when it can prove the answer is current, and asks Redis otherwise.

How it stays current: one dedicated RESP3 connection runs ``CLIENT TRACKING ON BCAST PREFIX
<prefix>bl:`` (server-assisted client-side caching, Redis >= 6); on a Redis Cluster one such
connection per master (a thread each), and the cache is live only while every one of them is
confirmed (one down: fail closed, as below; after a failover the masters are read again).
Redis then pushes an ``invalidate`` message for every write, delete or expiry of any key under
the blacklist prefix, whoever made it. A background thread reads those pushes and drops the cached
answers for those keys.

Why an answer is never stale by more than ``max_staleness`` seconds (default 50 ms):

- The thread PINGs on the same connection every ``heartbeat`` (default ``max_staleness / 2``,
  while checks are coming in; an idle process does not ping, and its first checks after a pause
  ask Redis). Redis replies in
  order, so a PONG proves every invalidation for writes before that PING was sent has already been
  applied. The cache serves answers only while the last confirmed PING was sent at most
  ``max_staleness`` ago; a stalled, partitioned or paused channel therefore stops hits by itself,
  without any error.
- A miss puts a unique marker in the cache *before* asking Redis; an invalidation removes whatever
  is there; the answer is stored only if the marker is still in place. A write that races with the
  read can therefore never leave a "not revoked" behind.
- This process's own writes: every ``Blacklist.revoke`` / ``unrevoke`` made in the process
  calls the caches' ``_forget_written`` once Redis has answered, before it returns, so the next
  check of those keys asks Redis without waiting for the push (a request right after a logout
  on the same worker is refused). A miss that read "not revoked" read it before the write, so
  its marker was placed before, and is removed by, that forget.
- Fail closed: when the channel is down (connection lost, Redis restarting, tracking refused), the
  cache is emptied and every check goes to Redis, which raises ``RedisUnavailable`` if it cannot
  answer. After a reconnect the cache starts empty. Nothing is ever answered from memory while the
  channel is not confirmed.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from sessionmon.core.blacklist import (
    Blacklist,
    add_write_listener,
    redis_errors,
    remove_write_listener,
)

DEFAULT_MAX_STALENESS = 0.05
DEFAULT_MAX_ENTRIES = 200_000
IDLE_AFTER = 1.0  # seconds without a check after which the heartbeat pauses
IDLE_WAIT = 0.2  # how often an idle thread looks for work
DRAIN_MAX = 1000  # pushes an idle thread applies before it sleeps again
FORGET_ALL_FROM = 10_000  # keys written at once from which the whole cache is dropped instead
REFUSED_MAX_DELAY = 30.0  # seconds between tries at most while the server refuses tracking


class _Read(enum.Enum):
    """What one read of the invalidation channel brought."""

    NOTHING = "nothing"  # the wait ran out
    MESSAGE = "message"  # a push (applied) or a reply that is not our PONG
    PONG = "pong"  # the PING we sent is answered: the channel is confirmed


class RevocationCheck(Protocol):
    """What ``Auth`` needs to decide whether a token or its session is revoked."""

    def is_revoked(self, jti: str | None, sid: str | None) -> bool: ...


@dataclass
class CacheStats:
    """Counters (approximate under threads; for benchmarks and the status line)."""

    hits: int = 0
    misses: int = 0
    bypassed: int = 0  # checks sent straight to Redis because the channel was not confirmed
    invalidations: int = 0
    flushes: int = 0
    connects: int = 0
    local_writes: int = 0  # keys this process wrote, forgotten without waiting for the push


class CachedRevocations:
    """A ``Blacklist.is_revoked`` that answers from memory while Redis keeps it current.

    ``start()`` launches the invalidation thread; ``close()`` stops it. Thread-safe.
    """

    def __init__(
        self,
        blacklist: Blacklist,
        *,
        max_staleness: float = DEFAULT_MAX_STALENESS,
        heartbeat: float | None = None,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        reconnect_delay: float = 0.2,
        connection_factory: Callable[[], Any] | None = None,
    ) -> None:
        if max_staleness <= 0:
            raise ValueError("max_staleness must be positive")
        self.blacklist = blacklist
        self.max_staleness = float(max_staleness)
        self.heartbeat = float(heartbeat) if heartbeat else self.max_staleness / 2
        self.max_entries = int(max_entries)
        self.reconnect_delay = reconnect_delay
        self.prefix = blacklist.layout.base  # "<prefix>bl:" covers token and session keys
        self.stats = CacheStats()
        self.last_error: str | None = None
        self._connection_factory = connection_factory or self._default_connection
        self._cache: dict[str, object] = {}
        self._lock = threading.Lock()
        self._epoch = 0
        self._live = False
        # monotonic time at which the last PING whose PONG arrived was sent: everything Redis
        # wrote before it has been applied to the cache.
        self._confirmed = -1.0
        # monotonic time of the last check: the thread PINGs only while checks are coming in, so
        # an idle process costs nothing (the first check after a pause asks Redis).
        self._wanted = -1.0
        self._stop = threading.Event()
        self._tried = threading.Event()  # the first attempt is over (live or failed)
        # One per channel thread: set when a check finds the channel unconfirmed (an idle
        # thread PINGs at once) and on close.
        self._wakes: tuple[threading.Event, ...] = ()
        self._thread: threading.Thread | None = None
        self._conn: Any = None
        # Each channel's last confirmed PING (monotonic); ``_confirmed`` is the oldest of them.
        self._channels: dict[str, float] = {}

    # -- lifecycle --------------------------------------------------------------------------

    def start(self, wait: float | None = 5.0) -> bool:
        """Start the invalidation thread; with ``wait``, block until its first attempt is over,
        at most ``wait`` seconds (returns live: False when that attempt failed)."""
        if self._thread is None:
            self._stop.clear()
            add_write_listener(self._forget_written)
            self._thread = threading.Thread(
                target=self._run, name="sessionmon-revocation-cache", daemon=True
            )
            self._thread.start()
        if wait:
            self._tried.wait(wait)
        return self.live

    def close(self) -> None:
        """Stop the thread and forget everything."""
        self._stop.set()
        self._wake_all()  # the threads notice at once (or within IDLE_WAIT) and disconnect
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        remove_write_listener(self._forget_written)
        self._go_dark(None)

    def __enter__(self) -> CachedRevocations:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def live(self) -> bool:
        """True while the invalidation channel is confirmed within ``max_staleness``."""
        return self._live and time.monotonic() - self._confirmed <= self.max_staleness

    def __len__(self) -> int:
        return len(self._cache)

    # -- the check ---------------------------------------------------------------------------

    def is_revoked(self, jti: str | None, sid: str | None) -> bool:
        """True if the token or its session is revoked; raises ``RedisUnavailable`` when it must
        ask Redis and Redis cannot answer."""
        answer = self.from_memory(jti, sid)
        if answer is not None:
            return answer
        if not self._live:
            self.stats.bypassed += 1
            return self.blacklist.is_revoked(jti, sid)
        return self._fetch(self._keys(jti, sid))

    def from_memory(self, jti: str | None, sid: str | None) -> bool | None:
        """The answer of ``is_revoked`` when memory holds it and the channel is confirmed within
        ``max_staleness``; ``None`` when only Redis can tell. Never waits on I/O and never raises
        (an async server may call it on its event loop)."""
        keys = self._keys(jti, sid)
        if not keys:
            return False
        now = time.monotonic()
        paused = now - self._wanted > IDLE_AFTER
        self._wanted = now  # before the wake-up: the woken thread must see it
        if paused:
            self._wake_all()  # the first check after a pause: an idle thread PINGs now
        if not self._live:
            return None
        if now - self._confirmed > self.max_staleness:
            self._wake_all()
            return None
        cache = self._cache
        unknown = False
        for key in keys:
            value = cache.get(key)
            if value is True:
                self.stats.hits += 1
                return True
            if value is not False:
                unknown = True
        if unknown:
            return None
        self.stats.hits += 1
        return False

    def _wake_all(self) -> None:
        for wake in self._wakes:
            if not wake.is_set():
                wake.set()

    def _keys(self, jti: str | None, sid: str | None) -> list[str]:
        return self.blacklist.check_keys(jti, sid)

    def _fetch(self, keys: list[str]) -> bool:
        """Ask Redis (one round trip) and cache the answers unless invalidated meanwhile."""
        self.stats.misses += 1
        markers: dict[str, object] = {}
        with self._lock:
            epoch = self._epoch
            for key in keys:
                if not isinstance(self._cache.get(key), bool):
                    marker = object()
                    self._cache[key] = marker
                    markers[key] = marker
            self._evict()
        answers = self._query(keys)
        with self._lock:
            if epoch == self._epoch:
                for key, answer in zip(keys, answers, strict=True):
                    marker = markers.get(key)
                    if marker is not None and self._cache.get(key) is marker:
                        self._cache[key] = answer
        return any(answers)

    def _query(self, keys: list[str]) -> list[bool]:
        """EXISTS for each key, in one round trip (through the blacklist's error handling: a
        dead embedded server is revived as for any other command)."""

        def run() -> list[bool]:
            pipe = self.blacklist.client.pipeline(transaction=False)
            for key in keys:
                pipe.exists(key)
            return [bool(n) for n in pipe.execute()]

        return self.blacklist._run(run)

    def _evict(self) -> None:
        cache = self._cache
        while len(cache) > self.max_entries:
            del cache[next(iter(cache))]

    # -- the invalidation channel ------------------------------------------------------------

    def _default_connection(self) -> Any:
        return _tracking_connection(self.blacklist.client.connection_pool)

    def _channel_factories(self) -> list[tuple[str, Callable[[], Any]]]:
        """One invalidation channel per server: the one server, or each master of a cluster
        (a key's invalidation comes from the master that holds it)."""
        if not self.blacklist.cluster:
            return [("", self._connection_factory)]
        client = self.blacklist.client
        with redis_errors():
            masters = client.get_primaries()
            pools = [(n.name, client.get_redis_connection(n).connection_pool) for n in masters]
        if not pools:
            raise redis.ConnectionError("no Redis Cluster master known")
        return [(name, functools.partial(_tracking_connection, pool)) for name, pool in pools]

    def _go_dark(self, error: str | None) -> None:
        """Stop serving from memory and forget everything (fail closed)."""
        with self._lock:
            self._live = False
            self._channels.clear()
            self._epoch += 1
            self._cache.clear()
            if error is not None:
                self.last_error = error

    def _invalidate(self, keys: Any) -> None:
        with self._lock:
            if keys is None:  # FLUSHDB / FLUSHALL, or the server dropped its tracking table
                self._epoch += 1
                self._cache.clear()
                self.stats.flushes += 1
                return
            cache = self._cache
            for key in keys:
                cache.pop(key.decode() if isinstance(key, bytes) else str(key), None)
            self.stats.invalidations += len(keys)

    def _forget_written(self, keys: Any) -> None:
        """Keys this process just revoked (or unrevoked): asked of Redis at their next check,
        without waiting for Redis's push (a request right after a logout is answered 401)."""
        with self._lock:
            if len(keys) >= FORGET_ALL_FROM:  # a bulk logout: not one pop per key under the lock
                self._epoch += 1
                self._cache.clear()
            else:
                cache = self._cache
                for key in keys:
                    cache.pop(key, None)
            self.stats.local_writes += len(keys)

    def _run(self) -> None:
        failed = False
        refused_delay = 0.0
        while not self._stop.is_set():
            delay = self.reconnect_delay
            connects = self.stats.connects
            try:
                if failed and self.blacklist.cluster:
                    with contextlib.suppress(Exception):  # a failover: read the layout again
                        self.blacklist.client.nodes_manager.initialize()
                channels = self._channel_factories()
                if len(channels) == 1:
                    name, factory = channels[0]
                    self._listen(name, factory, self._stop, 1)
                else:
                    self._listen_all(channels)
            except Exception as exc:  # whatever broke a channel, never serve from memory
                text = (str(exc) or type(exc).__name__).splitlines()[0][:200]
                self._go_dark(f"invalidation channel down: {text}")
                failed = True
                if self.stats.connects != connects:  # it was live: start the backoff afresh
                    refused_delay = 0.0
                if isinstance(exc, redis.ResponseError | redis.AuthenticationError):
                    # Refused (Redis < 6, an ACL user without CLIENT TRACKING): it will not
                    # change soon; ask again less and less often.
                    refused_delay = min(
                        REFUSED_MAX_DELAY, max(self.reconnect_delay, 2 * refused_delay)
                    )
                    delay = refused_delay
                else:
                    refused_delay = 0.0
            else:
                self._go_dark(None)
                failed = False
                refused_delay = 0.0
            self._tried.set()
            self._stop.wait(delay)

    def _listen_all(self, channels: list[tuple[str, Callable[[], Any]]]) -> None:
        """One thread per channel (a cluster's masters); the first that fails stops them all
        (raised here), so that the cache is live only while every channel is confirmed."""
        stop = threading.Event()
        failures: list[Exception] = []

        def listen(name: str, factory: Callable[[], Any]) -> None:
            try:
                self._listen(name, factory, stop, len(channels))
            except Exception as exc:
                failures.append(exc)
            finally:
                stop.set()
                self._wake_all()  # idle siblings stop now, not at their next look

        threads = [
            threading.Thread(
                target=listen, args=channel, name=f"sessionmon-tracking-{channel[0]}", daemon=True
            )
            for channel in channels
        ]
        for thread in threads:
            thread.start()
        while not self._stop.is_set() and not stop.wait(IDLE_WAIT):
            pass
        stop.set()
        self._wake_all()
        for thread in threads:
            thread.join(timeout=5)
        if failures:
            raise failures[0]

    def _listen(self, name: str, factory: Callable[[], Any], stop: threading.Event, n: int) -> None:
        """Run channel ``name`` (one of ``n``) until ``stop`` or an error."""
        conn = factory()
        self._conn = conn
        wake = threading.Event()
        with self._lock:
            self._wakes = (*self._wakes, wake)
        try:
            conn.connect()  # HELLO 3
            with contextlib.suppress(AttributeError):
                conn._parser.set_invalidation_push_handler(_identity)
            sent = time.monotonic()
            conn.send_command("CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", self.prefix)
            reply = conn.read_response(push_request=True)
            while _is_push(reply):  # nothing can be pending yet, but be exact about it
                self._on_push(reply)
                reply = conn.read_response(push_request=True)
            if reply not in (b"OK", "OK"):
                raise redis.ResponseError(f"CLIENT TRACKING refused: {reply!r}")
            with self._lock:
                self._epoch += 1
                self._cache.clear()
                self._channels[name] = sent
                if len(self._channels) == n:  # every channel is up: serve from memory
                    self._confirmed = min(self._channels.values())
                    self._live = True
                    live = True
                else:
                    live = False
            if live:
                self.stats.connects += 1
                self.last_error = None
                self._tried.set()
            ping_sent: float | None = None
            ping_now = False  # an idle read stalled mid-message: a PING decides if it lives
            no_pong_after = max(1.0, 4 * self.max_staleness)
            while not stop.is_set():
                # Two wake-ups per heartbeat (each costs the event loop a GIL hand-off): the
                # PING when it is due, then its PONG; plus one per push Redis sends.
                if ping_sent is None and not ping_now:
                    wake.clear()  # then look at _wanted: a check after this sets it again
                    if time.monotonic() - self._wanted > IDLE_AFTER:
                        # Idle: take in what Redis pushed (a closed connection raises here),
                        # then sleep until a check comes (or IDLE_WAIT).
                        if self._drain(conn, name, n, stop):
                            ping_now = True
                        else:
                            wake.wait(IDLE_WAIT)
                        continue
                now = time.monotonic()
                if ping_sent is None:
                    due = self._channels.get(name, -1.0) + self.heartbeat
                    if now < due and not ping_now:
                        wait = min(IDLE_WAIT, due - now)  # a long heartbeat still sees a stop
                    else:
                        ping_now = False
                        ping_sent = now
                        conn.send_command("PING")
                        wait = IDLE_WAIT  # the PONG wakes it; a stop is seen meanwhile
                else:
                    wait = min(IDLE_WAIT, ping_sent + no_pong_after - now)
                    if wait <= 0:
                        raise redis.TimeoutError("no PONG on the invalidation channel")
                if self._reply(conn, name, ping_sent, n, wait) is _Read.PONG:
                    ping_sent = None
        finally:
            with self._lock:
                self._wakes = tuple(w for w in self._wakes if w is not wake)
            self._conn = None
            with contextlib.suppress(Exception):
                conn.disconnect()

    def _drain(self, conn: Any, name: str, n: int, stop: threading.Event) -> bool:
        """Apply the pushes already received (up to ``DRAIN_MAX``). True when a read stalled in
        the middle of a message: the connection may be dead, and only a PING can tell."""
        for _ in range(DRAIN_MAX):
            if stop.is_set() or not conn.can_read(0):
                return False
            if self._reply(conn, name, None, n, IDLE_WAIT) is _Read.NOTHING:
                return True
        return False

    def _reply(self, conn: Any, name: str, ping_sent: float | None, n: int, wait: float) -> _Read:
        """Read one message of channel ``name`` within ``wait`` seconds and act on it: a push
        is applied, the PONG of the PING sent at ``ping_sent`` confirms the channel."""
        try:
            # One blocking read (not select + read): fewer GIL hand-offs per message.
            reply = conn.read_response(push_request=True, timeout=wait, disconnect_on_error=False)
        except redis.TimeoutError:
            return _Read.NOTHING
        if _is_push(reply):
            self._on_push(reply)
        elif reply in (b"PONG", "PONG") and ping_sent is not None:
            self._confirm(name, ping_sent, n)
            return _Read.PONG
        elif isinstance(reply, redis.ResponseError | Exception):
            raise redis.ResponseError(str(reply))
        return _Read.MESSAGE

    def _confirm(self, name: str, sent: float, n: int) -> None:
        """Channel ``name``'s PONG for a PING sent at ``sent``: the cache is as current as the
        least current of the ``n`` channels."""
        if n == 1:
            self._channels[name] = sent
            self._confirmed = sent
            return
        with self._lock:
            self._channels[name] = sent
            if len(self._channels) == n:
                self._confirmed = min(self._channels.values())

    def _on_push(self, message: Any) -> None:
        kind = message[0]
        if kind in (b"invalidate", "invalidate"):
            self._invalidate(message[1] if len(message) > 1 else None)


def _tracking_connection(pool: Any) -> Any:
    """A new RESP3 connection with the pool's settings, outside the pool, that never retries."""
    kwargs = dict(pool.connection_kwargs)
    kwargs.update(
        protocol=3,
        health_check_interval=0,  # the thread does its own PINGs on this connection
        retry=Retry(NoBackoff(), 0),  # and its own reconnects
        client_name="sessionmon-revocation-cache",
    )
    kwargs.pop("retry_on_error", None)
    kwargs.pop("retry_on_timeout", None)
    return pool.connection_class(**kwargs)


def _identity(message: Any) -> Any:
    return message


def _is_push(reply: Any) -> bool:
    return (
        isinstance(reply, list)
        and len(reply) >= 1
        and reply[0] in (b"invalidate", "invalidate", b"tracking-redir-broken")
    )
