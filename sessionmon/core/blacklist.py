"""The Redis blacklist: one key per revoked token or session, each with a TTL, plus an expiry index.

The key layout (``core/blacklist_keys.py``): ``<prefix>bl:{<tag>}:jti:<jti>`` for a token,
``<prefix>bl:{<tag>}:sid:<sid>`` for a whole session, where ``<tag>`` is one of ``SHARDS`` hash
tags chosen from the session id. Values are small JSON documents. The expiry index is sharded the
same way: ``<prefix>bl:index:{<tag>}`` (score = expiry time) is written in the same EVAL as the
keys of its shard, so the next-to-expire keys are listed without SCAN by merging the shards' heads.

The same code runs on one server (plain, TLS, Sentinel, embedded) and on a Redis Cluster
(``RedisCluster``). On one server a revoke is one EVAL over every shard it touches (all or
nothing for the whole logout, as before). On a cluster an EVAL may only touch one slot: a revoke
is one EVAL per shard, so each session is still all or nothing, and a logout that one node could
not take raises ``RevocationIncomplete`` naming exactly what was written (never "revoked" for the
rest).
"""

from __future__ import annotations

import contextlib
import functools
import heapq
import itertools
import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from json.encoder import encode_basestring_ascii
from typing import TYPE_CHECKING, Any, TypeVar

import redis
import redis.sentinel
from redis.cluster import RedisCluster
from redis.crc import key_slot

from sessionmon.core.blacklist_keys import KeyLayout
from sessionmon.core.clock import SYSTEM_CLOCK, Clock
from sessionmon.core.cluster_pipeline import run_per_node
from sessionmon.core.errors import (
    RedisMayEvict,
    RedisUnavailable,
    RevocationIncomplete,
    RevocationNotDurable,
)
from sessionmon.core.redis_client import connect as connect  # re-exported: the one client

if TYPE_CHECKING:
    from sessionmon.core.redis_health import WriteGuard

T = TypeVar("T")
log = logging.getLogger(__name__)

# Called in this process with the keys of every revoke and unrevoke once the call is over,
# however it ended: a ``CachedRevocations`` forgets what it remembers of them, so a process sees
# its own revocations at once; other processes' (and a write Redis applied after our timeout)
# arrive as Redis's invalidation pushes.
_write_listeners: tuple[Callable[[Sequence[str]], None], ...] = ()
_listeners_lock = threading.Lock()


def add_write_listener(listener: Callable[[Sequence[str]], None]) -> None:
    """Call ``listener(keys)`` after every revoke and unrevoke made in this process."""
    global _write_listeners
    with _listeners_lock:
        _write_listeners = (*_write_listeners, listener)


def remove_write_listener(listener: Callable[[Sequence[str]], None]) -> None:
    global _write_listeners
    with _listeners_lock:
        _write_listeners = tuple(fn for fn in _write_listeners if fn != listener)


def _written(keys: Sequence[str]) -> None:
    """Tell every listener; one that fails is logged and never changes the revoke's outcome."""
    for listener in _write_listeners:
        try:
            listener(keys)
        except Exception:
            log.exception("a blacklist write listener failed")


KIND_ACCESS = "access"
KIND_REFRESH = "refresh"
KIND_SESSION = "session"


def _describe(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:200]


# The server's own words when a write is refused under noeviction and a full memory (also inside
# a pipeline's or a script's error text).
# An ACL refusal (NOPERM), also inside a pipeline's or a script's error text.
_ACL = re.compile(r"NOPERM|no permissions to|can't run this command or subcommand")
_OOM = re.compile(r"command not allowed when used memory > 'maxmemory'")
# redis-py's ClusterError once a command was redirected (MOVED, ASK, TRYAGAIN) too many times.
_REDIRECTED_TOO_OFTEN = "TTL exhausted"


# An OpenSSL reason inside redis-py's "Error 1 connecting to host:port. [SSL: ...] reason (...)"
_SSL_REASON = re.compile(r"\[SSL(?:: [A-Z0-9_]+)?\] (.+?)(?: \(_ssl\.c:\d+\)|'\)|\.?$)")
_WHERE = re.compile(r"(?:connecting to|reading from|writing to) (\S+?:\d+)")
_CLIENT_CERT = " (the server refused the client certificate: --redis-cert-file, --redis-key-file)"


