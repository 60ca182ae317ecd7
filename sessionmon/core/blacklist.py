"""The Redis blacklist: one key per revoked token or session, each with a TTL, plus an expiry index.

Keys: ``<prefix>bl:<jti>`` for a token, ``<prefix>bl:sid:<sid>`` for a whole session. Values are
small JSON documents. ``<prefix>bl:index`` is a sorted set (score = expiry time) written in the same
EVAL as the keys, so the next-to-expire keys can be listed without SCAN.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import redis
import redis.sentinel

from sessionmon.core.clock import SYSTEM_CLOCK, Clock
from sessionmon.core.errors import RedisMayEvict, RedisUnavailable, RevocationNotDurable
from sessionmon.core.redis_client import connect as connect  # re-exported: the one client

if TYPE_CHECKING:
    from sessionmon.core.redis_health import WriteGuard

T = TypeVar("T")

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
        raise RedisUnavailable(_describe(exc)) from None
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
    """Revocation keys in Redis, each with a TTL; an expiry index for cheap listing."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = "sessionmon:",
        leeway: float = 10.0,
        clock: Clock = SYSTEM_CLOCK,
        guard: WriteGuard | None = None,
    ) -> None:
        self.client = client
        # Checks the server (eviction policy) before writes and waits for replicas after them.
        self.guard = guard
        # Called when a command found Redis unavailable (the embedded server's reviver).
        self.on_unavailable: Callable[[], None] | None = None
        self.prefix = prefix
        self.leeway = float(leeway)
        self.clock = clock
        self.index_key = f"{prefix}bl:index"
        self._key_prefix = f"{prefix}bl:"

    # -- keys --------------------------------------------------------------------------------

    def token_key(self, jti: str) -> str:
        return f"{self._key_prefix}{jti}"

    def sid_key(self, sid: str) -> str:
        return f"{self._key_prefix}sid:{sid}"

    def key_for(self, req: RevokeRequest) -> str:
        return self.sid_key(req.sid) if req.jti is None else self.token_key(req.jti)

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

    # -- writes ------------------------------------------------------------------------------

    def revoke(
        self,
        requests: Sequence[RevokeRequest],
        *,
        reason: str | None = None,
        actor: str | None = None,
    ) -> dict[str, int]:
        """Blacklist tokens and sessions in one EVAL; returns {key: TTL read back}.

        Tokens already expired beyond the leeway are skipped (they cannot be used anyway).
        Raises ``RedisUnavailable`` if Redis did not take them (``RedisMayEvict`` if the guard
        refused a server that may evict keys): then nothing was written. Raises
        ``RevocationNotDurable`` when fewer replicas than the guard asks for acknowledged them.
        """
        now = self.clock.now()
        planned: list[tuple[str, int, str]] = []
        for req in requests:
            ttl = self.ttl_for(req.exp, now)
            if ttl <= 0:
                continue
            value = json.dumps(
                {
                    "kind": req.kind,
                    "sid": req.sid,
                    "sub": req.sub,
                    "email": req.email,
                    "reason": reason,
                    "actor": actor,
                    "revoked_at": round(now, 3),
                    "exp": req.exp,
                },
                separators=(",", ":"),
            )
            planned.append((self.key_for(req), ttl, value))
        if not planned:
            return {}

        keys = [key for key, _, _ in planned]
        args: list[Any] = [repr(now)]
        for _, ttl, value in planned:
            args += [ttl, value]
        guard = self.guard
        wait = guard.wait_replicas if guard is not None else 0

        def write() -> list[Any]:
            # One EVAL (atomic): every key with its TTL, its index entry, the pruning of expired
            # index members, and the TTLs read back; one command on the wire however many keys
            # (redis-py spends ~30 us per command). WAIT, when asked, follows on the same
            # connection (it waits for this connection's writes).
            pipe = self.client.pipeline(transaction=False)
            pipe.eval(_REVOKE_SCRIPT, len(keys) + 1, self.index_key, *keys, *args)
            if wait and guard is not None:
                pipe.execute_command("WAIT", wait, guard.wait_timeout_ms)
            return pipe.execute()

        # The guard refuses (RedisMayEvict) a server that may evict the keys.
        replies = self._run(write if guard is None else lambda: guard.write(write))
        ttls = {key: int(t) for key, t in zip(keys, replies[0], strict=True)}
        if wait and int(replies[1]) < wait:
            raise RevocationNotDurable(ttls, int(replies[1]), wait)
        return ttls

    def unrevoke(self, keys: Sequence[str]) -> int:
        """Remove keys (and their index entries); for tests and operator corrections."""
        if not keys:
            return 0

        def delete() -> list[Any]:
            pipe = self.client.pipeline(transaction=True)
            pipe.delete(*keys)
            pipe.zrem(self.index_key, *keys)
            return pipe.execute()

        return int(self._run(delete)[0])

    # -- reads --------------------------------------------------------------------------------

    def is_revoked(self, jti: str | None, sid: str | None) -> bool:
        """True if the token or its session is on the blacklist: one round trip (EXISTS a b)."""
        keys = []
        if jti:
            keys.append(self.token_key(jti))
        if sid:
            keys.append(self.sid_key(sid))
        if not keys:
            return False
        return bool(self._run(lambda: self.client.exists(*keys)))

    def ping(self) -> float:
        """Round-trip time in seconds; raises ``RedisUnavailable``."""
        start = time.perf_counter()
        self._run(self.client.ping)
        return time.perf_counter() - start

    def count(self) -> int:
        """Number of live keys in the expiry index (expired members pruned first)."""
        now = self.clock.now()

        def run() -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            pipe.zremrangebyscore(self.index_key, "-inf", now)
            pipe.zcard(self.index_key)
            return pipe.execute()

        return int(self._run(run)[1])

    def page(
        self, offset: int = 0, limit: int = 200, *, descending: bool = False
    ) -> list[BlacklistEntry]:
        """Keys ordered by expiry (soonest first) from the index, with their values."""
        now = self.clock.now()

        def run() -> tuple[list[tuple[bytes, float]], list[Any]]:
            pipe = self.client.pipeline(transaction=False)
            pipe.zremrangebyscore(self.index_key, "-inf", now)
            if descending:
                pipe.zrevrange(self.index_key, offset, offset + limit - 1, withscores=True)
            else:
                pipe.zrange(self.index_key, offset, offset + limit - 1, withscores=True)
            members = pipe.execute()[1]
            if not members:
                return [], []
            values = self.client.mget([m for m, _ in members])
            return members, values

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
                self._run(lambda: self.client.zrem(self.index_key, *stale))
        return entries

    def entries_for_session(self, sid: str, jtis: Sequence[str] = ()) -> list[BlacklistEntry]:
        """The blacklist keys of one session (the sid key and any of ``jtis``)."""
        keys = [self.sid_key(sid)] + [self.token_key(j) for j in jtis if j]
        now = self.clock.now()

        def run() -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            for k in keys:
                pipe.get(k)
                pipe.pttl(k)
            return pipe.execute()

        res = self._run(run)
        out = []
        for i, key in enumerate(keys):
            raw, pttl = res[2 * i], res[2 * i + 1]
            if raw is None or pttl is None or pttl < 0:
                continue
            out.append(self.entry(key, raw, now + pttl / 1000, now))
        return out

    def scan(self, cursor: int = 0, count: int = 1000) -> tuple[int, list[BlacklistEntry]]:
        """One SCAN step over ``<prefix>bl:*``: finds keys written without the index."""
        now = self.clock.now()

        def run() -> tuple[int, list[BlacklistEntry]]:
            # The prefix is literal text: escape the glob characters SCAN MATCH would interpret.
            pattern = re.sub(r"([*?\[\]\\])", r"\\\1", self._key_prefix) + "*"
            next_cursor, keys = self.client.scan(cursor, match=pattern, count=count)
            keys = [k for k in keys if _text(k) != self.index_key]
            return int(next_cursor), self.read_entries(keys, now) if keys else []

        return self._run(run)

    def read_entries(self, keys: Sequence[Any], now: float) -> list[BlacklistEntry]:
        """The entries of ``keys`` that exist (GET and PTTL in one pipeline); a key without a
        TTL expires at ``inf``."""

        def run() -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            for k in keys:
                pipe.get(k)
                pipe.pttl(k)
            return pipe.execute()

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
            kind = KIND_SESSION if key.startswith(self._key_prefix + "sid:") else "token"
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


# KEYS[1] is the index, KEYS[2..] the keys; ARGV[1] is now, then a (ttl, value) pair per key.
_REVOKE_SCRIPT = """
local now = tonumber(ARGV[1])
local out = {}
for i = 2, #KEYS do
  local ttl = tonumber(ARGV[2 * i - 2])
  redis.call('SET', KEYS[i], ARGV[2 * i - 1], 'EX', ttl)
  redis.call('ZADD', KEYS[1], now + ttl, KEYS[i])
  out[i - 1] = redis.call('TTL', KEYS[i])
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return out
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
