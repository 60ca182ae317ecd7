"""``sessionmon doctor``: can what the monitor shows be trusted? Checks of the live system.

Each check is a small function of a ``Probe`` (the store, the blacklist, the clock, the leeway)
that returns one ``CheckResult``: ok / warning / problem, the figure behind it, the fix, and up
to ``limit`` named items (session ids, keys) with their total count. A check that cannot reach
Redis or the database says so as a problem of its own; it never stops the other checks.
``repair`` rebuilds what can be rebuilt (the blacklist's index, missing or short TTLs, the
revocations of sessions deleted but still usable), audited as one row.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any

from sessionmon.core.blacklist import (
    KIND_SESSION,
    Blacklist,
    BlacklistEntry,
    RevokeRequest,
    redis_errors,
)
from sessionmon.core.bulk_logout import unfinished_jobs
from sessionmon.core.clock import SYSTEM_CLOCK, Clock
from sessionmon.core.durations import format_duration
from sessionmon.core.errors import RedisUnavailable, SessionmonError
from sessionmon.core.events import Event, EventKind, EventSink
from sessionmon.core.redis_health import (
    ALLOW_FLAG,
    SAFE_POLICY,
    read_server_settings,
)
from sessionmon.core.store import AuditRow, SessionStore
from sessionmon.core.store.history import EndedSession

DEFAULT_LIMIT = 10
MEMORY_WARNING = 0.80  # of maxmemory
MEMORY_PROBLEM = 0.95
STALE_EXPIRED = 86400.0  # expired sessions older than this: purge is not running
REPAIR_ACTION = "doctor_repair"
REVOKE_REASON = "doctor repair: deleted but still usable"
_BATCH = 1000


class Status(IntEnum):
    """How a check came out; the worst one is ``doctor``'s exit code."""

    OK = 0
    WARNING = 1
    PROBLEM = 2

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class CheckResult:
    """One check: its status, the figure behind it, the fix, and what it found."""

    name: str  # a stable code, e.g. "redis_eviction"
    title: str
    status: Status
    figure: str
    fix: str | None = None
    items: tuple[str, ...] = ()  # up to the limit
    total: int = 0  # how many were found (items may name fewer)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "status": self.status.label,
            "figure": self.figure,
            "fix": self.fix,
            "items": list(self.items),
            "total": self.total,
        }


@dataclass(frozen=True)
class Report:
    """Every check, at one moment."""

    checks: tuple[CheckResult, ...]
    at: float

    @property
    def status(self) -> Status:
        return max((c.status for c in self.checks), default=Status.OK)

    @property
    def exit_code(self) -> int:
        """0 all ok, 1 warnings, 2 problems."""
        return int(self.status)

    def counts(self) -> dict[str, int]:
        return {s.label: sum(c.status is s for c in self.checks) for s in Status}

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "status": self.status.label,
            "counts": self.counts(),
            "checks": [c.to_dict() for c in self.checks],
        }


@dataclass(frozen=True)
class Repair:
    """What ``repair`` changed."""

    index_added: int = 0
    index_removed: int = 0
    ttl_set: int = 0
    revoked_again: int = 0

    @property
    def changed(self) -> int:
        return self.index_added + self.index_removed + self.ttl_set + self.revoked_again

    def text(self) -> str:
        return (
            f"index: {self.index_added} added, {self.index_removed} removed; "
            f"TTLs set: {self.ttl_set}; sessions revoked again: {self.revoked_again}"
        )

    def to_dict(self) -> dict[str, int]:
        return {
            "index_added": self.index_added,
            "index_removed": self.index_removed,
            "ttl_set": self.ttl_set,
            "revoked_again": self.revoked_again,
        }


@dataclass
class KeySnapshot:
    """The blacklist as SCAN and the expiry index see it, read once per run."""

    keys: dict[str, BlacklistEntry] = field(default_factory=dict)  # every key under the prefix
    indexed: dict[str, float] = field(default_factory=dict)  # live index members -> score

    def without_ttl(self) -> list[BlacklistEntry]:
        return [e for e in self.keys.values() if math.isinf(e.expires_at)]

    def short_ttl(self, now: float, leeway: float) -> list[BlacklistEntry]:
        """Keys that expire before their token does (less the leeway)."""
        return [
            e
            for e in self.keys.values()
            if not math.isinf(e.expires_at)
            and isinstance(e.exp, int | float)
            and e.ttl < (e.exp - now) - leeway
        ]

    def unindexed(self) -> list[str]:
        return sorted(k for k, e in self.keys.items() if k not in self.indexed)

    def dangling(self) -> list[str]:
        return sorted(k for k in self.indexed if k not in self.keys)


