"""The redis-py client sessionmon uses: bounded timeouts, bounded retries. Every client sessionmon
makes is made here (``connect``): a plain or TLS server (``redis://``, ``rediss://``,
``unix://``), the master of a Sentinel service (``redis+sentinel://``, ``rediss+sentinel://``
over TLS), or a Redis Cluster
(``redis+cluster://host:port[,host:port]``, or a ``redis://`` / ``rediss://`` URL whose server
says ``cluster_enabled:1`` in ``INFO cluster``: then redis-py's ``RedisCluster``).

A hung server (stopped, overloaded, behind a dead network path) must cost one ``timeout``, not
several: a timed-out command is never retried. A dropped connection (a restarted server, an idle
connection closed by a proxy) is retried at most twice, and only while the first attempt is less
than ``timeout`` old, so one command costs at most about twice the timeout in the worst case.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

import redis
import redis.sentinel
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.cluster import ClusterNode, RedisCluster
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


CLUSTER_SCHEME = "redis+cluster"
SENTINEL_SCHEME = "redis+sentinel"
SENTINEL_TLS_SCHEME = "rediss+sentinel"
SENTINEL_PORT = 26379


@dataclass(frozen=True)
class TlsFiles:
    """The files of a ``rediss://`` connection: the CA bundle that signs the server's certificate
    (None: the system's), and a client certificate and its key for mutual TLS."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    def __bool__(self) -> bool:
        return any((self.ca_file, self.cert_file, self.key_file))

    def kwargs(self) -> dict[str, Any]:
        """redis-py's ``ssl_*`` options: the server's certificate and host name always checked."""
        if (self.cert_file is None) != (self.key_file is None):
            raise ConfigError("--redis-cert-file and --redis-key-file go together (mutual TLS)")
        for flag, path in (
            ("--redis-ca-file", self.ca_file),
            ("--redis-cert-file", self.cert_file),
            ("--redis-key-file", self.key_file),
        ):
            if path is not None and not path.is_file():
                raise ConfigError(f"{flag}: no such file: {path}")
        out: dict[str, Any] = {"ssl_cert_reqs": "required", "ssl_check_hostname": True}
        if self.ca_file is not None:
            out["ssl_ca_certs"] = str(self.ca_file)
        if self.cert_file is not None:
            out["ssl_certfile"] = str(self.cert_file)
            out["ssl_keyfile"] = str(self.key_file)
        return out


def _credentials(netloc: str) -> tuple[str | None, str | None, str]:
    """``user:pass@hosts`` -> (user, password, hosts), percent-decoded."""
    userinfo, _, hosts = netloc.rpartition("@")
    username = password = None
    if userinfo:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    return username, password, hosts


def _host_list(
    hosts: str, bad: Callable[[str], ConfigError], default_port: int | None = None
) -> tuple[tuple[str, int], ...]:
    """``host:port[,host:port]`` -> pairs; a host without a port takes ``default_port`` (an
    error when there is none)."""
    out = []
    for item in hosts.split(","):
        host, colon, port = item.strip().rpartition(":")
        if not colon and default_port is not None:
            host, colon, port = item.strip(), ":", str(default_port)
        host = host.strip("[]")
        if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise bad(f"expected host:port[,host:port], not {item.strip()!r}")
        out.append((host, int(port)))
    return tuple(out)


@dataclass(frozen=True)
class SentinelUrl:
    """``redis+sentinel://[user:pass@]host:port[,host:port]/service_name[/db]``: the credentials
    and ``db`` are the master's; ``?sentinel_username=...&sentinel_password=...`` the sentinels'.

    ``rediss+sentinel://`` speaks TLS to the master and to the sentinels; ``?sentinel_tls=0``
    (plain sentinels, TLS data nodes) or ``redis+sentinel://...?sentinel_tls=1`` (TLS sentinels,
    plain data nodes) split the two."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = None
    tls: bool = False
    sentinel_tls: bool = False

    @classmethod
    def parse(cls, url: str) -> SentinelUrl:
        def bad(why: str) -> ConfigError:
            return ConfigError(f"bad Redis Sentinel URL {mask_url(url)}: {why}")

        parts = urlsplit(url)
        username, password, hosts = _credentials(parts.netloc)
        sentinels = _host_list(hosts, bad, SENTINEL_PORT)
        path = [unquote(p) for p in parts.path.split("/") if p]
        if not path or len(path) > 2:
            raise bad("expected /service_name or /service_name/db after the sentinels")
        if len(path) == 2 and not path[1].isdigit():
            raise bad(f"the database must be a number, not {path[1]!r}")
        options = dict(parse_qsl(parts.query, keep_blank_values=True))
        known = ("sentinel_username", "sentinel_password", "sentinel_tls")
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise bad(f"unknown option {unknown[0]!r} ({', '.join(known)})")
        tls = parts.scheme.lower() == SENTINEL_TLS_SCHEME
        sentinel_tls = _flag(options.get("sentinel_tls"), tls, bad)
        return cls(
            sentinels=sentinels,
            service=path[0],
            db=int(path[1]) if len(path) == 2 else 0,
            username=username,
            password=password,
            sentinel_username=options.get("sentinel_username") or None,
            sentinel_password=options.get("sentinel_password") or None,
            tls=tls,
            sentinel_tls=sentinel_tls,
        )

    def display(self) -> str:
        return ", ".join(f"{host}:{port}" for host, port in self.sentinels)


def _flag(value: str | None, default: bool, bad: Callable[[str], ConfigError]) -> bool:
    """A URL option's yes/no (``1``/``0``, ``yes``/``no``, ``true``/``false``)."""
    if value is None:
        return default
    if value.lower() in ("1", "yes", "true"):
        return True
    if value.lower() in ("0", "no", "false"):
        return False
    raise bad(f"expected 1 or 0, not {value!r}")


class _Sentinel(redis.sentinel.Sentinel):
    """redis-py's Sentinel whose "no master" error says why in one line: no sentinel answered,
    none knows the service, or the master is down (a failover under way)."""

    def __init__(self, url: SentinelUrl, timeout: float, tls: TlsFiles | None = None) -> None:
        super().__init__(
            list(url.sentinels),
            sentinel_kwargs={
                "socket_timeout": timeout,
                "socket_connect_timeout": timeout,
                # Each sentinel is asked once: the next one is the retry.
                "retry": Retry(NoBackoff(), 0),
                "username": url.sentinel_username,
                "password": url.sentinel_password,
            }
            | (_tls_options(tls) if url.sentinel_tls else {}),
        )
        self.url = url

    def discover_master(self, service_name: str) -> tuple[str, int]:
        unreachable: list[str] = []
        down = unknown = 0
        for position, sentinel in enumerate(self.sentinels):
            try:
                masters = sentinel.sentinel_masters()
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
                unreachable.append(str(exc).splitlines()[0] if str(exc) else repr(exc))
                continue
            except redis.exceptions.ResponseError as exc:  # NOAUTH, NOPERM, ...
                unreachable.append(str(exc).splitlines()[0])
                continue
            state = masters.get(service_name) if isinstance(masters, dict) else None
            if not state:
                unknown += 1
            elif not self.check_master_state(state, service_name):
                down += 1
            else:
                self.sentinels[0], self.sentinels[position] = sentinel, self.sentinels[0]
                return state["ip"], state["port"]
        from sessionmon.core.blacklist import _tls_failure

        where = f"(sentinels {self.url.display()})"
        if unreachable and not (down or unknown) and (tls := _tls_failure(unreachable[0])):
            raise redis.sentinel.MasterNotFoundError(
                f"no Redis Sentinel answered {where}: TLS handshake failed: {tls}"
            )
        if down:
            why = f"the master of {service_name!r} is down (a failover may be under way) {where}"
        elif unknown:
            why = f"Redis Sentinel knows no service named {service_name!r} {where}"
        else:
            first = unreachable[0][:160] if unreachable else "?"
            why = f"no Redis Sentinel answered {where}: {first}"
            if not self.url.sentinel_tls and "reset by peer" in first:
                why += " (TLS-only sentinels need rediss+sentinel:// or ?sentinel_tls=1)"
        raise redis.sentinel.MasterNotFoundError(why)


class SentinelClient(redis.Redis):
    """The master of a Sentinel service; ``close`` also closes the sentinels' connections."""

    sentinels: redis.sentinel.Sentinel | None = None

    def close(self) -> None:
        super().close()
        if self.sentinels is not None:
            self.sentinels.close()


def _tls_options(tls: TlsFiles | None) -> dict[str, Any]:
    """redis-py's options of a TLS connection with ``tls``'s files (checked here)."""
    return {"ssl": True} | (tls or TlsFiles()).kwargs()


def _options(timeout: float) -> dict[str, Any]:
    """What every client gets: the timeouts and the bounded retry."""
    return {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": BoundedRetry(timeout),
        "health_check_interval": 30,
    }


def connect(
    url: str, *, timeout: float = TOOL_TIMEOUT, tls: TlsFiles | None = None, **kwargs: Any
) -> Any:
    """A client whose every command answers (or fails) within about ``timeout`` seconds.

    ``tls``: the CA and client certificate files of a ``rediss://``, ``rediss+sentinel://`` or
    ``redis+cluster://...?tls=1`` URL (a ``ConfigError`` with a URL without TLS). A
    ``redis+sentinel://`` URL gives the service's master, found through the sentinels on every
    new connection (so a failover is followed on reconnect). A
    ``redis+cluster://`` URL, or a ``redis://`` URL whose server is a cluster node, gives a
    ``RedisCluster`` (it reads the cluster's layout now: ``RedisUnavailable`` if no seed
    answers or the cluster is not in state ok).
    """
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme in (SENTINEL_SCHEME, SENTINEL_TLS_SCHEME):
        return _sentinel_master(SentinelUrl.parse(url), _options(timeout) | kwargs, timeout, tls)
    if tls and scheme not in ("rediss", CLUSTER_SCHEME):
        raise ConfigError(
            f"--redis-ca-file, --redis-cert-file and --redis-key-file need a rediss:// URL, "
            f"not {mask_url(url)}"
        )
    options = _options(timeout) | kwargs
    if scheme == "rediss":
        options = (tls or TlsFiles()).kwargs() | options
    if scheme == CLUSTER_SCHEME:
        cluster_url = ClusterUrl.parse(url)
        if tls and not cluster_url.tls:
            raise ConfigError(
                f"--redis-ca-file, --redis-cert-file and --redis-key-file need TLS: add ?tls=1 "
                f"to {mask_url(url)}"
            )
        return connect_cluster(cluster_url, options, timeout, tls)
    if scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(
            f"bad Redis URL {mask_url(url)}: use redis://, rediss://, unix://, "
            f"redis+sentinel://, rediss+sentinel:// or redis+cluster://"
        )
    try:
        client = redis.Redis.from_url(url, **options)
    except ValueError as exc:
        raise ConfigError(f"bad Redis URL {mask_url(url)}: {exc}") from None
    if scheme not in ("redis", "rediss"):
        return client
    cluster, hung = _is_cluster_node(client)
    kw = client.connection_pool.connection_kwargs
    client.close()
    if not cluster:
        # A fresh client: no connection made before the caller's hooks (the WriteGuard's).
        fresh = redis.Redis.from_url(url, **options)
        if hung is not None:
            fresh.connection_pool.connection_kwargs["redis_connect_func"] = _fail_fast(
                hung, timeout
            )
        return fresh
    if int(kw.get("db") or 0) != 0:
        raise ConfigError(
            f"bad Redis URL {mask_url(url)}: the server is a Redis Cluster node, which has "
            f"database 0 only"
        )
    seed = ClusterUrl(
        ((str(kw["host"]), int(kw["port"])),),
        username=kw.get("username"),
        password=kw.get("password"),
        tls=scheme == "rediss",
    )
    return connect_cluster(seed, options, timeout)


def _is_cluster_node(client: redis.Redis) -> tuple[bool, Exception | None]:
    """``INFO cluster`` says ``cluster_enabled:1``; and the timeout when the server did not
    answer in time. A server that does not answer is taken as not a cluster: its commands then
    fail as usual (``RedisUnavailable``)."""
    try:
        info = client.info("cluster")
    except redis.exceptions.ResponseError as exc:  # SELECT n on a cluster node
        return "cluster mode" in str(exc), None
    except redis.exceptions.TimeoutError as exc:
        return False, exc
    except (redis.exceptions.RedisError, OSError):
        return False, None
    return str(info.get("cluster_enabled", "0")) == "1", None


def _fail_fast(error: Exception, timeout: float) -> Callable[[Any], None]:
    """A connect hook: a connection made within ``timeout`` of a probe that timed out fails at
    once with the probe's error (a hung server costs one timeout, not two), then connections
    are made as usual."""
    until = time.monotonic() + timeout

    def on_connect(connection: Any) -> None:
        if time.monotonic() < until:
            raise redis.exceptions.TimeoutError(str(error))
        if hasattr(connection, "on_connect_check_health"):
            connection.on_connect_check_health(check_health=False)  # as the WriteGuard's hook
        else:
            connection.on_connect()

    return on_connect


@dataclass(frozen=True)
class ClusterUrl:
    """``redis+cluster://[user:pass@]host:port[,host:port]``: seeds of one Redis Cluster
    (database 0 only); ``?tls=1`` speaks TLS to every node."""

    seeds: tuple[tuple[str, int], ...]
    username: str | None = None
    password: str | None = None
    tls: bool = False

    @classmethod
    def parse(cls, url: str) -> ClusterUrl:
        def bad(why: str) -> ConfigError:
            return ConfigError(f"bad Redis Cluster URL {mask_url(url)}: {why}")

        parts = urlsplit(url)
        username, password, hosts = _credentials(parts.netloc)
        seeds = _host_list(hosts, bad)
        if parts.path.strip("/") not in ("", "0"):
            raise bad("a Redis Cluster has database 0 only")
        options = dict(parse_qsl(parts.query, keep_blank_values=True))
        unknown = sorted(set(options) - {"tls"})
        if unknown:
            raise bad(f"unknown option {unknown[0]!r} (tls)")
        return cls(
            seeds,
            username=username,
            password=password,
            tls=options.get("tls", "0") in ("1", "yes", "true"),
        )

    def display(self) -> str:
        return ",".join(f"{host}:{port}" for host, port in self.seeds)


def connect_cluster(
    url: ClusterUrl, options: dict[str, Any], timeout: float, tls: TlsFiles | None = None
) -> RedisCluster:
    """A ``RedisCluster`` from the seeds (the first that answers gives the layout); raises
    ``RedisUnavailable`` in one line when none answers or the cluster is not in state ok."""
    from sessionmon.core.blacklist import redis_errors

    # Each node's client gets the timeouts; RedisCluster's own retry (refresh the layout, try
    # again) is bounded like ours: twice, within a short backoff.
    node_options = {k: v for k, v in options.items() if k not in ("retry", "health_check_interval")}
    node_options["socket_timeout"] = node_options.get("socket_timeout", timeout)
    if url.tls:
        node_options = {"ssl": True} | (tls or TlsFiles()).kwargs() | node_options
    with redis_errors(f"Redis Cluster ({url.display()})"):
        try:
            return RedisCluster(
                startup_nodes=[ClusterNode(host, port) for host, port in url.seeds],
                username=url.username,
                password=url.password,
                retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), 2),
                **node_options,
            )
        except redis.exceptions.RedisClusterException as exc:
            text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if "Cluster mode is not enabled" in text:
                _why_no_layout(url, node_options)  # redis-py hides the server's answer
            if not url.tls and ("reset by peer" in text or "Connection closed" in text):
                # A TLS-only node hangs up on a plain client.
                raise redis.exceptions.ConnectionError(
                    f"no seed answered as a cluster node (the nodes closed the connection: "
                    f"TLS-only nodes need ?tls=1 and --redis-ca-file): {text}"
                ) from None
            raise redis.exceptions.ConnectionError(
                f"no seed answered as a cluster node in state ok: {text}"
            ) from None


