"""Is this Redis safe to keep revocations in? Eviction, persistence, replicas.

A blacklist key that Redis evicts is a revoked token that works again, silently. Every key has a
TTL, so any ``maxmemory-policy`` but ``noeviction`` (``allkeys-*`` and ``volatile-*`` alike) may
drop revocations once ``maxmemory`` is reached (``maxmemory 0``: no limit, nothing is evicted).
``WriteGuard`` reads the server's settings on every new connection (the first, and each
reconnect), before any command runs on it (and again every ``max_age`` seconds), and refuses
revocations on a server that may evict them unless the operator allowed it
(``--allow-evicting-redis``). Persistence off (no AOF,
no RDB save points) is a warning: revocations are lost when the server restarts.

On a Redis Cluster every master is read (and every new connection to any node): the worst
master decides, and its findings name it.

Reading is ``CONFIG GET``; where CONFIG is not permitted (an ACL user, a managed Redis that renames
it) ``INFO memory`` and ``INFO persistence`` say the same, except the RDB save points. Reads only:
the authenticate path never waits for this.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Any, TypeVar

import redis
from redis.cluster import RedisCluster

from sessionmon.core.blacklist import redis_errors
from sessionmon.core.errors import RedisMayEvict

T = TypeVar("T")

SAFE_POLICY = "noeviction"
ALLOW_FLAG = "--allow-evicting-redis"


class Severity(Enum):
    """How bad a finding is: an error stops revocations, a warning is shown."""

    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True)
class Finding:
    """One thing wrong with the server, as one line."""

    severity: Severity
    code: str  # may_evict, eviction_unknown, no_persistence, persistence_unknown
    message: str

    def __str__(self) -> str:
        return f"{self.severity.value}: {self.message}"


@dataclass(frozen=True)
class ServerSettings:
    """What the server says about eviction and persistence (None: it would not say)."""

    maxmemory: int | None  # bytes; 0 is no limit
    policy: str | None
    aof: bool | None
    save: str | None  # RDB save points ("" is none); INFO does not show them
    source: str  # "CONFIG", "INFO" or "none"
    node: str | None = None  # the cluster master these are of (None: the one server)

    @property
    def may_evict(self) -> bool | None:
        """True if keys may be evicted, False if not, None if the server would not say."""
        if self.policy == SAFE_POLICY or self.maxmemory == 0:
            return False
        if self.policy is None or self.maxmemory is None:
            return None
        return True

    @property
    def persistent(self) -> bool | None:
        """True with AOF or RDB save points, False with neither, None if unknown."""
        if self.aof:
            return True
        if self.save is not None and self.aof is False:
            return bool(self.save.strip())
        return None

    def eviction_text(self) -> str:
        limit = "unknown" if self.maxmemory is None else _bytes(self.maxmemory)
        where = f" on master {self.node}" if self.node else ""
        return f"maxmemory-policy {self.policy or 'unknown'}, maxmemory {limit}{where}"


def worst(each: Iterable[ServerSettings]) -> ServerSettings:
    """The settings of the worst server: one that may evict, then one that would not say, then
    one without persistence, then one that would not say that."""
    ranked = sorted(
        each,
        key=lambda s: (
            {True: 0, None: 1, False: 2}[s.may_evict],
            {False: 0, None: 1, True: 2}[s.persistent],
        ),
    )
    return ranked[0]


def findings(settings: ServerSettings, *, allow_evicting: bool = False) -> list[Finding]:
    """What is wrong with ``settings`` for a blacklist, worst first (empty: nothing)."""
    out: list[Finding] = []
    evict = settings.may_evict
    if evict is not False:
        if evict:
            text = (
                f"Redis may evict blacklist keys ({settings.eviction_text()}): a revoked token "
                f"would work again"
            )
        else:
            text = (
                f"cannot read Redis's eviction policy ({settings.eviction_text()}; CONFIG and "
                f"INFO refused)"
            )
        if allow_evicting:
            out.append(Finding(Severity.WARNING, "may_evict", f"{text}; allowed by {ALLOW_FLAG}"))
        else:
            fix = f"set maxmemory-policy {SAFE_POLICY} (or {ALLOW_FLAG})"
            code = "may_evict" if evict else "eviction_unknown"
            out.append(Finding(Severity.ERROR, code, f"{text}; revocations refused: {fix}"))
    persistent = settings.persistent
    if persistent is False:
        out.append(
            Finding(
                Severity.WARNING,
                "no_persistence",
                "Redis persistence is off (appendonly no, no save points): revocations are "
                "lost when Redis restarts",
            )
        )
    elif persistent is None:
        out.append(
            Finding(
                Severity.WARNING,
                "persistence_unknown",
                "cannot tell whether Redis persists its data (AOF "
                + ("off" if settings.aof is False else "unknown")
                + ", RDB save points not readable without CONFIG): revocations may be lost "
                "when Redis restarts",
            )
        )
    return out


def read_server_settings(
    client: redis.Redis | RedisCluster, *, use_config: Callable[[], bool] = lambda: True
) -> ServerSettings:
    """CONFIG GET (or INFO where CONFIG is refused; ``use_config()`` False, asked once connected:
    INFO only); on a cluster, of every master (the worst); raises ``RedisUnavailable``."""
    return worst(read_each_server(client, use_config=use_config))


def read_each_server(
    client: redis.Redis | RedisCluster, *, use_config: Callable[[], bool] = lambda: True
) -> list[ServerSettings]:
    """The settings of the one server, or of each master of a cluster."""
    if isinstance(client, RedisCluster):
        with redis_errors():
            masters = client.get_primaries()
        if not masters:
            with redis_errors():
                raise redis.exceptions.ClusterDownError("no master known")
        out = []
        for node in masters:
            settings = _read_one(client.get_redis_connection(node), use_config)
            out.append(_on(settings, node.name))
        return out
    return [_read_one(client, use_config)]


def _on(settings: ServerSettings, node: str) -> ServerSettings:
    return ServerSettings(
        settings.maxmemory, settings.policy, settings.aof, settings.save, settings.source, node
    )


def _read_one(client: redis.Redis, use_config: Callable[[], bool]) -> ServerSettings:
    pool = client.connection_pool
    with redis_errors():
        connection = pool.get_connection()
        try:
            return connection.retry.call_with_retry(
                lambda: _read(_caller(connection), use_config=use_config()),
                lambda _error: connection.disconnect(),
            )
        finally:
            pool.release(connection)


def _caller(connection: Any) -> Callable[..., Any]:
    """``call(*command)`` on one connection: its raw reply (no client-side parsing)."""

    def call(*args: Any) -> Any:
        connection.send_command(*args, check_health=False)  # the command itself is the check
        return connection.read_response(disable_decoding=True)

    return call


def _read(call: Callable[..., Any], *, use_config: bool = True) -> ServerSettings:
    """The settings through ``call(*command)`` (raw replies: a client's or one connection's)."""
    try:
        if not use_config:
            raise redis.exceptions.ResponseError("CONFIG refused before")
        values: dict[str, str] = {}
        for name in ("maxmemory", "maxmemory-policy", "appendonly", "save"):
            values.update(_pairs(call("CONFIG", "GET", name)))  # Redis 6: one name per call
    except redis.exceptions.ResponseError:
        pass  # CONFIG renamed away, or not permitted to this user: INFO says most of it
    else:
        maxmemory, appendonly = values.get("maxmemory"), values.get("appendonly")
        return ServerSettings(
            maxmemory=int(maxmemory) if maxmemory is not None else None,
            policy=values.get("maxmemory-policy"),
            aof=None if appendonly is None else appendonly == "yes",
            save=values.get("save"),
            source="CONFIG",
        )
    try:
        info = _info_fields(call("INFO", "memory")) | _info_fields(call("INFO", "persistence"))
    except redis.exceptions.ResponseError:
        return ServerSettings(None, None, None, None, "none")
    maxmemory, aof = info.get("maxmemory"), info.get("aof_enabled")
    return ServerSettings(
        maxmemory=int(maxmemory) if maxmemory is not None else None,
        policy=info.get("maxmemory_policy"),
        aof=None if aof is None else aof == "1",
        save=None,
        source="INFO",
    )


def _pairs(reply: Any) -> dict[str, str]:
    """CONFIG GET's reply: a flat list (RESP2) or a map (RESP3)."""
    if isinstance(reply, dict):
        return {_text(k): _text(v) for k, v in reply.items()}
    items = list(reply or [])
    return {_text(items[i]): _text(items[i + 1]) for i in range(0, len(items) - 1, 2)}