class Probe:
    """What the checks look at; reads shared by several checks are made once."""

    def __init__(
        self,
        store: SessionStore,
        blacklist: Blacklist,
        *,
        leeway: float | None = None,
        clock: Clock = SYSTEM_CLOCK,
        allow_evicting: bool = False,
        limit: int = DEFAULT_LIMIT,
        jobs: Path | None = None,
    ) -> None:
        self.store = store
        self.jobs = jobs  # the revoke-by-query jobs' directory (None: not checked)
        self.blacklist = blacklist
        self.leeway = blacklist.leeway if leeway is None else leeway
        self.clock = clock
        self.allow_evicting = allow_evicting
        self.limit = limit
        self._snapshot: KeySnapshot | None = None
        self._info: dict[str, str] | None = None

    @property
    def client(self) -> Any:
        return self.blacklist.client

    def info(self) -> dict[str, str]:
        """INFO memory and replication, as fields."""
        if self._info is None:
            if self.blacklist.cluster:
                self._info = self._cluster_info()
            else:
                with redis_errors():
                    memory = self.client.info("memory")
                    replication = self.client.info("replication")
                self._info = {str(k): str(v) for k, v in {**memory, **replication}.items()}
        return self._info

    def _cluster_info(self) -> dict[str, str]:
        """INFO of a cluster: the fullest master's memory, the fewest replicas of any master."""
        each = []
        with redis_errors():
            for node in self.client.get_primaries():
                node_client = self.client.get_redis_connection(node)
                fields = {**node_client.info("memory"), **node_client.info("replication")}
                each.append({str(k): str(v) for k, v in fields.items()})
        if not each:
            return {}

        def share(info: dict[str, str]) -> float:
            limit = int(info.get("maxmemory", 0) or 0)
            return int(info.get("used_memory", 0) or 0) / limit if limit > 0 else 0.0

        out = dict(sorted(each, key=share)[-1])
        out["connected_slaves"] = str(min(int(i.get("connected_slaves", 0) or 0) for i in each))
        return out

    def snapshot(self) -> KeySnapshot:
        if self._snapshot is None:
            self._snapshot = read_snapshot(self.blacklist, self.clock.now())
        return self._snapshot

    def usable_after_ending(self) -> tuple[list[EndedSession], int]:
        """Sessions whose ending revoked them, with a token still accepted (before its expiry
        plus the leeway) that no blacklist key covers: up to ``limit`` and the total."""
        return usable_after_ending(self.store, self.blacklist, self.clock.now(), self.limit)


def read_snapshot(blacklist: Blacklist, now: float) -> KeySnapshot:
    """SCAN every key under the prefix, and read the index (members not yet expired)."""
    snap = KeySnapshot()
    cursor = 0
    while True:
        cursor, found = blacklist.scan(cursor)
        snap.keys.update((e.key, e) for e in found)
        if cursor == 0:
            break
    with redis_errors():
        pipe = blacklist.client.pipeline(transaction=False)
        for index in blacklist.index_keys:
            pipe.zrangebyscore(index, now, "+inf", withscores=True)
        shards: Any = pipe.execute()
    snap.indexed = {_text(m): float(s) for members in shards for m, s in members}
    # A revoke between the SCAN and the index read is not a fault: look again at the differences.
    dangling, unindexed = snap.dangling(), snap.unindexed()
    if dangling or unindexed:
        with redis_errors():
            pipe = blacklist.client.pipeline(transaction=False)
            for k in dangling:
                pipe.exists(k)
            for k in unindexed:
                pipe.zscore(blacklist.layout.index_of(k), k)
            replies = pipe.execute()
        written = [k for k, there in zip(dangling, replies[: len(dangling)], strict=True) if there]
        if written:  # written meanwhile: read them as SCAN would
            snap.keys.update((e.key, e) for e in blacklist.read_entries(written, now))
        for k, score in zip(unindexed, replies[len(dangling) :], strict=True):
            if score is not None:
                snap.indexed[k] = float(score)
    return snap


