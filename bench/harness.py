"""Timing helpers and result reporting shared by every benchmark.

The machine is shared and noisy: absolute figures drift, ratios against a baseline measured in the
same run (interleaved where possible) hold. Every figure is printed as it is measured and collected
for the summary table at the end.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Figure:
    """One measured figure, with its same-run baseline and target."""

    bench: str
    what: str
    value: float
    unit: str
    baseline: float | None = None
    baseline_what: str = ""
    ratio: float | None = None  # how many times better than the baseline (> 1 is better)
    target: str = ""
    met: bool | None = None
    note: str = ""

    def line(self) -> str:
        text = f"  {self.what}: {fmt(self.value, self.unit)}"
        if self.baseline is not None:
            text += f"  | baseline ({self.baseline_what}): {fmt(self.baseline, self.unit)}"
        if self.ratio is not None:
            text += f"  | ratio {self.ratio:.2f}x"
        if self.target:
            verdict = "" if self.met is None else (" MET" if self.met else " MISSED")
            text += f"  | target {self.target}{verdict}"
        if self.note:
            text += f"  ({self.note})"
        return text


@dataclass
class Context:
    """What every benchmark gets: the size to run at and where to put figures."""

    quick: bool
    figures: list[Figure] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)

    def size(self, full: int, quick: int) -> int:
        return quick if self.quick else full

    def sessions(self, full: int, quick: int) -> int:
        """The session count of the store and monitor benchmarks (``--sessions`` overrides)."""
        return int(self.options.get("sessions") or self.size(full, quick))

    def report(self, fig: Figure) -> Figure:
        self.figures.append(fig)
        print(fig.line(), flush=True)
        return fig


def fmt(value: float, unit: str) -> str:
    if unit in ("ops/s", "req/s"):
        return f"{value:,.0f} {unit}"
    if unit in ("ms", "us", "s"):
        return f"{value:,.2f} {unit}" if value < 100 else f"{value:,.0f} {unit}"
    if unit == "MiB":
        return f"{value:,.0f} MiB"
    if unit == "%":
        return f"{value:.2f}%"
    return f"{value:,.3g} {unit}"


def percentile(values: list[float], p: float) -> float:
    """The ``p``-th percentile (nearest rank) of ``values``."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


def time_each(fn: Callable[[], Any], n: int) -> list[float]:
    """Durations (seconds) of ``n`` calls of ``fn``."""
    out = []
    perf = time.perf_counter
    for _ in range(n):
        start = perf()
        fn()
        out.append(perf() - start)
    return out


def throughput(fn: Callable[[], Any], seconds: float) -> float:
    """Calls per second of ``fn`` over about ``seconds`` (batches of 100 calls)."""
    perf = time.perf_counter
    calls = 0
    start = perf()
    deadline = start + seconds
    while True:
        for _ in range(100):
            fn()
        calls += 100
        now = perf()
        if now >= deadline:
            return calls / (now - start)


def compare_throughput(
    subject: Callable[[], Any],
    baseline: Callable[[], Any],
    *,
    seconds: float,
    batch: int = 100,
) -> tuple[float, float, float]:
    """Both, in alternating batches of ``batch`` calls for about ``seconds`` each, so both see the
    same noise; returns (subject ops/s, baseline ops/s, subject / baseline)."""
    for _ in range(batch):  # warm up both paths
        subject()
        baseline()
    gc.collect()
    perf = time.perf_counter
    spent = [0.0, 0.0]
    calls = 0
    fns = (subject, baseline)
    while spent[0] < seconds or spent[1] < seconds:
        for side in (0, 1) if calls % (2 * batch) == 0 else (1, 0):
            fn = fns[side]
            start = perf()
            for _ in range(batch):
                fn()
            spent[side] += perf() - start
        calls += batch
    a, b = calls / spent[0], calls / spent[1]
    return a, b, a / b


def summary_markdown(figures: list[Figure]) -> str:
    """The figures as a markdown table (what BENCHMARKS.md shows)."""
    lines = [
        "| Benchmark | Figure | Value | Baseline (same run) | Ratio | Target | Met |",
        "|---|---|---|---|---|---|---|",
    ]
    for f in figures:
        base = f"{fmt(f.baseline, f.unit)} ({f.baseline_what})" if f.baseline is not None else "-"
        ratio = f"{f.ratio:.2f}x" if f.ratio is not None else "-"
        met = "-" if f.met is None else ("yes" if f.met else "**no**")
        what = f.what + (f" ({f.note})" if f.note else "")
        lines.append(
            f"| {f.bench} | {what} | {fmt(f.value, f.unit)} | {base} | {ratio} | "
            f"{f.target or '-'} | {met} |"
        )
    return "\n".join(lines)
