"""Run the benchmarks: ``python -m bench [--quick] [--only NAME[,NAME]] [--markdown FILE]
[--monitor-runs N]``."""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import sys
import time
import traceback

from bench.harness import Context, summary_markdown

# name -> (module, what it measures); run in this order.
BENCHMARKS = {
    "blacklist": ("bench.bench_blacklist", "blacklist first page by expiry vs SCAN + TTL"),
    "check": ("bench.bench_check", "revocation check vs jwt.decode + EXISTS"),
    "cached": ("bench.bench_cached", "cached revocation check and propagation delay"),
    "rotate": ("bench.bench_rotate", "silent refresh with refresh-token rotation vs without"),
    "events": ("bench.bench_events", "authenticate and silent refresh with the feed on vs off"),
    "logout": ("bench.bench_logout", "force-logout one session and a user with 1,000 sessions"),
    "revoke-query": (
        "bench.bench_revoke_query",
        "logout --where: 1,000,000 sessions revoked by one query, dry run = revoked",
    ),
    "revoke-query-pg": (
        "bench.bench_revoke_query:run_pg",
        "the same on PostgreSQL (a scratch schema on SESSIONMON_BENCH_PG_URL)",
    ),
    "monitor": ("bench.bench_monitor", "monitor first paint, tick CPU, RSS, filter/sort"),
    "pgquery": ("bench.bench_pgquery", "PostgreSQL keyset window and trigram filter vs plain SQL"),
    "rotation": ("bench.bench_rotation", "failed verifications across key rotations under load"),
    "web": ("bench.bench_web", "GET /me under uvicorn --workers 4 vs no auth and a naive check"),
    "webprop": ("bench.bench_webprop", "force-logout until the last of 4 cached workers rejects"),
    "cluster": (
        "bench.bench_cluster",
        "3-master Redis Cluster: authenticate, first page at 10M keys, a 1,000-session logout",
    ),
}


def _count(text: str) -> int:
    """``10m``, ``500k`` or ``1000000``."""
    t = text.strip().lower().replace("_", "").replace(",", "")
    scale = {"k": 1_000, "m": 1_000_000}.get(t[-1:], 1)
    try:
        value = int(float(t[:-1] if scale > 1 else t) * scale)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a count: {text!r} (e.g. 10m, 500k)") from None
    if value < 1:
        raise argparse.ArgumentTypeError("the count must be positive")
    return value


def machine() -> str:
    """nproc, CPU model, Python: the facts BENCHMARKS.md records."""
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"nproc {os.cpu_count()}, CPU {cpu}, Python {platform.python_version()}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="every benchmark at a small size")
    names_help = f"comma-separated names: {', '.join(BENCHMARKS)}"
    parser.add_argument("--only", action="append", default=[], help=names_help)
    parser.add_argument("--markdown", help="also write the summary table to this file")
    parser.add_argument(
        "--monitor-runs", type=int, help="monitor probe runs (default 3 full, 1 quick)"
    )
    parser.add_argument(
        "--sessions",
        type=_count,
        help="sessions for the store, monitor and revoke-query benchmarks, e.g. 10m (default 1m, "
        "quick 10k; revoke-query: 20k)",
    )
    args = parser.parse_args(argv)
    names = [n.strip() for item in args.only for n in item.split(",") if n.strip()]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; {names_help}")
    selected = names or list(BENCHMARKS)

    from bench.fixtures import stop_all

    ctx = Context(
        quick=args.quick, options={"monitor_runs": args.monitor_runs, "sessions": args.sessions}
    )
    print(f"sessionmon benchmarks ({'quick' if args.quick else 'full'}): {machine()}", flush=True)
    failed = []
    started = time.perf_counter()
    try:
        for name in selected:
            module, what = BENCHMARKS[name]
            print(f"\n== {name}: {what}", flush=True)
            t0 = time.perf_counter()
            try:
                path, _, func = module.partition(":")
                getattr(importlib.import_module(path), func or "run")(ctx)
            except Exception:
                failed.append(name)
                traceback.print_exc()
            print(f"  ({time.perf_counter() - t0:.1f}s)", flush=True)
    finally:
        stop_all()
    table = summary_markdown(ctx.figures)
    print(f"\n== summary ({time.perf_counter() - started:.0f}s)\n{table}")
    if args.markdown:
        with open(args.markdown, "w") as fh:
            fh.write(table + "\n")
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