def usable_after_ending(
    store: SessionStore, blacklist: Blacklist, now: float, limit: int
) -> tuple[list[EndedSession], int]:
    """See ``Probe.usable_after_ending``."""
    leeway = blacklist.leeway
    found: list[EndedSession] = []
    total = 0
    after = 0
    while True:
        batch = store.revoked_with_live_tokens(now - leeway, after, _BATCH)
        if not batch:
            break
        after = batch[-1].id
        with redis_errors():
            pipe = blacklist.client.pipeline(transaction=False)
            for e in batch:  # each EXISTS in one slot: the session's tag (or one server)
                pipe.exists(*blacklist.check_keys(None, e.session_id))
                pipe.exists(*_token_keys(blacklist, e.session_id, e.access_jti or "-"))
                pipe.exists(*_token_keys(blacklist, e.session_id, e.refresh_jti or "-"))
            replies = pipe.execute()
        for i, e in enumerate(batch):
            sid_key, access_key, refresh_key = replies[3 * i : 3 * i + 3]
            if sid_key:
                continue
            access_live = e.access_jti and (e.access_exp or 0) > now - leeway and not access_key
            refresh_live = e.refresh_jti and (e.refresh_exp or 0) > now - leeway and not refresh_key
            if access_live or refresh_live:
                total += 1
                if len(found) < limit:
                    found.append(e)
    return found, total


def _token_keys(blacklist: Blacklist, sid: str, jti: str) -> list[str]:
    """The keys that revoke token ``jti`` of session ``sid`` (either layout on one server)."""
    keys = [blacklist.token_key(sid, jti)]
    if not blacklist.cluster:
        keys.append(blacklist.layout.legacy_token_key(jti))
    return keys


# -- the checks ----------------------------------------------------------------------------------


def check_redis_eviction(p: Probe) -> CheckResult:
    s = read_server_settings(p.client)
    title = "Redis eviction policy"
    if s.may_evict is False:
        return CheckResult("redis_eviction", title, Status.OK, s.eviction_text())
    fix = f"CONFIG SET maxmemory-policy {SAFE_POLICY} (and in redis.conf)"
    if s.may_evict is None:
        return CheckResult(
            "redis_eviction", title, Status.WARNING,
            f"cannot read the eviction policy ({s.eviction_text()})", fix,
        )  # fmt: skip
    if p.allow_evicting:
        return CheckResult(
            "redis_eviction", title, Status.WARNING,
            f"{s.eviction_text()}: may evict revocations (allowed by {ALLOW_FLAG})", fix,
        )  # fmt: skip
    return CheckResult(
        "redis_eviction", title, Status.PROBLEM,
        f"{s.eviction_text()}: may evict revocations (a revoked token would work again)", fix,
    )  # fmt: skip


def check_redis_persistence(p: Probe) -> CheckResult:
    s = read_server_settings(p.client)
    title = "Redis persistence"
    figure = f"appendonly {_yes_no(s.aof)}, save {s.save if s.save is not None else 'unknown'!r}"
    if s.persistent:
        return CheckResult("redis_persistence", title, Status.OK, figure)
    fix = "CONFIG SET appendonly yes (and in redis.conf)"
    lost = "revocations are lost when Redis restarts"
    if s.persistent is False:
        return CheckResult("redis_persistence", title, Status.WARNING, f"{figure}: {lost}", fix)
    return CheckResult(
        "redis_persistence", title, Status.WARNING, f"{figure}: cannot tell; {lost}?", fix
    )


def check_redis_replica(p: Probe) -> CheckResult:
    info = p.info()
    role = info.get("role", "unknown")
    title = "Redis role"
    if role == "slave":
        master = f"{info.get('master_host', '?')}:{info.get('master_port', '?')}"
        return CheckResult(
            "redis_replica", title, Status.PROBLEM,
            f"a replica of {master}: revocations cannot be written here (READONLY)",
            f"point --redis-url at the master ({master})",
        )  # fmt: skip
    replicas = info.get("connected_slaves", "0")
    return CheckResult("redis_replica", title, Status.OK, f"{role}, {replicas} replica(s)")


def check_redis_memory(p: Probe) -> CheckResult:
    info = p.info()
    used, limit = int(info.get("used_memory", 0)), int(info.get("maxmemory", 0))
    title = "Redis memory"
    if limit <= 0:
        return CheckResult("redis_memory", title, Status.OK, f"{_size(used)} used, no maxmemory")
    share = used / limit
    figure = f"{_size(used)} of {_size(limit)} maxmemory ({share:.0%})"
    if share < MEMORY_WARNING:
        return CheckResult("redis_memory", title, Status.OK, figure)
    status = Status.PROBLEM if share >= MEMORY_PROBLEM else Status.WARNING
    return CheckResult(
        "redis_memory", title, status, figure + ": revocations fail (or are evicted) when full",
        "raise maxmemory, or free memory on this server",
    )  # fmt: skip