def _why_no_layout(url: ClusterUrl, node_options: dict[str, Any]) -> None:
    """Ask the seeds ``CLUSTER SLOTS`` again and raise the first refusal (an ACL user without
    ``cluster|slots``: NOPERM), which redis-py reports as "Cluster mode is not enabled"."""
    for host, port in url.seeds:
        client = redis.Redis(
            host=host, port=port, username=url.username, password=url.password, **node_options
        )
        try:
            client.execute_command("CLUSTER", "SLOTS")
        except redis.exceptions.ResponseError as exc:
            if isinstance(exc, redis.exceptions.NoPermissionError) or "NOPERM" in str(exc):
                raise
        except redis.exceptions.RedisError:
            continue
        finally:
            client.close()


def _sentinel_master(
    url: SentinelUrl, options: dict[str, Any], timeout: float, tls: TlsFiles | None
) -> redis.Redis:
    if tls and not (url.tls or url.sentinel_tls):
        raise ConfigError(
            f"--redis-ca-file, --redis-cert-file and --redis-key-file need TLS: use "
            f"rediss+sentinel:// (or ?sentinel_tls=1) for the sentinels {url.display()}"
        )
    if url.tls:
        options = _tls_options(tls) | options
    sentinel = _Sentinel(url, timeout, tls)
    client = sentinel.master_for(
        url.service,
        redis_class=SentinelClient,
        db=url.db,
        username=url.username,
        password=url.password,
        **options,
    )
    assert isinstance(client, SentinelClient)
    client.sentinels = sentinel
    return client
