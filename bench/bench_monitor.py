"""The monitor, headless (``App.run_test``), each measurement in a fresh process: first paint with
data, CPU of the 1 Hz tick, peak RSS, sort and filter at 1M sessions + 1M blacklist keys; against a
plain Textual ``DataTable`` view of the same sessions at 10k and 100k rows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.data import sessions_db
from bench.fixtures import bench_redis
from bench.harness import Context, Figure

ROOT = Path(__file__).resolve().parent.parent


def probe(*args: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.monitor_probe", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=1800,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"monitor probe failed: {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(ctx: Context) -> None:
    n = ctx.size(1_000_000, 10_000)
    tick = 3.0 if ctx.quick else 30.0
    sizes = [10_000] if ctx.quick else [10_000, 100_000]
    data = sessions_db(n)
    server = bench_redis(n)
    baselines = {}
    for rows in sizes:
        baselines[rows] = probe(
            "datatable", str(sessions_db(max(rows, 10_000)).path), str(rows), str(tick)
        )
        b = baselines[rows]
        print(
            f"  DataTable baseline, {rows:,} rows: first paint {b['first_paint_s'] * 1000:.0f} ms, "
            f"tick {b['tick_cpu_pct']:.1f}% of a core, peak RSS {b['peak_rss_mib']:.0f} MiB",
            flush=True,
        )
    m = probe("monitor", str(data.path), server.url, str(tick))
    big, small = sizes[-1], sizes[0]
    label = f"{m['rows']:,} sessions + {m['keys']:,} keys"
    paint = m["first_paint_s"] * 1000
    base_paint = baselines[big]["first_paint_s"] * 1000
    ctx.report(
        Figure(
            "monitor",
            f"first paint with data, {label}",
            paint,
            "ms",
            baseline=base_paint,
            baseline_what=f"DataTable, {big:,} rows",
            ratio=base_paint / paint,
            target="<= 1 s",
            met=paint <= 1000 and m["shows_data"],
            note=f"DataTable at {small:,} rows: {baselines[small]['first_paint_s'] * 1000:.0f} ms",
        )
    )
    base_tick = baselines[small]["tick_cpu_pct"]
    ctx.report(
        Figure(
            "monitor",
            f"CPU of the 1 Hz tick, {m['rows']:,} sessions ({tick:.0f} s)",
            m["tick_cpu_pct"],
            "%",
            baseline=base_tick,
            baseline_what=f"DataTable, {small:,} rows",
            ratio=base_tick / max(m["tick_cpu_pct"], 1e-9),
            target="<= 3% of a core",
            met=m["tick_cpu_pct"] <= 3,
            note=f"DataTable at {big:,} rows: {baselines[big]['tick_cpu_pct']:.1f}%; "
            f"with the 1 Hz poll loop on: {m['tick_poll_cpu_pct']:.1f}%",
        )
    )
    ctx.report(
        Figure(
            "monitor",
            f"peak RSS, {label}",
            m["peak_rss_mib"],
            "MiB",
            target="<= 400 MiB",
            met=m["peak_rss_mib"] <= 400,
            note=f"VmHWM; {m['peak_after_paint_mib']:.0f} MiB after first paint, "
            f"{m['peak_after_sorts_mib']:.0f} after the sorts, "
            f"{m['peak_after_filter_mib']:.0f} after the filter, the rest clearing it; "
            f"DataTable at {big:,} rows: {baselines[big]['peak_rss_mib']:.0f} MiB",
        )
    )
    sorts = m["sort_s"]
    worst = max(sorts) * 1000
    ctx.report(
        Figure(
            "monitor",
            f"re-sort, result on screen, {m['rows']:,} sessions (worst of {len(sorts)})",
            worst,
            "ms",
            target="<= 300 ms",
            met=worst <= 300,
            note=", ".join(
                f"{lbl} {t * 1000:.0f} ms" for lbl, t in zip(m["sort_labels"], sorts, strict=True)
            ),
        )
    )
    filt = m["filter_s"][0] * 1000
    ctx.report(
        Figure(
            "monitor",
            f"filter, result on screen, {m['rows']:,} sessions",
            filt,
            "ms",
            target="<= 300 ms",
            met=filt <= 300,
            note=f"{m['filter_rows']} matches; clearing the filter: "
            f"{m['clear_filter_s'][0] * 1000:.0f} ms",
        )
    )