def check_keys_without_ttl(p: Probe) -> CheckResult:
    keys = sorted(e.key for e in p.snapshot().without_ttl())
    title = "Blacklist keys without a TTL"
    if not keys:
        return CheckResult("keys_without_ttl", title, Status.OK, "every key expires")
    return CheckResult(
        "keys_without_ttl", title, Status.WARNING,
        f"{len(keys)} key(s) never expire (written by hand?): memory only grows",
        "sessionmon doctor --repair (a TTL from the token's expiry)",
        tuple(keys[: p.limit]), len(keys),
    )  # fmt: skip


def check_short_ttls(p: Probe) -> CheckResult:
    now = p.clock.now()
    short = sorted(p.snapshot().short_ttl(now, p.leeway), key=lambda e: e.key)
    title = "Blacklist TTLs cover the tokens"
    if not short:
        return CheckResult("short_ttl", title, Status.OK, "every key outlives its token")
    items = tuple(
        f"{e.key} (TTL {format_duration(e.ttl)}, "
        f"token for {format_duration(float(e.exp or 0) - now)})"
        for e in short[: p.limit]
    )
    return CheckResult(
        "short_ttl", title, Status.PROBLEM,
        f"{len(short)} key(s) expire before their token: it works again then",
        "sessionmon doctor --repair (extends the TTLs)", items, len(short),
    )  # fmt: skip


def check_index(p: Probe) -> CheckResult:
    snap = p.snapshot()
    dangling, unindexed = snap.dangling(), snap.unindexed()
    title = "Blacklist index matches the keys"
    figure = f"{len(snap.keys)} key(s), {len(snap.indexed)} index entries"
    if not dangling and not unindexed:
        return CheckResult("index", title, Status.OK, figure)
    items = tuple(
        [f"no key: {k}" for k in dangling[: p.limit]]
        + [f"not in the index: {k}" for k in unindexed[: max(0, p.limit - len(dangling))]]
    )
    return CheckResult(
        "index", title, Status.WARNING,
        f"{figure}: {len(dangling)} entr(ies) without a key, {len(unindexed)} key(s) missing "
        "from the index (the monitor's blacklist view and counts are off)",
        "sessionmon doctor --repair (rebuilds the index)", items, len(dangling) + len(unindexed),
    )  # fmt: skip


def check_deleted_but_usable(p: Probe) -> CheckResult:
    found, total = p.usable_after_ending()
    title = "Revoked sessions stay revoked"
    if not total:
        return CheckResult(
            "deleted_but_usable", title, Status.OK,
            "every logged-out session's live tokens are on the blacklist",
        )  # fmt: skip
    items = tuple(f"{e.session_id} ({e.email or e.user_id}, {e.how.value})" for e in found)
    return CheckResult(
        "deleted_but_usable", title, Status.PROBLEM,
        f"{total} session(s) deleted by a logout whose tokens still work (not on the blacklist)",
        "sessionmon doctor --repair (blacklists them again)", items, total,
    )  # fmt: skip


def check_clock_skew(p: Probe) -> CheckResult:
    before = p.clock.now()
    t0 = time.monotonic()
    with redis_errors():
        sec, usec = p.client.time()
    host = before + (time.monotonic() - t0) / 2
    redis_skew = float(sec) + float(usec) / 1e6 - host
    parts = [f"Redis {redis_skew:+.3f} s"]
    skews = {"Redis": redis_skew}
    t0 = time.monotonic()
    before = p.clock.now()
    db_time = p.store.server_time()
    if db_time is not None:
        db_skew = db_time - (before + (time.monotonic() - t0) / 2)
        skews["database"] = db_skew
        parts.append(f"database {db_skew:+.3f} s")
    else:
        parts.append("database: this host's clock")
    worst_name, worst = max(skews.items(), key=lambda kv: abs(kv[1]))
    figure = ", ".join(parts) + f" (leeway {format_duration(p.leeway)})"
    title = "Clock skew"
    if abs(worst) <= p.leeway / 2:
        return CheckResult("clock_skew", title, Status.OK, figure)
    status = Status.PROBLEM if abs(worst) > p.leeway else Status.WARNING
    return CheckResult(
        "clock_skew", title, status,
        f"{figure}: this host and {worst_name} disagree by {abs(worst):.1f} s",
        "sync the clocks (NTP) of this host, Redis and the database",
    )  # fmt: skip


