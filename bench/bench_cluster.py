"""The blacklist on a 3-master Redis Cluster, each figure next to a baseline of the same run.

Two servers are started from the machine's ``redis-server`` for the run and stopped afterwards:
a 3-master cluster (the tests' fixture, ``tests/redis_cluster.py``) and one plain server with the
same options (no AOF, no RDB: the data is the benchmark's own). Measured, in this order:

1. ``Auth.authenticate`` with a valid access token on the cluster vs on the single server
   (interleaved batches, the code of ``bench_check``): target >= 0.9x.
2. The blacklist's first page by expiry at 10,000,000 keys across the 16 shards (``--quick``:
   100,000) vs SCAN + TTL of every key on every master: target <= 10 ms.
3. ``force_logout_user`` of a user with 1,000 sessions on the cluster (SQLite store), every run
   timed from the first one on (p50, p99, max): target <= 250 ms. Baseline, interleaved: the same
   logout with one EVAL per shard one after the other (sessionmon's revoke before the per-master
   pipelines); the single server's figure is printed alongside.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from redis.cluster import RedisCluster

from bench.bench_blacklist import PAGE, scan_ttls
from bench.bench_check import CheckSetup, authenticate_check, scratch_db
from bench.bench_logout import fresh_sessions
from bench.data import CACHE_DIR, SESSIONS_PER_USER
from bench.fixtures import KEYS
from bench.harness import Context, Figure, compare_throughput, percentile, time_each
from sessionmon.core.auth import Auth
from sessionmon.core.blacklist import Blacklist, connect
from sessionmon.core.blacklist_keys import shard_tags
from sessionmon.core.cluster_pipeline import run_per_node
from sessionmon.core.errors import RedisUnavailable, RevocationIncomplete
from sessionmon.core.store import SqliteStore
from sessionmon.core.tokens import TokenCodec
from tests.redis_cluster import RedisClusterProcesses
from tests.redis_server import RedisProcess, system_redis_server

PREFIX = "benchcl:"
# The servers hold only this run's data: nothing written to disk.
SERVER_ARGS = ("--appendonly", "no", "--save", "")
LOAD_CHUNK = 10_000  # keys per loading EVAL (one shard, one slot)

# Writes ``ARGV[3]`` keys of one shard as ``Blacklist.revoke`` does (the value's JSON fields,
# ``SET .. EX``, the shard's index entry), server-side: KEYS[1] is the shard's index, ARGV[1] the
# key stem ``<p>bl:{<tag>}:``, ARGV[2] now, ARGV[4] a seed. A third of the keys are sessions.
_LOAD_SCRIPT = """
local index, stem, now, n = KEYS[1], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
math.randomseed(tonumber(ARGV[4]))
local users = tonumber(ARGV[5])
local template = '{"kind":"%s","sid":"%s","sub":"u%d","email":"user%d@example.com",' ..
  '"reason":"bench","actor":"bench","revoked_at":' .. string.format('%.3f', now) .. ',"exp":%.3f}'
local function rid()
  return string.format('%07x%07x%08x', math.random(0, 0xfffffff), math.random(0, 0xfffffff),
    math.random(0, 0x7fffffff))
end
for i = 1, n do
  local sid = rid()
  local ttl = math.random(86400, 604800)
  local u = math.random(0, users)
  local kind, key
  if i % 3 == 0 then
    kind, key = 'session', stem .. 'sid:' .. sid
  else
    kind, key = (i % 3 == 1) and 'access' or 'refresh', stem .. 'jti:' .. rid()
  end
  local value = string.format(template, kind, sid, u, u, now + ttl)
  redis.call('SET', key, value, 'EX', ttl)
  redis.call('ZADD', index, now + ttl, key)