def _tls_failure(text: str) -> str | None:
    """The reason of a failed TLS handshake in one line, with the setting to look at, or None."""
    first = text.splitlines()[0] if text else ""
    where = _WHERE.search(first)
    at = f"{where.group(1)}: " if where else ""
    if "EOF occurred in violation of protocol" in first:
        # TLS 1.3: the server hangs up after the handshake when it wanted a client certificate
        return (
            f"{at}the server closed the connection after the handshake (it refused or wanted a "
            f"client certificate: --redis-cert-file, --redis-key-file)"
        )
    match = _SSL_REASON.search(first)
    if match is None:
        return None
    reason = match.group(1).strip().rstrip(".")
    hint = ""
    if "unable to get local issuer" in reason or "self-signed" in reason or "self signed" in reason:
        hint = " (no CA of --redis-ca-file, or of the system when it is unset, signed it)"
    elif "mismatch" in reason:
        hint = " (the URL's host is not in the server's certificate)"
    elif "certificate required" in reason:
        hint = " (the server requires a client certificate: --redis-cert-file, --redis-key-file)"
    elif any(w in reason for w in ("unknown ca", "bad certificate")):
        hint = _CLIENT_CERT
    return f"{at}{reason}{hint}"


@contextlib.contextmanager
def redis_errors(what: str = "Redis") -> Iterator[None]:
    """Turn redis-py connection-level errors into ``RedisUnavailable``."""
    try:
        yield
    except redis.exceptions.BusyLoadingError as exc:
        raise RedisUnavailable(
            f"{what} is loading its data after a restart ({_describe(exc)})"
        ) from None
    except redis.sentinel.MasterNotFoundError as exc:  # its message names the sentinels
        raise RedisUnavailable(str(exc).splitlines()[0] if str(exc) else _describe(exc)) from None
    except redis.exceptions.ClusterDownError as exc:  # CLUSTERDOWN, MASTERDOWN
        raise RedisUnavailable(
            f"{what} Cluster is not in state ok ({_describe(exc)}): a master is down or "
            f"slots are not covered"
        ) from None
    except redis.exceptions.SlotNotCoveredError as exc:
        raise RedisUnavailable(f"{what} Cluster: {_describe(exc)}") from None
    except (redis.exceptions.TryAgainError, redis.exceptions.AskError) as exc:  # MOVED too
        raise RedisUnavailable(
            f"{what} Cluster is moving the slot ({_describe(exc)}): try again"
        ) from None
    except (redis.exceptions.RedisClusterException, redis.exceptions.ClusterError) as exc:
        if _REDIRECTED_TOO_OFTEN in str(exc):
            # redis-py followed MOVED / ASK / TRYAGAIN until its redirection budget ran out: a
            # slot on the move (TRYAGAIN from the importing node), not a cluster out of reach.
            raise RedisUnavailable(
                f"{what} Cluster is moving the slot (redirected by MOVED, ASK or TRYAGAIN until "
                f"the client gave up): try again"
            ) from None
        raise RedisUnavailable(f"{what} Cluster unreachable: {_describe(exc)}") from None
    except redis.exceptions.AuthenticationError as exc:
        raise RedisUnavailable(f"{what} refused the login: {_describe(exc)}") from None
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
        tls = _tls_failure(str(exc))
        if tls is not None:
            raise RedisUnavailable(f"{what} TLS handshake failed: {tls}") from None
        raise RedisUnavailable(f"{what} unreachable: {_describe(exc)}") from None
    except redis.exceptions.ResponseError as exc:
        msg = _describe(exc)
        if isinstance(exc, redis.exceptions.OutOfMemoryError) or _OOM.search(str(exc)):
            # noeviction and a full memory: the write was refused, nothing was written
            raise RedisUnavailable(
                f"{what} is out of memory: OOM command not allowed when used memory > "
                f"'maxmemory' (free memory, raise maxmemory, or wait for keys to expire)"
            ) from None
        if isinstance(exc, redis.exceptions.NoPermissionError) or _ACL.search(str(exc)):
            # ACL: a pipeline's error quotes the command (a script's text): keep the reason
            reason = str(exc).partition("caused error: ")[2] or str(exc)
            reason = reason.removeprefix("NOPERM ").partition(" script: ")[0]
            if "can't run this command" in reason:
                reason = "the revoke script may not run SET, ZADD, TTL or ZREMRANGEBYSCORE"
            reason = _describe(Exception(reason))
            raise RedisUnavailable(
                f"{what} refused the command: NOPERM {reason} (the ACL user needs the "
                f"permissions the README lists)"
            ) from None
        if msg.startswith(("NOAUTH", "WRONGPASS", "NOPERM", "LOADING", "MISCONF", "READONLY")):
            raise RedisUnavailable(f"{what} refused the command: {msg}") from None
        raise