def check_future_tokens(p: Probe) -> CheckResult:
    now = p.clock.now()
    ids, total = p.store.issued_after(now + p.leeway, p.limit)
    title = "Tokens issued in the future"
    if not total:
        return CheckResult("future_tokens", title, Status.OK, "none")
    return CheckResult(
        "future_tokens", title, Status.PROBLEM,
        f"{total} session(s) with tokens issued more than {format_duration(p.leeway)} from now "
        "(a host minting tokens has a clock ahead)",
        "sync that host's clock (NTP); force-logout these sessions if in doubt", tuple(ids), total,
    )  # fmt: skip


def check_expired_waiting(p: Probe) -> CheckResult:
    now = p.clock.now()
    count, oldest = p.store.expired_summary(now)
    title = "Expired sessions waiting for purge"
    if not count or oldest is None:
        return CheckResult("expired_waiting", title, Status.OK, "none")
    figure = f"{count}, the oldest expired {format_duration(now - oldest)} ago"
    if now - oldest < STALE_EXPIRED:
        return CheckResult("expired_waiting", title, Status.OK, figure)
    return CheckResult(
        "expired_waiting", title, Status.WARNING, figure + " (is purge scheduled?)",
        "sessionmon purge (daily, e.g. from cron)", (), count,
    )  # fmt: skip


def check_logout_jobs(p: Probe) -> CheckResult:
    title = "Revoke-by-query jobs finished"
    if p.jobs is None:
        return CheckResult("logout_jobs", title, Status.OK, "not checked (no jobs directory)")
    try:
        jobs = unfinished_jobs(p.jobs)
    except OSError as exc:  # another user's directory: say so, the other checks run
        return CheckResult(
            "logout_jobs", title, Status.WARNING,
            f"cannot read the jobs in {p.jobs}: {exc.strerror or exc}",
            "run doctor as a user who may read the database's directory",
        )  # fmt: skip
    if not jobs:
        return CheckResult("logout_jobs", title, Status.OK, "none unfinished")
    items = tuple(
        f"{j.state.job}: {j.state.done:,} of {j.state.total:,} visited, "
        f"{'running now' if j.running else 'stopped'} ({j.state.query})"
        for j in jobs[: p.limit]
    )
    stopped = sum(not j.running for j in jobs)
    if not stopped:
        return CheckResult(
            "logout_jobs", title, Status.OK, f"{len(jobs)} running", None, items, len(jobs)
        )
    return CheckResult(
        "logout_jobs", title, Status.WARNING,
        f"{stopped} stopped part-way: the sessions they matched are not all ended yet",
        "sessionmon logout --resume JOB (each stopped job)", items, len(jobs),
    )  # fmt: skip


def check_database_size(p: Probe) -> CheckResult:
    now = p.clock.now()
    size = p.store.database_size()
    live = p.store.count_sessions(now=now)
    created = p.store.created_since(now - 86400)
    ended = p.store.ended_count(since=now - 86400)
    return CheckResult(
        "database_size", "Database size and growth", Status.OK,
        f"{_size(size)}, {live} live session(s); last 24 h: {created} created, {ended} ended "
        f"({created - ended:+d})",
    )  # fmt: skip


CHECKS: tuple[tuple[str, str, Callable[[Probe], CheckResult]], ...] = (
    ("redis_eviction", "Redis eviction policy", check_redis_eviction),
    ("redis_persistence", "Redis persistence", check_redis_persistence),
    ("redis_replica", "Redis role", check_redis_replica),
    ("redis_memory", "Redis memory", check_redis_memory),
    ("keys_without_ttl", "Blacklist keys without a TTL", check_keys_without_ttl),
    ("short_ttl", "Blacklist TTLs cover the tokens", check_short_ttls),
    ("index", "Blacklist index matches the keys", check_index),
    ("deleted_but_usable", "Revoked sessions stay revoked", check_deleted_but_usable),
    ("clock_skew", "Clock skew", check_clock_skew),
    ("future_tokens", "Tokens issued in the future", check_future_tokens),
    ("expired_waiting", "Expired sessions waiting for purge", check_expired_waiting),
    ("logout_jobs", "Revoke-by-query jobs finished", check_logout_jobs),
    ("database_size", "Database size and growth", check_database_size),
)


# The checks that need no Redis (the others are not tried again once Redis did not answer).
DATABASE_ONLY = frozenset({"future_tokens", "expired_waiting", "logout_jobs", "database_size"})


