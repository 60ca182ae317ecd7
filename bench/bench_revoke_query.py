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

``revoke-query-pg`` does the same on PostgreSQL (``SESSIONMON_BENCH_PG_URL``) in the scratch
schema ``bench_revoke_query``, made by the real store, filled by ``COPY`` (secondary indexes built
after it), dropped afterwards. ``--sessions`` sets ``n`` (default 1,000,000; quick 20,000). The
run prints its phases: the plan, the job's blacklist writes (its own thread) and deletes (a worker
thread, overlapped), and SQLite's trigram-index catch-up.

Baseline, same run: the same kind of sessions ended one ``Auth.end_sessions`` call at a time (the
monitor's single-session force-logout), timed on a few thousand and extrapolated to ``n``.
"""

from __future__ import annotations

import random
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg

from bench import pg_data
from bench.bench_check import scratch_db
from bench.data import BenchRedis, clear_prefix, insert_sessions, session_chunks
from bench.fixtures import bench_redis
from bench.harness import Context, Figure
from sessionmon.core.auth import Auth
from sessionmon.core.bulk_logout import ACTION, DEFAULT_BATCH, LogoutJob, jobs_dir_for
from sessionmon.core.runtime import open_runtime
from sessionmon.core.session_query import SessionQuery, dry_run, parse_cidr
from sessionmon.core.settings import Settings
from sessionmon.core.store import SESSION_COLUMNS, Backend, SqliteStore, open_store
from sessionmon.core.store.url import with_search_path

PREFIX = "benchrq:"
MATCHED_NET = "198.51.100"  # the query's /24
BASELINE_NET = "192.0.2"  # the baseline's sessions (never matched by the query)
TARGET_SECONDS = 60.0  # for 1,000,000 sessions
IP = 6  # index of ``ip`` in SESSION_COLUMNS
PG_SCHEMA = "bench_revoke_query"  # PostgreSQL: the scratch schema (dropped afterwards)
NAMES = {Backend.SQLITE: "SQLite", Backend.POSTGRES: "PostgreSQL"}
BENCH_NAMES = {Backend.SQLITE: "revoke-query", Backend.POSTGRES: "revoke-query-pg"}


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
    measure(ctx, ctx.sessions(1_000_000, 20_000), Backend.SQLITE)


def run_pg(ctx: Context) -> None:
    """The same on PostgreSQL (``SESSIONMON_BENCH_PG_URL``), in a scratch schema."""
    why = pg_data.available()
    if why is not None:
        print(f"  skipped: PostgreSQL at {pg_data.PG_URL} is not available ({why})")
        return
    measure(ctx, ctx.sessions(1_000_000, 20_000), Backend.POSTGRES)


def _load_sqlite(path: Path, rows: Iterator[tuple[object, ...]]) -> None:
    with SqliteStore(path) as store:
        insert_sessions(store, rows, rebuild=True)
        store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        store.conn.execute("ANALYZE")


def _load_pg(url: str, rows: Iterator[tuple[object, ...]]) -> None:
    """The schema made by the real store, the rows copied in with the secondary indexes dropped
    and rebuilt once (the schema's own definitions), then ``VACUUM ANALYZE``."""
    open_store(url).close()
    with psycopg.connect(url) as conn:
        indexes = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = %s "
            "AND tablename = 'sessions' AND indexname <> 'sessions_pkey'",
            (PG_SCHEMA,),
        ).fetchall()
        for name, _ in indexes:
            conn.execute(f"DROP INDEX {PG_SCHEMA}.{name}")
        with conn.cursor() as cur:
            sql = f"COPY sessions ({', '.join(SESSION_COLUMNS)}) FROM STDIN"
            with cur.copy(sql) as copy:  # type: ignore[arg-type]
                for r in rows:
                    copy.write_row(r)
        for _, create in indexes:
            conn.execute(create)  # type: ignore[arg-type]
        conn.commit()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE sessions")


def _scratch_pg() -> str:
    """A fresh, empty schema ``PG_SCHEMA`` on the bench server; its URL."""
    with psycopg.connect(pg_data.PG_URL, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm SCHEMA public")
        conn.execute(f"DROP SCHEMA IF EXISTS {PG_SCHEMA} CASCADE")
        conn.execute(f"CREATE SCHEMA {PG_SCHEMA}")
    return with_search_path(pg_data.PG_URL, PG_SCHEMA)


def _drop_pg() -> None:
    with psycopg.connect(pg_data.PG_URL, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {PG_SCHEMA} CASCADE")


def measure(ctx: Context, n: int, backend: Backend) -> None:
    """Load ``n`` matching sessions (and the others), revoke them by the query, check, report."""
    others = n // 10
    baseline_n = 500 if ctx.quick else 3000
    server = bench_redis(ctx.size(1_000_000, 10_000))
    db: str | Path = scratch_db("revoke-query") if backend is Backend.SQLITE else _scratch_pg()
    shutil.rmtree(jobs_dir_for(Settings(db=db).db), ignore_errors=True)
    settings = Settings(db=db, redis_url=server.url, prefix=PREFIX, actor="bench")
    started = time.perf_counter()
    base_ids: list[str] = []
    rows = _rows(n, others, baseline_n, time.time(), base_ids)
    if isinstance(db, Path):
        _load_sqlite(db, rows)
    else:
        _load_pg(db, rows)
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
                BENCH_NAMES[backend],
                f"{NAMES[backend]}: logout --where ending {n:,} sessions (plan + run, batch "
                f"{DEFAULT_BATCH})",
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
                BENCH_NAMES[backend],
                f"{NAMES[backend]}: dry-run count = sessions revoked; every key with a TTL",
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
        if backend is Backend.POSTGRES:
            _drop_pg()


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