@dataclass(frozen=True)
class RevokeRequest:
    """A token (``jti``) or a whole session (``jti`` None) to put on the blacklist until ``exp``."""

    kind: str
    sid: str
    exp: float
    jti: str | None = None
    sub: str | None = None
    email: str | None = None


@dataclass(frozen=True)
class BlacklistEntry:
    """A key on the blacklist with what it says and when it expires."""

    key: str
    kind: str
    sid: str | None
    sub: str | None
    email: str | None
    reason: str | None
    actor: str | None
    revoked_at: float | None
    exp: float | None
    expires_at: float
    ttl: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Blacklist:
    """Revocation keys in Redis, each with a TTL; a sharded expiry index for cheap listing.

    ``client`` is a ``redis.Redis`` (one server) or a ``redis.cluster.RedisCluster``.
    """

    def __init__(
        self,
        client: redis.Redis | RedisCluster,
        *,
        prefix: str = "sessionmon:",
        leeway: float = 10.0,
        clock: Clock = SYSTEM_CLOCK,
        guard: WriteGuard | None = None,
    ) -> None:
        self.client: Any = client
        self.cluster = isinstance(client, RedisCluster)
        # Checks the server (eviction policy) before writes and waits for replicas after them.
        self.guard = guard
        # Called when a command found Redis unavailable (the embedded server's reviver).
        self.on_unavailable: Callable[[], None] | None = None
        self.prefix = prefix
        self.leeway = float(leeway)
        self.clock = clock
        self.layout = KeyLayout(prefix)
        # The indexes listing merges: the shards, and on one server the old layout's index.
        self.index_keys: tuple[str, ...] = self.layout.index_keys + (
            () if self.cluster else (self.layout.legacy_index,)
        )
        self._key_prefix = self.layout.base

    # -- keys --------------------------------------------------------------------------------

    def token_key(self, sid: str, jti: str) -> str:
        return self.layout.token_key(sid, jti)

    def sid_key(self, sid: str) -> str:
        return self.layout.sid_key(sid)

    def key_for(self, req: RevokeRequest) -> str:
        return self.sid_key(req.sid) if req.jti is None else self.token_key(req.sid, req.jti)

    def check_keys(self, jti: str | None, sid: str | None) -> list[str]:
        """The keys whose existence means "revoked" for a token ``jti`` of session ``sid``: one
        slot (the session's tag); on one server also the old layout's keys.

        A token without a session id (none that sessionmon mints: the codec rejects them,
        ``missing claim sid``) is keyed under the empty session id's shard, by ``revoke`` (a
        ``RevokeRequest`` with ``sid=""``) and here alike, so it can still be revoked and checked.
        """
        keys = []
        if sid:
            keys.append(self.sid_key(sid))
        if jti:
            keys.append(self.token_key(sid or "", jti))
        if not self.cluster:
            if jti:
                keys.append(self.layout.legacy_token_key(jti))
            if sid:
                keys.append(self.layout.legacy_sid_key(sid))
        return keys

    def ttl_for(self, exp: float, now: float | None = None) -> int:
        """Seconds a key for a token expiring at ``exp`` must live: ceil(exp - now + leeway)."""
        now = self.clock.now() if now is None else now
        return math.ceil(exp - now + self.leeway)

    def _run(self, fn: Callable[[], T]) -> T:
        try:
            with redis_errors():
                return fn()
        except RedisMayEvict:
            raise
        except RedisUnavailable:
            if self.on_unavailable is not None:
                self.on_unavailable()
            raise

    def _pipeline(self) -> Any:
        """A non-transactional pipeline (on a cluster: split by node, one round trip each)."""
        return self.client.pipeline(transaction=False)

    # -- writes ------------------------------------------------------------------------------

    def revoke(
        self,
        requests: Sequence[RevokeRequest],
        *,
        reason: str | None = None,
        actor: str | None = None,
    ) -> dict[str, int]:
        """Blacklist tokens and sessions atomically per session; returns {key: TTL read back}.

        Tokens already expired beyond the leeway are skipped (they cannot be used anyway).
        Raises ``RedisUnavailable`` if Redis did not take them (``RedisMayEvict`` if the guard
        refused a server that may evict keys): then nothing was written. On a cluster, raises
        ``RevocationIncomplete`` when some shards were written and others not (``ttls`` says
        which keys are). Raises ``RevocationNotDurable`` when fewer replicas than the guard asks
        for acknowledged them.
        """
        now = self.clock.now()
        groups: dict[str, list[tuple[str, int, str]]] = {}
        # What every entry of this call shares, encoded once.
        tail = (
            f',"reason":{_json(reason)},"actor":{_json(actor)},"revoked_at":{_json(round(now, 3))}'
        )
        for req in requests:
            ttl = self.ttl_for(req.exp, now)
            if ttl <= 0:
                continue
            value = (
                f'{{"kind":{_json(req.kind)},"sid":{_json(req.sid)},"sub":{_json(req.sub)},'
                f'"email":{_json(req.email)}{tail},"exp":{_json(req.exp)}}}'
            )
            index = self.layout.index_for_sid(req.sid)
            groups.setdefault(index, []).append((self.key_for(req), ttl, value))
        if not groups:
            return {}
        guard = self.guard
        wait = guard.wait_replicas if guard is not None else 0
        try:
            if not self.cluster:
                # One server: one EVAL over every shard, all or nothing for the whole revoke.
                planned = [(index, *item) for index, items in groups.items() for item in items]
                return self._guarded(lambda: self._write_one_server(planned, now, wait))
            return self._write_cluster(groups, now, wait)
        finally:
            if _write_listeners:
                _written([key for items in groups.values() for key, _, _ in items])

    def _guarded(self, write: Callable[[], T]) -> T:
        """``write`` through the guard (``RedisMayEvict`` on a server that may evict keys)."""
        guard = self.guard
        return self._run(write if guard is None else lambda: guard.write(write))

    def _write_one_server(
        self, planned: list[tuple[str, str, int, str]], now: float, wait: int
    ) -> dict[str, int]:
        keys: list[str] = []
        args: list[Any] = [repr(now)]
        for index, key, ttl, value in planned:
            keys += [index, key]
            args += [ttl, value]
        # One EVAL (atomic): every key with its TTL, its index entry, the pruning of expired
        # index members, and the TTLs read back; one command on the wire however many keys
        # (redis-py spends ~30 us per command). WAIT, when asked, follows on the same
        # connection (it waits for this connection's writes).
        pipe = self.client.pipeline(transaction=False)
        pipe.eval(_REVOKE_SCRIPT, len(keys), *keys, *args)
        if wait and self.guard is not None:
            pipe.execute_command("WAIT", wait, self.guard.wait_timeout_ms)
        replies = pipe.execute()
        ttls = {key: int(t) for (_, key, _, _), t in zip(planned, replies[0], strict=True)}
        if wait and int(replies[1]) < wait:
            raise RevocationNotDurable(ttls, int(replies[1]), wait)
        return ttls

    def _write_cluster(
        self, groups: dict[str, list[tuple[str, int, str]]], now: float, wait: int
    ) -> dict[str, int]:
        """A revoke on a cluster: one EVAL per shard (each session all or nothing), the shards
        grouped by master, each master's EVALs (and WAIT) in one pipeline, all masters at once.

        A shard answered ``MOVED`` / ``ASK`` / ``TRYAGAIN`` (its slot moved or is moving: the
        script did not run) is tried once more by RedisCluster's own routing after the layout
        is read again. A master that could not be reached or stopped answering: none of its
        shards is reported written (raises ``RevocationIncomplete`` naming what was)."""
        written: dict[str, int] = {}
        acked: list[int] = []
        failures: list[RedisUnavailable] = []
        first = self._guarded(lambda: self._write_nodes(groups, now, wait))
        written.update(first.ttls)
        acked += first.acked
        failures += first.failures
        if first.refresh:
            # Read the layout again for what follows (a failover, a moved slot).
            with contextlib.suppress(Exception):
                self.client.nodes_manager.initialize()
        for index, items in first.redirected.items():
            try:
                ttls, replicas = self._guarded(
                    functools.partial(self._write_shard, index, items, now, wait)
                )
            except RedisMayEvict:
                if written:
                    raise RevocationIncomplete(written, "Redis may evict keys") from None
                raise
            except RedisUnavailable as exc:
                failures.append(exc)
                continue
            written.update(ttls)
            if replicas is not None:
                acked.append(replicas)
        if failures:
            if not written:
                raise failures[0]
            causes = list(dict.fromkeys(str(f) for f in failures))
            raise RevocationIncomplete(written, "; ".join(causes))
        if wait and acked and min(acked) < wait:
            raise RevocationNotDurable(written, min(acked), wait)
        return written

    def _write_nodes(
        self, groups: dict[str, list[tuple[str, int, str]]], now: float, wait: int
    ) -> _ClusterRound:
        """Every shard's EVAL, grouped by the master of its slot, one pipeline per master (WAIT
        last on the same connection when asked), all masters at once."""
        out = _ClusterRound()
        by_node: dict[str, tuple[Any, list[str]]] = {}
        for index in groups:
            try:
                with redis_errors():
                    node = self.client.get_node_from_key(index)
            except RedisUnavailable as exc:  # the slot is not covered
                out.failures.append(exc)
                continue
            by_node.setdefault(node.name, (node, []))[1].append(index)
        batches: dict[str, tuple[Any, list[tuple[Any, ...]]]] = {}
        for name, (node, indexes) in by_node.items():
            commands = [_eval_command(index, groups[index], now) for index in indexes]
            if wait and self.guard is not None:
                commands.append(("WAIT", wait, self.guard.wait_timeout_ms))
            batches[name] = (node, commands)
        for name, replies in run_per_node(self.client, batches).items():
            indexes = by_node[name][1]
            if replies.error is not None:
                # Gone mid-way: whatever it ran is not reported written (never "revoked" for
                # what may not be), and the layout is read again (a replica may take over).
                out.refresh = True
                out.failures.append(
                    RedisUnavailable(
                        f"Redis Cluster master {name} did not take the revoke "
                        f"({_describe(replies.error)}): run it again"
                    )
                )
                continue
            node_ttls: dict[str, int] = {}
            for index, reply in zip(indexes, replies.replies, strict=False):
                items = groups[index]
                if isinstance(reply, (redis.exceptions.AskError, redis.exceptions.TryAgainError)):
                    out.redirected[index] = items  # MOVED too: the script did not run
                    out.refresh = out.refresh or isinstance(reply, redis.exceptions.MovedError)
                elif isinstance(reply, Exception):
                    out.failures.append(_unavailable(reply))
                else:
                    node_ttls.update(
                        {key: int(t) for (key, _, _), t in zip(items, reply, strict=True)}
                    )
            out.ttls.update(node_ttls)
            if wait and self.guard is not None and node_ttls:
                replicas = replies.replies[len(indexes)]
                out.acked.append(0 if isinstance(replicas, Exception) else int(replicas))
        return out

    def _write_shard(
        self, index: str, items: list[tuple[str, int, str]], now: float, wait: int
    ) -> tuple[dict[str, int], int | None]:
        """One shard's keys on a cluster (the retry of a redirected shard): one EVAL in one
        slot (redis-py follows MOVED / ASK). With ``wait``, the EVAL and WAIT go on one
        connection of the slot's master."""
        _, _, keys, args = _eval_parts(index, items, now)
        if not wait or self.guard is None:
            reply = self.client.eval(_REVOKE_SCRIPT, len(keys), *keys, *args)
            return {key: int(t) for (key, _, _), t in zip(items, reply, strict=True)}, None
        node = self.client.get_node_from_key(index)
        pipe = self.client.get_redis_connection(node).pipeline(transaction=False)
        pipe.eval(_REVOKE_SCRIPT, len(keys), *keys, *args)
        pipe.execute_command("WAIT", wait, self.guard.wait_timeout_ms)
        try:
            replies = pipe.execute()
        except (
            redis.exceptions.AskError,  # MOVED too: the slot changed hands
            redis.exceptions.ConnectionError,  # the master died: a replica may take over
            redis.exceptions.TimeoutError,
            redis.exceptions.ReadOnlyError,  # a demoted master
            redis.exceptions.ClusterDownError,
        ) as exc:
            # This connection is the node's own, outside RedisCluster's redirections: read the
            # layout again for the next revoke, and report this one as not done.
            with contextlib.suppress(Exception):
                self.client.nodes_manager.initialize()
            raise RedisUnavailable(
                f"Redis Cluster master {node.name} did not take the revoke "
                f"({_describe(exc)}): run it again"
            ) from None
        ttls = {key: int(t) for (key, _, _), t in zip(items, replies[0], strict=True)}
        return ttls, int(replies[1])

    def unrevoke(self, keys: Sequence[str]) -> int:
        """Remove keys (and their index entries); for tests and operator corrections."""
        if not keys:
            return 0

        def delete() -> int:
            pipe = self._pipeline()
            for key in keys:
                pipe.delete(key)
                pipe.zrem(self.layout.index_of(_text(key)), key)
            replies = pipe.execute()
            return sum(int(n) for n in replies[0::2])

        try:
            return self._run(delete)
        finally:
            if _write_listeners:
                _written([_text(key) for key in keys])

    # -- reads --------------------------------------------------------------------------------

    def is_revoked(self, jti: str | None, sid: str | None) -> bool:
        """True if the token or its session is on the blacklist: one round trip to one node
        (``EXISTS`` of ``check_keys``)."""
        keys = self.check_keys(jti, sid)
        if not keys:
            return False
        if self.cluster:
            return bool(self._run(lambda: self._exists_on_master(keys)))
        return bool(self._run(lambda: self.client.exists(*keys)))

    def _exists_on_master(self, keys: list[str]) -> int:
        """``EXISTS`` of one session's keys (one hash tag, one slot) straight on the connection
        of the slot's master: RedisCluster's own path costs ~40 us more per call, half of a
        check. A redirection, a dropped connection or an unknown slot goes RedisCluster's way
        (it follows the redirection and reads the layout again); a timeout does not (a hung
        master costs one timeout, not two)."""
        try:
            node = self.client.nodes_manager.get_node_from_slot(key_slot(keys[0].encode()))
            return int(self.client.get_redis_connection(node).exists(*keys))
        except (
            redis.exceptions.AskError,  # MOVED too
            redis.exceptions.TryAgainError,
            redis.exceptions.ClusterDownError,
            redis.exceptions.ConnectionError,
            redis.exceptions.SlotNotCoveredError,
        ):
            return int(self.client.exists(*keys))

    def ping(self) -> float:
        """Round-trip time in seconds (every master of a cluster); raises ``RedisUnavailable``."""
        start = time.perf_counter()
        if self.cluster:
            self._run(lambda: self.client.ping(target_nodes=RedisCluster.PRIMARIES))
        else:
            self._run(self.client.ping)
        return time.perf_counter() - start

    def count(self) -> int:
        """Number of live keys in the expiry indexes (expired members pruned first)."""
        now = self.clock.now()

        def run() -> list[Any]:
            pipe = self._pipeline()
            for index in self.index_keys:
                pipe.zremrangebyscore(index, "-inf", now)
                pipe.zcard(index)
            return list(pipe.execute())

        return sum(int(n) for n in self._run(run)[1::2])

    def heads(self, n: int, now: float, *, descending: bool = False) -> list[tuple[bytes, float]]:
        """The first ``n`` (member, score) of the merged indexes in expiry order (ties by key),
        expired members pruned first.

        Each shard is asked for a share (twice ``n / shards``) first; a shard whose share may
        hide members that belong in the first ``n`` (its last one comes before the merged
        ``n``-th) is asked again for twice as many, until the merge is exact: one round trip per
        node in the common case, not ``shards * n`` members."""
        if n <= 0:
            return []

        def order(m: tuple[bytes, float]) -> tuple[float, bytes]:
            return float(m[1]), bytes(m[0])

        share = min(n, max(8, 2 * -(-n // len(self.index_keys))))
        want = dict.fromkeys(self.index_keys, share)
        fetched: dict[str, list[tuple[bytes, float]]] = {i: [] for i in self.index_keys}

        def fetch(pending: list[str], prune: bool) -> None:
            pipe = self._pipeline()
            for index in pending:
                if prune:
                    pipe.zremrangebyscore(index, "-inf", now)
                start, stop = len(fetched[index]), want[index] - 1
                if descending:
                    pipe.zrevrange(index, start, stop, withscores=True)
                else:
                    pipe.zrange(index, start, stop, withscores=True)
            replies = pipe.execute()
            for index, members in zip(pending, replies[1::2] if prune else replies, strict=True):
                fetched[index] += members

        pending = list(self.index_keys)
        fetch(pending, prune=True)
        while True:
            merged = list(
                itertools.islice(heapq.merge(*fetched.values(), key=order, reverse=descending), n)
            )
            pending = []
            for index, items in fetched.items():
                if len(items) < want[index] or want[index] >= n:
                    continue  # the shard is exhausted, or gave n members already
                if len(merged) == n:
                    nth, last = order(merged[-1]), order(items[-1])
                    if (last >= nth) if not descending else (last <= nth):
                        continue  # everything it holds beyond comes after the n-th
                want[index] = min(n, 2 * want[index])
                pending.append(index)
            if not pending:
                return merged
            fetch(pending, prune=False)

    def get_values(self, members: Sequence[Any]) -> list[Any]:
        """GET of each key (MGET on one server; per node on a cluster)."""
        if not members:
            return []
        if self.cluster:
            return list(self.client.mget_nonatomic(list(members)))
        return list(self.client.mget(list(members)))

    def page(
        self, offset: int = 0, limit: int = 200, *, descending: bool = False
    ) -> list[BlacklistEntry]:
        """Keys ordered by expiry (soonest first) from the indexes, with their values."""
        now = self.clock.now()

        def run() -> tuple[list[tuple[bytes, float]], list[Any]]:
            members = self.heads(offset + limit, now, descending=descending)[offset:]
            return members, self.get_values([m for m, _ in members])

        members, values = self._run(run)
        entries: list[BlacklistEntry] = []
        stale: list[bytes] = []
        for (member, score), raw in zip(members, values, strict=True):
            if raw is None:
                stale.append(member)
                continue
            entries.append(self.entry(_text(member), raw, float(score), now))
        if stale:
            with contextlib.suppress(RedisUnavailable):
                self._run(lambda: self._forget(stale))
        return entries

    def _forget(self, members: Sequence[Any]) -> None:
        """Remove index members whose key is gone."""
        pipe = self._pipeline()
        for member in members:
            pipe.zrem(self.layout.index_of(_text(member)), member)
        pipe.execute()

    def entries_for_session(self, sid: str, jtis: Sequence[str] = ()) -> list[BlacklistEntry]:
        """The blacklist keys of one session (the sid key and any of ``jtis``), in either
        layout."""
        keys = [self.sid_key(sid)] + [self.token_key(sid, j) for j in jtis if j]
        if not self.cluster:
            keys += [self.layout.legacy_sid_key(sid)]
            keys += [self.layout.legacy_token_key(j) for j in jtis if j]
        now = self.clock.now()
        return [e for e in self.read_entries(keys, now) if math.isfinite(e.expires_at)]

    def scan(self, cursor: int = 0, count: int = 1000) -> tuple[int, list[BlacklistEntry]]:
        """One SCAN step over ``<prefix>bl:*``: finds keys written without the index.

        On a cluster the cursor walks the masters one after the other (sorted by name): its low
        48 bits are the node's SCAN cursor, the rest the master's position."""
        now = self.clock.now()
        # The prefix is literal text: escape the glob characters SCAN MATCH would interpret.
        pattern = re.sub(r"([*?\[\]\\])", r"\\\1", self._key_prefix) + "*"

        def run() -> tuple[int, list[BlacklistEntry]]:
            if self.cluster:
                next_cursor, keys = self._cluster_scan(cursor, pattern, count)
            else:
                next_cursor, keys = self.client.scan(cursor, match=pattern, count=count)
            keys = [k for k in keys if not self.layout.is_index(_text(k))]
            return int(next_cursor), self.read_entries(keys, now) if keys else []

        return self._run(run)

    def _cluster_scan(self, cursor: int, pattern: str, count: int) -> tuple[int, list[Any]]:
        masters = sorted(self.client.get_primaries(), key=lambda n: n.name)
        position, node_cursor = cursor >> _CURSOR_BITS, cursor & ((1 << _CURSOR_BITS) - 1)
        if position >= len(masters):
            return 0, []
        node = masters[position]
        reply = self.client.scan(node_cursor, match=pattern, count=count, target_nodes=node)
        cursors, keys = reply
        node_next = int(cursors[node.name]) if isinstance(cursors, dict) else int(cursors)
        if node_next == 0:
            position += 1
            if position >= len(masters):
                return 0, list(keys)
        return (position << _CURSOR_BITS) | node_next, list(keys)

    def read_entries(self, keys: Sequence[Any], now: float) -> list[BlacklistEntry]:
        """The entries of ``keys`` that exist (GET and PTTL in one pipeline); a key without a
        TTL expires at ``inf``."""

        def run() -> list[Any]:
            pipe = self._pipeline()
            for k in keys:
                pipe.get(k)
                pipe.pttl(k)
            return list(pipe.execute())

        res = self._run(run)
        out = []
        for i, k in enumerate(keys):
            raw, pttl = res[2 * i], res[2 * i + 1]
            if raw is None:
                continue
            expires = now + pttl / 1000 if pttl and pttl > 0 else math.inf
            out.append(self.entry(_text(k), raw, expires, now))
        return out

    def entry(self, key: str, raw: Any, expires_at: float, now: float) -> BlacklistEntry:
        """Parse one key's stored value (tolerant of values written by others)."""
        try:
            doc = json.loads(raw)
            if not isinstance(doc, dict):
                doc = {}
        except (ValueError, TypeError):
            doc = {}
        kind = doc.get("kind")
        if kind is None:
            kind = KIND_SESSION if self.layout.is_session_key(key) else "token"
        return BlacklistEntry(
            key=key,
            kind=str(kind),
            sid=doc.get("sid"),
            sub=doc.get("sub"),
            email=doc.get("email"),
            reason=doc.get("reason"),
            actor=doc.get("actor"),
            revoked_at=doc.get("revoked_at"),
            exp=doc.get("exp"),
            expires_at=expires_at,
            ttl=max(0.0, expires_at - now),
        )


_CURSOR_BITS = 48


@dataclass
class _ClusterRound:
    """What one pipelined round over a cluster's masters did: the keys written (key -> TTL),
    each master's WAIT count, the shards to try again (redirected), the failures, and whether
    the layout should be read again."""

    ttls: dict[str, int] = field(default_factory=dict)
    acked: list[int] = field(default_factory=list)
    redirected: dict[str, list[tuple[str, int, str]]] = field(default_factory=dict)
    failures: list[RedisUnavailable] = field(default_factory=list)
    refresh: bool = False


def _eval_parts(
    index: str, items: list[tuple[str, int, str]], now: float
) -> tuple[str, int, list[str], list[Any]]:
    """The revoke script's EVAL for one shard: (script, numkeys, keys, args)."""
    keys: list[str] = []
    args: list[Any] = [repr(now)]
    for key, ttl, value in items:
        keys += [index, key]
        args += [ttl, value]
    return _REVOKE_SCRIPT, len(keys), keys, args


def _eval_command(index: str, items: list[tuple[str, int, str]], now: float) -> tuple[Any, ...]:
    script, numkeys, keys, args = _eval_parts(index, items, now)
    return ("EVAL", script, numkeys, *keys, *args)


def _unavailable(exc: Exception) -> RedisUnavailable:
    """A node's error reply in one line, as ``redis_errors`` words it (OOM, NOPERM, READONLY,
    CLUSTERDOWN...); an error it does not know is raised (a bug, not an outage)."""
    try:
        with redis_errors():
            raise exc
    except RedisUnavailable as out:
        return out
    raise AssertionError("unreachable")  # pragma: no cover


# KEYS come in pairs: (index, key) for each key; ARGV[1] is now, then a (ttl, value) pair per key.
# On a cluster every key of one call is in one slot (one shard's tag).
_REVOKE_SCRIPT = """
local now = tonumber(ARGV[1])
local out = {}
local indexes = {}
for i = 1, #KEYS / 2 do
  local index, key = KEYS[2 * i - 1], KEYS[2 * i]
  local ttl = tonumber(ARGV[2 * i])
  redis.call('SET', key, ARGV[2 * i + 1], 'EX', ttl)
  redis.call('ZADD', index, now + ttl, key)
  indexes[index] = true
  out[i] = redis.call('TTL', key)
end
for index in pairs(indexes) do
  redis.call('ZREMRANGEBYSCORE', index, '-inf', now)
end
return out
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _json(value: object) -> str:
    """``json.dumps(value)`` of one entry field, fast for what entries hold (text, None, a
    finite number): a revocation of a million sessions writes a few million entries."""
    if isinstance(value, str):
        return encode_basestring_ascii(value)
    if value is None:
        return "null"
    if type(value) is float and math.isfinite(value):
        return float.__repr__(value)
    if type(value) is int:
        return int.__repr__(value)
    return json.dumps(value)
