"""Cached revocation check (``CachedRevocations``) vs ``jwt.decode`` + one ``EXISTS``, and how
soon a revocation made by another process is seen."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench.bench_check import CheckSetup, authenticate_check, baseline_check
from bench.data import PREFIX
from bench.harness import Context, Figure, compare_throughput, percentile
from sessionmon.core.auth import Auth
from sessionmon.core.revocation_cache import CachedRevocations
from sessionmon.core.tokens import Reason

ROOT = Path(__file__).resolve().parent.parent


def propagation(setup: CheckSetup, auth: Auth, count: int, pause: float) -> list[float]:
    """Seconds from another process starting a revocation to ``authenticate`` rejecting it, for
    ``count`` sessions, while this process checks that session's token as fast as it can."""
    targets = setup.sessions[:count]
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.revoker", setup.server.url, PREFIX, str(pause)]
        + [s.id for s, _, _ in targets],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdin is not None and proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    started: dict[str, float] = {}

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            t, sid = line.split()
            started[sid] = float(t)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    proc.stdin.write("go\n")
    proc.stdin.flush()
    seen: dict[str, float] = {}
    try:
        for session, access, _ in targets:
            deadline = time.monotonic() + 10 + pause * 2
            while auth.authenticate(access).reason is not Reason.REVOKED:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"revocation of {session.id[:6]}... not seen in 10 s")
            seen[session.id] = time.time()
        proc.wait(timeout=30)
        reader.join(timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
    return [seen[sid] - started[sid] for sid in seen]


def run(ctx: Context) -> None:
    n = ctx.size(1_000_000, 10_000)
    setup = CheckSetup(n, "cached")
    cache = CachedRevocations(setup.blacklist)
    try:
        if not cache.start(wait=10):
            raise RuntimeError(f"the revocation cache did not go live: {cache.last_error}")
        auth = Auth(setup.store, setup.blacklist, setup.codec, revocation_cache=cache)
        subject = authenticate_check(auth, setup.token_cycle())
        baseline = baseline_check(setup.client, setup.token_cycle())
        for _ in range(len(setup.tokens)):
            assert subject() and baseline()
        seconds = 1.0 if ctx.quick else 10.0
        before = cache.stats.hits, cache.stats.misses
        a, b, ratio = compare_throughput(subject, baseline, seconds=seconds)
        hits, misses = cache.stats.hits - before[0], cache.stats.misses - before[1]
        ctx.report(
            Figure(
                "revocation check, cached",
                "authenticate with CachedRevocations",
                a,
                "ops/s",
                baseline=b,
                baseline_what="jwt.decode + EXISTS",
                ratio=ratio,
                target=">= 3x baseline",
                met=ratio >= 3,
                note=f"{1e6 / a:.0f} us vs {1e6 / b:.0f} us; "
                f"{hits / max(1, hits + misses):.1%} answered from memory",
            )
        )
        count = 30 if ctx.quick else 200
        delays = propagation(setup, auth, count, pause=0.03)
        p50, p99, worst = (
            percentile(delays, 50) * 1000,
            percentile(delays, 99) * 1000,
            max(delays) * 1000,
        )
        ctx.report(
            Figure(
                "revocation check, cached",
                f"revocation by another process seen after (p50, {len(delays)} revocations)",
                p50,
                "ms",
                target="<= 50 ms",
                met=worst <= 50,
                note=f"p99 {p99:.2f} ms, max {worst:.2f} ms; checker busy in a loop",
            )
        )
        setup.blacklist.unrevoke([setup.blacklist.sid_key(s.id) for s, _, _ in setup.sessions])
        idle = 1.0 if ctx.quick else 5.0
        time.sleep(1.5)  # the heartbeat pauses one second after the last check
        cpu0, wall0 = time.process_time(), time.perf_counter()
        time.sleep(idle)
        cpu = (time.process_time() - cpu0) / (time.perf_counter() - wall0) * 100
        ctx.report(
            Figure(
                "revocation check, cached",
                "invalidation thread CPU while no checks come in",
                cpu,
                "%",
                note="% of one core",
            )
        )
    finally:
        cache.close()
        setup.close()
