"""PostgreSQL read model against the plain ways: the rows around a session deep in the order by
key (``keyset.window``) vs ``OFFSET`` paging to the same place, and the filter through the
``pg_trgm`` index vs the same ``ILIKE '%x%'`` with the index unusable (bitmap scans off)."""

from __future__ import annotations

import statistics
import time

from bench import pg_data
from bench.harness import Context, Figure
from sessionmon.core.store import ViewQuery, keyset
from sessionmon.core.store.postgres import PostgresReader

FILTER = "user42@"
WINDOW = 128


def _median_ms(fn, repeat: int) -> tuple[float, list[float]]:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000, times


def run(ctx: Context) -> None:
    why = pg_data.available()
    if why is not None:
        print(f"  PostgreSQL skipped: {why}", flush=True)
        return
    n = ctx.sessions(1_000_000, 10_000)
    data = pg_data.pg_sessions_db(n)
    reader = PostgresReader(data.url)
    try:
        now = time.time()
        query = ViewQuery("last_seen_at")
        d = keyset.POSTGRES
        order_by = d.order_by(d.columns(query.sort), query.descending)
        base_sql = f"SELECT seq FROM sessions WHERE refresh_exp > %s ORDER BY {order_by}"
        live = reader.count_live(now)
        at = live // 2
        key = reader._all(base_sql + " OFFSET %s LIMIT 1", (now, at))[0][0]
        repeat = 5 if ctx.quick else 20

        def by_key() -> None:
            keyset.window(reader._all, d, query.sort, query.descending, now, key, WINDOW)

        def by_offset() -> None:
            reader._all(base_sql + " OFFSET %s LIMIT %s", (now, at - WINDOW, 3 * WINDOW))

        keyed, keyed_all = _median_ms(by_key, repeat)
        offset, _ = _median_ms(by_offset, repeat)
        ctx.report(
            Figure(
                "pg-query",
                f"PostgreSQL: {3 * WINDOW} rows around row {at:,} of {live:,} ({query.label})",
                keyed,
                "ms",
                baseline=offset,
                baseline_what="OFFSET paging to the same rows",
                ratio=offset / keyed,
                note=f"median of {repeat}; max {max(keyed_all) * 1000:.1f} ms",
            )
        )

        text = ViewQuery(text=FILTER)
        trigram, trigram_all = _median_ms(lambda: reader.order(text, now), 5)

        def without_index() -> None:
            reader._all("SET enable_bitmapscan = off")
            try:
                reader.order(text, now)
            finally:
                reader._all("RESET enable_bitmapscan")

        plain, _ = _median_ms(without_index, 3)
        found = len(reader.order(text, now))
        ctx.report(
            Figure(
                "pg-query",
                f"PostgreSQL: filter {FILTER!r} over {live:,} sessions ({found} matches)",
                trigram,
                "ms",
                baseline=plain,
                baseline_what="the same ILIKE without the trigram index",
                ratio=plain / trigram,
                target="<= 300 ms",
                met=max(trigram_all) * 1000 <= 300,
                note=f"median of 5; max {max(trigram_all) * 1000:.1f} ms",
            )
        )
    finally:
        reader.close()
