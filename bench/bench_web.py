"""The web path as users run it: authenticated ``GET /me`` through ``examples/webapp.py`` under
``uvicorn --workers 4`` on loopback, driven by ``wrk``, against the same route with no auth
middleware and behind a naive middleware (``jwt.decode`` + one ``EXISTS``), in the same run.

Four servers run side by side (each ``--workers 4``, SQLite + the benchmark Redis): ``no auth``,
``naive``, ``sessionmon`` as it ships (the revocation cache on) and ``sessionmon, cache off``
(``SESSIONMON_REVOCATION_CACHE=0``: one ``EXISTS`` per request). Each round runs wrk against
every one of them in turn, ``SLICES`` times, interleaved (the order rotating), every request with
another session's token; every response must be a 200. An app's round is its slices' requests
over their time. Ratios are per round (the same noise on both sides), then the median over
rounds: the run's figure. The targets are the app's as it ships (cached).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from bench.harness import Context, Figure
from bench.web_setup import WORKERS, Uvicorn, WebSetup, server_stack
from bench.wrk import WrkResult, ensure_wrk, run_async_client, run_wrk

NOAUTH, NAIVE = "no auth", "naive"
PLAIN, CACHED = "sessionmon, cache off", "sessionmon (default: cached)"
APPS = {
    NOAUTH: ("bench.web_apps:noauth", {}),
    NAIVE: ("bench.web_apps:naive", {}),
    PLAIN: ("examples.webapp:app", {"SESSIONMON_REVOCATION_CACHE": "0"}),
    CACHED: ("examples.webapp:app", {}),
}
CONNECTIONS = 32
SLICES = 3  # wrk runs per app and round, interleaved between the apps
BAD_TOKEN = "e30.e30.AAAA"


def check_answers(name: str, server: Uvicorn, token: str, email: str) -> None:
    """The route answers 200 with the token's user (no auth: a fixed user) and, behind either
    middleware, 401 without a valid token."""
    status, body = server.get("/me", token)
    if status != 200:
        raise RuntimeError(f"{name}: GET /me answered {status}: {body[:200]!r}")
    user = json.loads(body)["user"]
    if name != NOAUTH:
        if user["email"] != email:
            raise RuntimeError(f"{name}: /me answered another user")
        for bad in (None, BAD_TOKEN):
            status, _ = server.get("/me", bad)
            if status != 401:
                raise RuntimeError(f"{name}: GET /me with a bad token answered {status}")


def load(
    wrk: str | None, server: Uvicorn, token_file: Path, seconds: float, conns: int
) -> WrkResult:
    """One fixed-duration run of wrk (or, without it, the bounded asyncio client)."""
    if wrk is None:
        return run_async_client(url(server), "/me", token_file, seconds=seconds, connections=conns)
    return run_wrk(wrk, url(server), "/me", token_file, seconds=seconds, connections=conns)


def run(ctx: Context) -> None:
    wrk = ensure_wrk()
    rounds = 2 if ctx.quick else 5
    seconds = 3.0 if ctx.quick else 10.0
    setup = WebSetup("web", ctx.size(1_000_000, 10_000), 200 if ctx.quick else 1000)
    servers: dict[str, Uvicorn] = {}
    try:
        for name, (app, extra) in APPS.items():
            servers[name] = Uvicorn(app, {**setup.env, **extra}).start()
            check_answers(name, servers[name], setup.tokens[0], "user0@example.com")
        generator = (
            f"wrk -t2 -c{CONNECTIONS}, {SLICES} x {seconds / SLICES:.0f} s per app, interleaved"
            if wrk
            else f"NO wrk: a bounded asyncio client, {CONNECTIONS} connections, "
            f"{SLICES} x {seconds / SLICES:.0f} s per app, interleaved"
        )
        print(
            f"  {server_stack()}, --workers {WORKERS}; {generator}, "
            f"{len(setup.tokens)} sessions' tokens in turn; {rounds} rounds",
            flush=True,
        )
        names = list(APPS)
        for name in names:  # warm up: imports, first connections, every worker's caches
            load(wrk, servers[name], setup.token_file, seconds / SLICES, CONNECTIONS)
        results: dict[str, list[WrkResult]] = {n: [] for n in names}
        for r in range(rounds):
            slices: dict[str, list[WrkResult]] = {n: [] for n in names}
            for k in range(SLICES):
                # Interleaved: every app gets a slice in turn (the order rotating), so a round's
                # ratios compare apps under the same load on the machine, and each app's figure
                # averages several draws of which worker takes which of wrk's connections.
                at = (r * SLICES + k) % len(names)
                for name in names[at:] + names[:at]:
                    res = load(wrk, servers[name], setup.token_file, seconds / SLICES, CONNECTIONS)
                    if not res.clean:
                        raise RuntimeError(
                            f"{name}: {res.status_errors} non-2xx responses and "
                            f"{res.socket_errors} socket errors in {res.requests} requests"
                        )
                    slices[name].append(res)
            for name in names:
                results[name].append(merge(slices[name]))
            print(
                f"  round {r + 1}: "
                + "; ".join(
                    f"{n} {results[n][-1].rps:,.0f} req/s p99 {results[n][-1].p99_ms:.1f} ms"
                    for n in names
                ),
                flush=True,
            )
        for name in (PLAIN, CACHED):  # the targets are the app's as it ships (cached)
            report(ctx, name, results, rounds, wrk is not None, targeted=name == CACHED)
    finally:
        for server in servers.values():
            server.stop()
        setup.close()


def merge(slices: list[WrkResult]) -> WrkResult:
    """One round of an app from its slices: requests over time; latencies the slices' worst
    (a p99 of the whole round is not in wrk's summaries: the largest slice p99 bounds it)."""
    return WrkResult(
        requests=sum(s.requests for s in slices),
        seconds=sum(s.seconds for s in slices),
        status_errors=sum(s.status_errors for s in slices),
        socket_errors=sum(s.socket_errors for s in slices),
        p50_ms=statistics.median(s.p50_ms for s in slices),
        p99_ms=max(s.p99_ms for s in slices),
        max_ms=max(s.max_ms for s in slices),
    )


def url(server: Uvicorn) -> str:
    return f"http://127.0.0.1:{server.port}"


def report(
    ctx: Context,
    name: str,
    results: dict[str, list[WrkResult]],
    rounds: int,
    wrk: bool,
    *,
    targeted: bool,
) -> None:
    mine = results[name]
    rps = statistics.median(r.rps for r in mine)
    p99 = statistics.median(r.p99_ms for r in mine)
    for base, target in ((NOAUTH, 0.7), (NAIVE, 1.2)):
        theirs = results[base]
        ratios = [a.rps / b.rps for a, b in zip(mine, theirs, strict=True)]
        ratio = statistics.median(ratios)
        ctx.report(
            Figure(
                "web GET /me",
                f"{name}: requests/s, median of {rounds} rounds",
                rps,
                "req/s",
                baseline=statistics.median(r.rps for r in theirs),
                baseline_what=base,
                ratio=ratio,
                target=f">= {target}x {base}" if targeted else "",
                met=ratio >= target if targeted else None,
                note=("" if wrk else "asyncio client, not wrk; ")
                + "per-round ratios "
                + ", ".join(f"{x:.2f}" for x in ratios),
            )
        )
    ctx.report(
        Figure(
            "web GET /me",
            f"{name}: p99 latency, median of {rounds} rounds",
            p99,
            "ms",
            baseline=statistics.median(r.p99_ms for r in results[NOAUTH]),
            baseline_what=NOAUTH,
            note=f"naive {statistics.median(r.p99_ms for r in results[NAIVE]):.1f} ms; "
            f"every round {', '.join(f'{r.p99_ms:.1f}' for r in mine)} ms",
        )
    )
