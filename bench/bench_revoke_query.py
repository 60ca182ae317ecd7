"""Revoke by query: 1,000,000 sessions ended by one ``logout --where`` (target <= 60 s), every
blacklist key with its TTL, and the dry run's count equal to what was revoked.

The sessions are bulk-loaded into a fresh SQLite file (``bench.data.insert_sessions``: one
transaction, indexes built after the insert): the ``n`` the query matches (IP in 198.51.100.0/24),
a tenth as many it must leave alone, and the baseline's own. Revocation runs on the bench Redis
(which already holds its million unrelated keys) under a scratch prefix. Both steps are the
CLI's: ``session_query.dry_run`` for ``--dry-run``, then ``LogoutJob.plan`` + ``LogoutJob.run``
on a runtime built by ``open_runtime``, with the default batch. Afterwards every key under the
prefix is scanned (each must have a TTL, and there must be as many as the job says it wrote),
a sample of the revoked sessions is looked up key by key, and the rows are checked gone.

Baseline, same run: the same kind of sessions ended one ``Auth.end_sessions`` call at a time (the
monitor's single-session force-logout), timed on a few thousand and extrapolated to ``n``.
"""

from __future__ import annotations

import random
import shutil
import time
from collections.abc import Iterator
from typing import Any

from bench.bench_check import scratch_db
from bench.data import BenchRedis, clear_prefix, insert_sessions, session_chunks
from bench.fixtures import bench_redis
from bench.harness import Context, Figure
from sessionmon.core.auth import Auth
from sessionmon.core.bulk_logout import ACTION, DEFAULT_BATCH, LogoutJob, jobs_dir_for
from sessionmon.core.runtime import open_runtime
from sessionmon.core.session_query import SessionQuery, dry_run, parse_cidr
from sessionmon.core.settings import Settings
from sessionmon.core.store import SqliteStore

PREFIX = "benchrq:"
MATCHED_NET = "198.51.100"  # the query's /24
BASELINE_NET = "192.0.2"  # the baseline's sessions (never matched by the query)
TARGET_SECONDS = 60.0  # for 1,000,000 sessions
IP = 6  # index of ``ip`` in SESSION_COLUMNS


def _rows(
    n: int, others: int, baseline: int, now: float, baseline_ids: list[str]
) -> Iterator[tuple[object, ...]]:
    """``n`` rows in the query's network, then ``others`` outside it, then ``baseline`` (their
    ids go to ``baseline_ids``)."""
    i = 0
    for chunk in session_chunks(n + others + baseline, now, seed=7):
        for row in chunk:
            if i < n:
                net = MATCHED_NET
            elif i >= n + others:
                net = BASELINE_NET
                baseline_ids.append(str(row[0]))
            else:
                net = None
            yield row if net is None else (*row[:IP], f"{net}.{i % 250}", *row[IP + 1 :])
            i += 1


def _scan_keys(client, prefix: str) -> tuple[int, int, int]:
    """Every string key under ``prefix``: (count, without a TTL, shortest TTL seen). A key that
    expired between the SCAN and its TTL (-2) is gone, not a key without a TTL (-1)."""
    count = no_ttl = 0
    shortest = 1 << 62
    batch: list[bytes] = []

    def check() -> None:
        nonlocal no_ttl, shortest
        pipe = client.pipeline(transaction=False)
        for key in batch:
            pipe.ttl(key)
        for ttl in pipe.execute():
            if ttl == -1:
                no_ttl += 1
            elif ttl >= 0:
                shortest = min(shortest, ttl)
        batch.clear()

    for key in client.scan_iter(match=prefix + "*", count=10_000, _type="string"):
        count += 1
        batch.append(key)
        if len(batch) >= 10_000:
            check()
    if batch:
        check()
    return count, no_ttl, shortest


def run(ctx: Context) -> None:
    measure(ctx, ctx.size(1_000_000, 20_000))


