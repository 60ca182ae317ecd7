"""Key rotation under load: threads mint and verify tokens (a minting and a verifying "process",
each with its own view of one key directory) while the key set is rotated several times.

Reports the failed verifications across the rotations (target 0) and the verification rate during
rotations against the same threads' rate with no rotation (the cost of watching the key set).
"""

from __future__ import annotations

import shutil
import threading
import time

from bench.data import CACHE_DIR
from bench.harness import Context, Figure
from sessionmon.core.keydir import KeyDirectory
from sessionmon.core.keysource import LiveKeys
from sessionmon.core.tokens import ACCESS, TokenCodec, TokenRejected

THREADS = 4


def _run(directory: KeyDirectory, seconds: float, rotations: int) -> tuple[int, int, float]:
    """(verifications, failures, elapsed) with ``rotations`` rotations spread over the run."""
    minter = TokenCodec(LiveKeys(directory))
    verifier = TokenCodec(LiveKeys(directory))
    stop = threading.Event()
    counts = [0] * THREADS
    failures = [0] * THREADS

    def work(i: int) -> None:
        while not stop.is_set():
            token, _ = minter.mint(ACCESS, sub="u", sid="s", ttl=600)
            try:
                verifier.verify(token)
                counts[i] += 1
            except TokenRejected:
                failures[i] += 1

    threads = [threading.Thread(target=work, args=(i,)) for i in range(THREADS)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for _ in range(rotations):
        time.sleep(seconds / (rotations + 1))
        directory.rotate(overlap=3600)
    time.sleep(seconds / (rotations + 1) if rotations else seconds)
    stop.set()
    for t in threads:
        t.join()
    return sum(counts), sum(failures), time.perf_counter() - start


def run(ctx: Context) -> None:
    seconds = ctx.size(10, 2)
    rotations = ctx.size(10, 3)
    for algorithm in ("HS256", "ES256"):
        path = CACHE_DIR / f"keys-rotation-{algorithm}"
        shutil.rmtree(path, ignore_errors=True)
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        directory = KeyDirectory(path, algorithm)
        directory.ensure()
        steady, steady_failed, steady_time = _run(directory, seconds, 0)
        done, failed, elapsed = _run(directory, seconds, rotations)
        ctx.report(
            Figure(
                "rotation",
                f"{algorithm} failed verifications across {rotations} rotations "
                f"({done:,} verified, {THREADS} threads)",
                failed,
                "failures",
                target="0",
                met=failed == 0 and steady_failed == 0,
            )
        )
        rate, base = done / elapsed, steady / steady_time
        ctx.report(
            Figure(
                "rotation",
                f"{algorithm} mint + verify during rotations",
                rate,
                "ops/s",
                baseline=base,
                baseline_what="same threads, no rotation",
                ratio=rate / base if base else None,
            )
        )
        shutil.rmtree(path, ignore_errors=True)