def _info_fields(reply: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in _text(reply).splitlines():
        key, sep, value = line.partition(":")
        if sep and not line.startswith("#"):
            out[key.strip()] = value.strip()
    return out


class _RefusedOnConnect(redis.exceptions.RedisError):
    """Raised by the connect hook to stop a write on a new connection to a server that may evict
    keys (not a ConnectionError: never retried)."""


class WriteGuard:
    """Checks the server before revocations are written; waits for replicas after.

    Every new connection of ``client`` (the first one, and each reconnect) reads the server's
    settings before any command runs on it, and a write that is about to run on a new connection
    to a server that may evict keys is stopped there. ``write`` raises ``RedisMayEvict`` on such
    a server unless ``allow_evicting``; ``eviction_note`` then says so for every revoke. The
    settings are also read again after ``max_age`` seconds (a ``CONFIG SET`` on the same
    connection). ``wait_replicas`` > 0: each revoke is followed by ``WAIT`` on the same
    connection, for up to ``wait_timeout`` seconds.
    """

    def __init__(
        self,
        client: redis.Redis | RedisCluster,
        *,
        allow_evicting: bool = False,
        wait_replicas: int = 0,
        wait_timeout: float = 0.5,
        max_age: float = 60.0,
    ) -> None:
        self.client = client
        self.allow_evicting = allow_evicting
        self.wait_replicas = max(0, int(wait_replicas))
        self.wait_timeout = wait_timeout
        self.max_age = max_age
        self._lock = threading.Lock()
        self._local = threading.local()
        self._cluster = isinstance(client, RedisCluster)
        # What each server said (one entry; on a cluster one per master, by host:port).
        self._each: dict[str, ServerSettings] = {}
        self._settings: ServerSettings | None = None
        self._read_at = 0.0  # monotonic
        # CONFIG refused once (an ACL user): INFO from then on (one ACL LOG entry, not one per
        # connection).
        self._use_config = True
        self._watch_connects()

    def _watch_connects(self) -> None:
        if isinstance(self.client, RedisCluster):
            cluster = self.client
            user_hook: Callable[[Any], None] | None = cluster.user_on_connect_func

            def on_node_connect(connection: Any) -> None:
                # RedisCluster.on_connect has set the connection up already.
                if user_hook is not None:
                    user_hook(connection)
                node = f"{connection.host}:{connection.port}"
                settings = _read(_caller(connection), use_config=self._use_config)
                settings = self._remember([_on(settings, node)], replace=False)
                if getattr(self._local, "writing", False) and self._refuses(settings):
                    raise _RefusedOnConnect(self._refusal(settings))

            cluster.user_on_connect_func = on_node_connect
            return
        kwargs = self.client.connection_pool.connection_kwargs
        previous: Callable[[Any], None] | None = kwargs.get("redis_connect_func")

        def on_connect(connection: Any) -> None:
            if previous is not None:
                previous(connection)
            elif hasattr(connection, "on_connect_check_health"):
                # No PING health check on a connection being set up: its retry would reconnect
                # from inside this hook, again and again, on a server that accepts and then
                # hangs up (a TLS server that wanted a client certificate).
                connection.on_connect_check_health(check_health=False)
            else:
                connection.on_connect()
            settings = self._remember([_read(_caller(connection), use_config=self._use_config)])
            if getattr(self._local, "writing", False) and self._refuses(settings):
                raise _RefusedOnConnect(self._refusal(settings))

        kwargs["redis_connect_func"] = on_connect

    def _remember(self, each: list[ServerSettings], *, replace: bool = True) -> ServerSettings:
        """Keep what the servers said (``replace``: all of them; else these nodes only) and
        return the worst now known."""
        with self._lock:
            self._use_config = self._use_config and all(s.source == "CONFIG" for s in each)
            if replace:
                self._each = {}
                self._read_at = time.monotonic()
            for s in each:
                self._each[s.node or ""] = s
            self._settings = worst(self._each.values())
            return self._settings

    def _refuses(self, settings: ServerSettings) -> bool:
        return settings.may_evict is not False and not self.allow_evicting

    @staticmethod
    def _refusal(settings: ServerSettings) -> str:
        return next(f.message for f in findings(settings) if f.severity is Severity.ERROR)

    @property
    def wait_timeout_ms(self) -> int:
        return max(1, int(self.wait_timeout * 1000))

    def settings(self) -> ServerSettings:
        """The server's settings (read now when none are known or they are ``max_age`` old);
        raises ``RedisUnavailable``."""
        with self._lock:
            settings, age = self._settings, time.monotonic() - self._read_at
        if settings is not None and age < self.max_age:
            return settings
        return self._remember(read_each_server(self.client, use_config=lambda: self._use_config))

    def findings(self) -> list[Finding]:
        """What is wrong with the server (``findings`` of the settings), worst first."""
        return findings(self.settings(), allow_evicting=self.allow_evicting)

    def write(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` (a write) unless the server may evict it; raises ``RedisMayEvict``."""
        settings = self.settings()
        if self._refuses(settings):
            raise RedisMayEvict(self._refusal(settings))
        self._local.writing = True
        try:
            return fn()
        except _RefusedOnConnect as exc:  # reconnected to a server that now may evict
            raise RedisMayEvict(str(exc)) from None
        finally:
            self._local.writing = False

    def eviction_note(self) -> str | None:
        """One line for every revoke made on a server that may evict keys (allowed), else None."""
        settings = self._settings
        if settings is None or settings.may_evict is False:
            return None
        return f"Redis may evict this revocation ({settings.eviction_text()}; {ALLOW_FLAG})"


def _bytes(n: int) -> str:
    if n == 0:
        return "0 (no limit)"
    for unit, size in (("gb", 1 << 30), ("mb", 1 << 20), ("kb", 1 << 10)):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return f"{n} bytes"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