def measure(ctx: Context, n: int) -> None:
    """Load ``n`` matching sessions (and the others), revoke them by the query, check, report."""
    others = n // 10
    baseline_n = 500 if ctx.quick else 3000
    server = bench_redis(ctx.size(1_000_000, 10_000))
    path = scratch_db("revoke-query")
    shutil.rmtree(jobs_dir_for(Settings(db=path).db), ignore_errors=True)
    settings = Settings(db=path, redis_url=server.url, prefix=PREFIX, actor="bench")
    started = time.perf_counter()
    base_ids: list[str] = []
    with SqliteStore(path) as store:
        rows = _rows(n, others, baseline_n, time.time(), base_ids)
        insert_sessions(store, rows, rebuild=True)
        store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        store.conn.execute("ANALYZE")
    print(f"  [data] loaded {n + others + baseline_n:,} sessions in "
          f"{time.perf_counter() - started:.1f}s", flush=True)  # fmt: skip

    query = SessionQuery(ip=parse_cidr(f"{MATCHED_NET}.0/24"))
    rt = open_runtime(settings, create_db=False)
    try:
        client = rt.client
        _clear(server)
        auth = rt.auth
        store = rt.store

        # The baseline first (its sessions are outside the query): one call per session.
        assert len(base_ids) == baseline_n, len(base_ids)
        base_keys = 0
        t0 = time.perf_counter()
        for sid in base_ids:
            result = auth.end_sessions(store.get_sessions([sid]), ACTION, "bench", "baseline")
            assert result.ok and result.deleted == 1, result.outcome
            base_keys += len(result.revoked)
        per_session = (time.perf_counter() - t0) / baseline_n
        baseline_total = per_session * n

        t0 = time.perf_counter()
        planned = dry_run(store, query, time.time())
        dry_seconds = time.perf_counter() - t0

        phases = _PhaseTimes.around(auth)
        t0 = time.perf_counter()
        job = LogoutJob.plan(
            jobs_dir_for(settings.db), store, query, actor="bench", reason="bench", now=time.time()
        )
        plan_seconds = time.perf_counter() - t0
        report = job.run(auth, batch=DEFAULT_BATCH)
        total = time.perf_counter() - t0
        st = report.state
        assert report.failure is None, report.failure
        cu = report.catch_up
        print(
            f"  phases: plan {plan_seconds:.1f}s, run {total - plan_seconds:.1f}s (blacklist "
            f"writes {phases.revoke:.1f}s in the job's thread; deletes {phases.delete:.1f}s in "
            f"its worker, overlapped; trigram catch-up {cu.how.value} {cu.stale:,} in "
            f"{cu.seconds:.1f}s)",
            flush=True,
        )

        # The checks (not timed).
        keys, no_ttl, shortest = _scan_keys(client, settings.prefix)
        bl = auth.blacklist
        # Every shard: <prefix>bl:{<tag>}:sid:<sid>
        sid_match = bl.layout.base + "{*}:sid:*"
        sid_keys = sum(1 for _ in client.scan_iter(match=sid_match, count=10_000))
        sample = random.Random(1).sample(job.ids(), min(2000, len(job.ids())))
        missing = sum(1 for sid in sample if not bl.is_revoked(None, sid))
        left = dry_run(store, query, time.time()).count
        untouched = store.count_sessions(include_expired=True)
        exact = planned.count == st.total == st.ended == n and st.gone == 0
        # Access keys may expire during the check (their tokens did); session keys outlive every
        # token of their session: one per session ended, exactly.
        keys_ok = no_ttl == 0 and sid_keys == st.ended + baseline_n and missing == 0 and left == 0
        print(
            f"  dry run {planned.count:,} in {dry_seconds:.1f}s; plan {plan_seconds:.1f}s; "
            f"ended {st.ended:,} (gone {st.gone:,}), {st.keys:,} keys written; {keys:,} keys "
            f"under {PREFIX} ({base_keys:,} of the baseline; {sid_keys:,} session keys), "
            f"{no_ttl} without a TTL, shortest TTL {shortest}s; {missing} of {len(sample):,} "
            f"sampled sessions not revoked; {left} still matching; {untouched:,} others left",
            flush=True,
        )
        assert untouched == others, untouched
        target = TARGET_SECONDS * n / 1_000_000
        ctx.report(
            Figure(
                "revoke-query",
                f"SQLite: logout --where ending {n:,} sessions (plan + run, batch {DEFAULT_BATCH})",
                total,
                "s",
                baseline=baseline_total,
                baseline_what=f"end_sessions one at a time, {baseline_n:,} timed, extrapolated",
                ratio=baseline_total / total,
                target=f"<= {target:.0f} s" + ("" if n == 1_000_000 else " (60 s per 1M)"),
                met=total <= target and exact and keys_ok,
                note=f"{n / total:,.0f} sessions/s; dry run {dry_seconds:.1f}s",
            )
        )
        ctx.report(
            Figure(
                "revoke-query",
                "dry-run count = sessions revoked; every key with a TTL",
                float(planned.count),
                "sessions",
                target="equal, 0 keys without TTL",
                met=exact and keys_ok,
                note=f"revoked {st.ended:,}; {no_ttl} keys without TTL; {keys:,} keys",
            )
        )
    finally:
        rt.close()
        _clear(server)
        shutil.rmtree(jobs_dir_for(settings.db), ignore_errors=True)


class _PhaseTimes:
    """Seconds spent in ``revoke_for_ending`` (Redis, and building the requests and audit rows)
    and in ``delete_revoked`` (the database), by wrapping the two on this ``Auth``."""

    def __init__(self) -> None:
        self.revoke = 0.0
        self.delete = 0.0

    @classmethod
    def around(cls, auth: Auth) -> _PhaseTimes:
        times = cls()
        revoke, delete = auth.revoke_for_ending, auth.delete_revoked

        def timed_revoke(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                return revoke(*args, **kwargs)
            finally:
                times.revoke += time.perf_counter() - t

        def timed_delete(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                return delete(*args, **kwargs)
            finally:
                times.delete += time.perf_counter() - t

        auth.revoke_for_ending = timed_revoke  # type: ignore[method-assign]
        auth.delete_revoked = timed_delete  # type: ignore[method-assign]
        return times


def _clear(server: BenchRedis) -> None:
    """Delete the scratch keys (a client with a long timeout: millions of keys)."""
    client = server.client()
    try:
        clear_prefix(client, PREFIX)
    finally:
        client.close()
