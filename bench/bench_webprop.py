"""A force-logout in another process until the LAST of 4 uvicorn workers rejects the token, with
``SESSIONMON_REVOCATION_CACHE=1`` (every worker answers from its own cache).

``uvicorn --workers 4`` shares one listening socket, so the kernel gives each new connection to
some worker. The app is ``examples.webapp:app`` with an ``X-Worker-Pid`` header
(``bench.web_apps:sessionmon_pid``); the benchmark opens keep-alive connections until it holds one
to each of the 4 workers, and checks the pid on every answer.

Each trial takes a fresh session: one thread per worker polls ``GET /me`` with its token until
every worker has answered 200 three times (its cache holds "not revoked" and its invalidation
channel is confirmed, as under traffic), then ``bench.force_logout`` (``Auth.force_logout``, what
``sessionmon logout`` runs, in its own process) logs the session out. The delay of a worker is
from just before that call to the first ``401 revoked`` it answers; the trial's figure is the
slowest worker's. A poll is one HTTP round trip, so the figures include up to one of those. The
baseline is the same app without the cache (every check asks Redis), in alternating trials: what
is left there is the force-logout's own write and the polling.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import threading
import time

from bench.harness import Context, Figure, percentile
from bench.web_setup import ROOT, WORKERS, Uvicorn, WebSetup, server_stack

CACHED, UNCACHED = "cached", "uncached"
WARM = 3  # 200s each worker answers before the force-logout
DEADLINE = 10.0


class Worker:
    """A keep-alive connection that one uvicorn worker (``pid``) serves."""

    def __init__(self, conn: http.client.HTTPConnection, pid: str) -> None:
        self.conn = conn
        self.pid = pid

    def me(self, token: str) -> tuple[int, str]:
        """(status, reason of a 401) for ``GET /me``; raises if another worker answered."""
        self.conn.request("GET", "/me", headers={"Authorization": f"Bearer {token}"})
        response = self.conn.getresponse()
        body = response.read()
        if response.getheader("x-worker-pid") != self.pid:
            raise RuntimeError("the connection moved to another worker (reconnected)")
        reason = json.loads(body).get("reason", "") if response.status == 401 else ""
        return response.status, reason


def connect_workers(server: Uvicorn, token: str, count: int) -> list[Worker]:
    """One connection per worker: new connections until ``count`` distinct pids answered."""
    workers: dict[str, Worker] = {}
    deadline = time.monotonic() + 30
    while len(workers) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(workers)} of {count} workers answered in 30 s")
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request("GET", "/me", headers={"Authorization": f"Bearer {token}"})
        response = conn.getresponse()
        response.read()
        pid = response.getheader("x-worker-pid") or ""
        if response.status != 200 or not pid:
            raise RuntimeError(f"GET /me answered {response.status} (pid {pid or '?'})")
        if pid in workers:
            conn.close()
        else:
            workers[pid] = Worker(conn, pid)
    return list(workers.values())


def trial(
    workers: list[Worker], token: str, sid: str, revoker: subprocess.Popen[str]
) -> list[float]:
    """Seconds from the force-logout to each worker's first 401 (in worker order)."""
    warm = [threading.Event() for _ in workers]
    seen: list[float | None] = [None] * len(workers)
    errors: list[str] = []

    def poll(i: int, worker: Worker) -> None:
        ok = 0
        deadline = time.monotonic() + 2 * DEADLINE
        try:
            while time.monotonic() < deadline:
                status, reason = worker.me(token)
                if status == 200:
                    ok += 1
                    if ok >= WARM:
                        warm[i].set()
                elif status == 401 and reason == "revoked" and warm[i].is_set():
                    seen[i] = time.time()
                    return
                else:
                    errors.append(f"worker {worker.pid}: {status} {reason}")
                    return
            errors.append(f"worker {worker.pid}: no 401 within {2 * DEADLINE:.0f} s")
        except Exception as exc:  # reported by the trial
            errors.append(f"worker {worker.pid}: {exc}")
        finally:
            warm[i].set()

    threads = [
        threading.Thread(target=poll, args=(i, w), daemon=True) for i, w in enumerate(workers)
    ]
    for t in threads:
        t.start()
    for event in warm:
        event.wait(DEADLINE)
    if errors:
        raise RuntimeError("; ".join(errors))
    assert revoker.stdin is not None and revoker.stdout is not None
    revoker.stdin.write(sid + "\n")
    revoker.stdin.flush()
    start, _, outcome = revoker.stdout.readline().strip().partition(" ")
    for t in threads:
        t.join(2 * DEADLINE)
    if outcome != "ok":
        raise RuntimeError(f"force-logout of {sid[:6]}...: {outcome or 'no answer'}")
    if errors or any(s is None for s in seen):
        raise RuntimeError("; ".join(errors) or "a worker never answered 401")
    return [s - float(start) for s in seen if s is not None]