end
return n
"""


class SequentialShards(Blacklist):
    """The baseline revoke: one EVAL per shard, one after the other (sessionmon before the
    per-master pipelines), each session still all or nothing."""

    def _write_cluster(
        self, groups: dict[str, list[tuple[str, int, str]]], now: float, wait: int
    ) -> dict[str, int]:
        written: dict[str, int] = {}
        failure: RedisUnavailable | None = None
        for index, items in groups.items():
            try:
                ttls, _ = self._run(functools.partial(self._write_shard, index, items, now, wait))
            except RedisUnavailable as exc:
                failure = exc
                continue
            written.update(ttls)
        if failure is not None:
            raise RevocationIncomplete(written, str(failure))
        return written


def run(ctx: Context) -> None:
    binary = system_redis_server()
    if binary is None:
        print("  skipped: no redis-server on this machine", flush=True)
        return
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="bench-cluster-", dir=CACHE_DIR))
    # Redis's default node timeout (the tests' 2 s is for fast failovers): 3 masters loading
    # 10M keys on 2 busy cores answer the cluster bus late, and a 2 s timeout fails them.
    cluster_args = (*SERVER_ARGS, "--cluster-node-timeout", "15000")
    cluster = RedisClusterProcesses(workdir / "cluster", masters=3, args=cluster_args)
    single = RedisProcess(workdir / "single", binary=binary, args=SERVER_ARGS)
    try:
        started = time.perf_counter()
        cluster.start()
        single.start()
        print(f"  started 3 masters and 1 server in {time.perf_counter() - started:.1f}s")
        authenticate(ctx, cluster.url, single.url)
        first_page(ctx, cluster.url)
        logout(ctx, cluster.url, single.url)
    finally:
        cluster.stop()
        with contextlib.suppress(Exception):
            single.stop()
        with contextlib.suppress(OSError):
            for path in sorted(workdir.rglob("*"), reverse=True):
                path.unlink() if path.is_file() else path.rmdir()
            workdir.rmdir()


def authenticate(ctx: Context, cluster_url: str, single_url: str) -> None:
    on_cluster = CheckSetup(0, "cluster-auth", url=cluster_url)
    on_single = CheckSetup(0, "cluster-auth-single", url=single_url)
    try:
        assert isinstance(on_cluster.client, RedisCluster)
        assert not isinstance(on_single.client, RedisCluster)
        subject = authenticate_check(on_cluster.auth, on_cluster.token_cycle())
        baseline = authenticate_check(on_single.auth, on_single.token_cycle())
        for _ in range(len(on_cluster.tokens)):  # every token verifies, every session touched
            assert subject() and baseline()
        a, b, ratio = compare_throughput(subject, baseline, seconds=1.0 if ctx.quick else 10.0)
        ctx.report(
            Figure(
                "cluster",
                "authenticate on 3 masters (verify + EXISTS jti sid, one node)",
                a,
                "ops/s",
                baseline=b,
                baseline_what="the same on one redis-server",
                ratio=ratio,
                target=">= 0.9x",
                met=ratio >= 0.9,
                note=f"{1e6 / a:.0f} us vs {1e6 / b:.0f} us per call",
            )
        )
    finally:
        on_cluster.close()
        on_single.close()


def load_keys(client: RedisCluster, n: int) -> float:
    """Write ``n`` blacklist keys (TTLs of 1 d to 7 d) spread evenly over the shards, by a
    script on each shard's master, every master at once; returns the seconds it took."""
    bl = Blacklist(client, prefix=PREFIX)
    tags = shard_tags()
    now = time.time()
    users = max(1, n // SESSIONS_PER_USER)
    per_shard = [n // len(tags) + (1 if i < n % len(tags) else 0) for i in range(len(tags))]
    batches: dict[str, tuple[Any, list[tuple[Any, ...]]]] = {}
    seed = 0
    for tag, count, index in zip(tags, per_shard, bl.layout.index_keys, strict=True):
        node = client.get_node_from_key(index)
        commands = batches.setdefault(node.name, (node, []))[1]
        for start in range(0, count, LOAD_CHUNK):
            seed += 1
            stem = f"{bl.layout.base}{{{tag}}}:"
            size = min(LOAD_CHUNK, count - start)
            commands.append(("EVAL", _LOAD_SCRIPT, 1, index, stem, repr(now), size, seed, users))
    started = time.perf_counter()
    # One script per master per round: a master busy with a whole pipeline of them would not
    # answer the cluster bus for seconds, and the others would take it for failed.
    for step in itertools.count():
        rounds = {
            name: (node, commands[step : step + 1])
            for name, (node, commands) in batches.items()
            if step < len(commands)
        }
        if not rounds:
            break
        for name, replies in run_per_node(client, rounds).items():
            bad = replies.error or next(
                (r for r in replies.replies if isinstance(r, Exception)), None
            )
            if bad is not None:
                raise RuntimeError(f"loading on {name} failed: {bad}")
    return time.perf_counter() - started


def cluster_scan_ttl_first_page(client: RedisCluster, limit: int = PAGE) -> list[bytes]:
    """The baseline: SCAN every master, TTL every key (pipelined per batch), sort, GET a page."""
    ttls: list[tuple[int, bytes]] = []
    for node in client.get_primaries():
        ttls += scan_ttls(client.get_redis_connection(node), PREFIX)
    ttls.sort()
    page = [k for _, k in ttls[:limit]]
    if page:
        client.mget_nonatomic(page)
    return page


def first_page(ctx: Context, cluster_url: str) -> None:
    n = ctx.size(10_000_000, 100_000)
    client = connect(cluster_url, timeout=120)
    try:
        seconds = load_keys(client, n)
        bl = Blacklist(client, prefix=PREFIX)
        keys = bl.count()
        memory = sum(
            int(client.get_redis_connection(node).info("memory")["used_memory"])
            for node in client.get_primaries()
        )
        print(
            f"  loaded {keys:,} keys in {seconds:.1f}s ({keys / seconds:,.0f} keys/s), "
            f"{memory / 2**30:.1f} GiB on the 3 masters",
            flush=True,
        )
        assert keys == n, (keys, n)
        first_ms = time_each(lambda: bl.page(0, PAGE), 1)[0] * 1000
        got = bl.page(0, PAGE)
        assert len(got) == PAGE and got[0].expires_at <= got[-1].expires_at
        times = time_each(lambda: bl.page(0, PAGE), 50 if ctx.quick else 300)
        p50, p99 = percentile(times, 50) * 1000, percentile(times, 99) * 1000
        base_times = []
        for _ in range(3 if ctx.quick else 1):
            start = time.perf_counter()
            page = cluster_scan_ttl_first_page(client)
            base_times.append(time.perf_counter() - start)
        assert len(page) == PAGE
        # The same order: the baseline's page (TTL in seconds) starts where the index's does.
        assert {bytes(k) for k in page[:20]} & {e.key.encode() for e in got[:40]}
        base = statistics.median(base_times) * 1000
        ctx.report(
            Figure(
                "cluster",
                f"first blacklist page of {PAGE} by expiry, {keys:,} keys on 16 shards, p50",
                p50,
                "ms",
                baseline=base,
                baseline_what="SCAN + TTL every key on every master",
                ratio=base / p50,
                target="<= 10 ms",
                met=p50 <= 10,
                note=f"p99 {p99:.2f} ms, first {first_ms:.2f} ms; loaded in {seconds:.0f}s",
            )
        )
    finally:
        client.close()


def logout(ctx: Context, cluster_url: str, single_url: str) -> None:
    client = connect(cluster_url)
    plain = connect(single_url)
    store = SqliteStore(scratch_db("cluster-logout"))
    try:
        codec = TokenCodec(KEYS)
        subject = Auth(store, Blacklist(client, prefix=PREFIX), codec)
        baseline = Auth(store, SequentialShards(client, prefix=PREFIX), codec)
        single = Auth(store, Blacklist(plain, prefix=PREFIX), codec)
        per_user = 1000
        runs = 5 if ctx.quick else 20
        timed: dict[str, list[float]] = {"subject": [], "baseline": [], "single": []}

        def one(name: str, auth: Auth) -> Callable[[], None]:
            def go() -> None:
                user = f"bench-{name}-{random.randrange(1 << 40)}"
                fresh_sessions(store, per_user, user=user)
                start = time.perf_counter()
                result = auth.force_logout_user(user, actor="bench")
                timed[name].append(time.perf_counter() - start)
                assert result.ok and result.deleted == per_user, result.outcome
                assert len(result.revoked) >= 2 * per_user

            return go

        for i in range(runs):  # interleaved, the first run of each timed too
            order = [("subject", subject), ("baseline", baseline), ("single", single)]
            for name, auth in order if i % 2 == 0 else reversed(order):
                one(name, auth)()
        ms = {k: [t * 1000 for t in v] for k, v in timed.items()}
        s50, s99 = percentile(ms["subject"], 50), percentile(ms["subject"], 99)
        smax = max(ms["subject"])
        b50 = percentile(ms["baseline"], 50)
        ctx.report(
            Figure(
                "cluster",
                f"force_logout_user, {per_user:,} sessions on 3 masters, p50 of {runs} runs",
                s50,
                "ms",
                baseline=b50,
                baseline_what="one EVAL per shard in sequence, p50",
                ratio=b50 / s50,
                target="<= 250 ms (every run)",
                met=smax <= 250,
                note=(
                    f"p99 {s99:.0f} ms, max {smax:.0f} ms, first {ms['subject'][0]:.0f} ms; "
                    f"baseline p99 {percentile(ms['baseline'], 99):.0f} ms, max "
                    f"{max(ms['baseline']):.0f} ms; one redis-server p50 "
                    f"{percentile(ms['single'], 50):.0f} ms, max {max(ms['single']):.0f} ms"
                ),
            )
        )
    finally:
        store.close()
        with contextlib.suppress(redis.RedisError):
            plain.close()
        client.close()