def run_checks(probe: Probe) -> Report:
    """Every check; one that cannot reach Redis or the database is a problem of its own (once
    Redis does not answer a PING either, the other Redis checks say so without waiting again;
    a command refused to this user fails only its own check)."""
    at = probe.clock.now()
    out = []
    redis_down: RedisUnavailable | None = None
    for name, title, check in CHECKS:
        try:
            if redis_down is not None and name not in DATABASE_ONLY:
                raise redis_down
            out.append(check(probe))
        except RedisUnavailable as exc:
            if redis_down is None and _answers(probe):  # refused to this user (ACL), not down
                fix = "allow this Redis user the command (ACL), or run doctor as one who may"
                out.append(CheckResult(name, title, Status.WARNING, f"cannot check: {exc}", fix))
                continue
            redis_down = exc
            figure, fix = f"could not check: {exc}", "bring Redis back"
            out.append(CheckResult(name, title, Status.PROBLEM, figure, fix))
        except SessionmonError as exc:
            figure, fix = f"could not check: {exc}", "check the database"
            out.append(CheckResult(name, title, Status.PROBLEM, figure, fix))
    return Report(tuple(out), at)


def _answers(probe: Probe) -> bool:
    """True when Redis answers a PING (a check was refused, e.g. NOPERM: not a Redis down)."""
    try:
        with redis_errors():
            probe.client.ping()
    except RedisUnavailable:
        return False
    return True


def repair(probe: Probe, actor: str, events: EventSink | None = None) -> Repair:
    """Rebuild the index from the keys, give a TTL to keys without one (or one too short) from
    their token's expiry, blacklist again the sessions deleted but still usable; one audit row.
    Raises ``RedisUnavailable`` / ``DatabaseError`` (then the audit row says what was done)."""
    bl, client = probe.blacklist, probe.client
    now = probe.clock.now()
    snap = read_snapshot(bl, now)
    added = removed = ttl_set = revoked = 0
    failure: str | None = None
    try:
        with redis_errors():
            pipe = client.pipeline(transaction=False)
            fixes: dict[str, int] = {}
            for e in snap.without_ttl() + snap.short_ttl(now, probe.leeway):
                if isinstance(e.exp, int | float):
                    fixes[e.key] = max(bl.ttl_for(float(e.exp), now), math.ceil(probe.leeway))
            for key, ttl in fixes.items():
                pipe.expire(key, ttl)
            for key in snap.unindexed():
                entry = snap.keys[key]
                ttl_left = fixes.get(key, entry.ttl)
                if math.isinf(ttl_left):
                    continue  # no TTL and none known: the index orders by expiry
                pipe.zadd(bl.layout.index_of(key), {key: now + ttl_left})
            for key, ttl in fixes.items():
                if key in snap.indexed:
                    pipe.zadd(bl.layout.index_of(key), {key: now + ttl})
            dangling = snap.dangling()
            for key in dangling:
                pipe.zrem(bl.layout.index_of(key), key)
            pipe.execute()
        ttl_set = len(fixes)
        added = sum(1 for k in snap.unindexed() if not math.isinf(fixes.get(k, snap.keys[k].ttl)))
        removed = len(dangling)
        usable = _all_usable(probe, now)
        if usable:
            requests = [
                RevokeRequest(
                    KIND_SESSION, e.session_id, e.tokens_expire_at, None, e.user_id, e.email
                )
                for e in usable
            ]
            bl.revoke(requests, reason=REVOKE_REASON, actor=actor)
            revoked = len(usable)
    except SessionmonError as exc:
        failure = str(exc)
        raise
    finally:
        done = Repair(added, removed, ttl_set, revoked)
        if done.changed:
            probe.store.write_audit(
                [
                    AuditRow(
                        at=now,
                        actor=actor,
                        action=REPAIR_ACTION,
                        reason="sessionmon doctor --repair",
                        revoked=[],
                        outcome=f"failed: {failure}; done: {done.text()}"
                        if failure
                        else f"ok: {done.text()}",
                        detail=done.to_dict(),
                    )
                ]
            )
    if done.changed and events is not None:
        events.emit(
            Event(EventKind.DOCTOR_REPAIR, now, reason=done.text(), actor=actor, count=done.changed)
        )
    return done


def _all_usable(probe: Probe, now: float) -> list[EndedSession]:
    return usable_after_ending(probe.store, probe.blacklist, now, 1 << 62)[0]


def _yes_no(value: bool | None) -> str:
    return "unknown" if value is None else ("yes" if value else "no")


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
