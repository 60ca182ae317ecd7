"""Blacklist: the first page ordered by expiry, from the index, vs SCAN + TTL for every key."""

from __future__ import annotations

import statistics
import time

import redis

from bench.data import PREFIX
from bench.fixtures import bench_redis
from bench.harness import Context, Figure, percentile, time_each
from sessionmon.core.blacklist import Blacklist

PAGE = 200


def scan_ttl_first_page(client: redis.Redis, prefix: str, limit: int = PAGE) -> list[bytes]:
    """What Redis GUIs do: SCAN every key, TTL each (pipelined per batch), sort, GET a page."""
    ttls = scan_ttls(client, prefix)
    ttls.sort()
    page = [k for _, k in ttls[:limit]]
    if page:
        client.mget(page)
    return page


def scan_ttls(client: redis.Redis, prefix: str) -> list[tuple[int, bytes]]:
    """(TTL, key) of every blacklist key of one server: SCAN, then TTL pipelined per batch."""
    ttls: list[tuple[int, bytes]] = []
    cursor = 0
    while True:
        cursor, keys = client.scan(cursor, match=prefix + "bl:*", count=1000)
        keys = [k for k in keys if not k.endswith(b":index")]
        if keys:
            pipe = client.pipeline(transaction=False)
            for k in keys:
                pipe.ttl(k)
            ttls.extend((t, k) for t, k in zip(pipe.execute(), keys, strict=True) if t >= 0)
        if cursor == 0:
            return ttls


def run(ctx: Context) -> None:
    n = ctx.size(1_000_000, 10_000)
    server = bench_redis(n)
    client = server.client()
    try:
        bl = Blacklist(client, prefix=PREFIX)
        keys = bl.count()
        first = bl.page(0, PAGE)
        assert len(first) == PAGE and first[0].expires_at <= first[-1].expires_at
        page_times = time_each(lambda: bl.page(0, PAGE), 200 if ctx.quick else 500)
        p50 = percentile(page_times, 50) * 1000
        p99 = percentile(page_times, 99) * 1000
        baseline_runs = 3 if ctx.quick else 2
        base_times = []
        for _ in range(baseline_runs):
            start = time.perf_counter()
            got = scan_ttl_first_page(client, PREFIX)
            base_times.append(time.perf_counter() - start)
        assert len(got) == PAGE
        base = statistics.median(base_times) * 1000
        label = f"first page of {PAGE} by expiry, {keys:,} keys, p50"
        ctx.report(
            Figure(
                "blacklist page",
                label,
                p50,
                "ms",
                baseline=base,
                baseline_what="SCAN + TTL every key",
                ratio=base / p50,
                target="<= 5 ms",
                met=p50 <= 5,
                note=f"p99 {p99:.2f} ms",
            )
        )
    finally:
        client.close()