def run(ctx: Context) -> None:
    trials = 30 if ctx.quick else 200
    setup = WebSetup("webprop", ctx.size(1_000_000, 10_000), 2 * trials + 1)
    servers = {
        name: Uvicorn(
            "bench.web_apps:sessionmon_pid",
            {**setup.env, "SESSIONMON_REVOCATION_CACHE": flag},
            args=("--timeout-keep-alive", "120"),
        )
        for name, flag in ((CACHED, "1"), (UNCACHED, "0"))
    }
    revoker: subprocess.Popen[str] | None = None
    workers: dict[str, list[Worker]] = {}
    try:
        for name, server in servers.items():
            server.start()
            workers[name] = connect_workers(server, setup.tokens[-1], WORKERS)
        print(
            f"  {server_stack()}, --workers {WORKERS}, one connection to each worker; "
            f"{trials} trials each, alternating with the same app without the cache",
            flush=True,
        )
        revoker = subprocess.Popen(
            [sys.executable, "-m", "bench.force_logout"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=setup.env,
        )
        assert revoker.stdout is not None
        if revoker.stdout.readline().strip() != "ready":
            raise RuntimeError("the force-logout process did not start")
        last: dict[str, list[float]] = {CACHED: [], UNCACHED: []}
        each: dict[str, list[float]] = {CACHED: [], UNCACHED: []}
        sessions = iter(setup.sessions)
        for i in range(trials):
            for name in (CACHED, UNCACHED) if i % 2 == 0 else (UNCACHED, CACHED):
                session, access, _ = next(sessions)
                delays = trial(workers[name], access, session.id, revoker)
                last[name].append(max(delays))
                each[name].extend(delays)
        p50, p99, worst = (
            percentile(last[CACHED], 50),
            percentile(last[CACHED], 99),
            max(last[CACHED]),
        )
        base = percentile(last[UNCACHED], 99)
        ctx.report(
            Figure(
                "web, 4 workers",
                f"force-logout until the last of {WORKERS} workers rejects (p99, {trials} trials)",
                p99 * 1000,
                "ms",
                baseline=base * 1000,
                baseline_what="the same without the cache: every check asks Redis",
                ratio=base / p99,
                target="p99 <= 50 ms",
                met=p99 <= 0.05,
                note=f"p50 {p50 * 1000:.1f} ms, max {worst * 1000:.1f} ms; any one worker: "
                f"p50 {percentile(each[CACHED], 50) * 1000:.1f} ms, "
                f"p99 {percentile(each[CACHED], 99) * 1000:.1f} ms; without the cache: "
                f"p50 {percentile(last[UNCACHED], 50) * 1000:.1f} ms",
            )
        )
    finally:
        for conns in workers.values():
            for w in conns:
                w.conn.close()
        if revoker is not None:
            if revoker.stdin is not None:
                revoker.stdin.close()
            try:
                revoker.wait(timeout=10)
            except subprocess.TimeoutExpired:
                revoker.kill()
        for server in servers.values():
            server.stop()
        setup.close()
