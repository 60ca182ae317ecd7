"""The activity feed's cost on the request path: the same calls with events on (a StreamWriter on
the bench Redis, as ``open_runtime`` builds it) vs off (``--no-events``), interleaved in the same
run on the same store, Redis and keys. Target: events on >= 0.95x (<= 5% slower).

Three paths: ``authenticate`` with a valid access token (not an event: the check costs nothing),
``authenticate`` with a forged token (a ``rejection`` event every call: the worst case) and a
silent refresh with rotation (a ``rotation`` event every call)."""

from __future__ import annotations

from collections.abc import Callable

from bench.bench_check import scratch_db
from bench.bench_rotate import SESSIONS, refresher
from bench.data import PREFIX
from bench.fixtures import KEYS, bench_redis
from bench.harness import Context, Figure, compare_throughput
from sessionmon.core.auth import Auth
from sessionmon.core.blacklist import Blacklist, connect
from sessionmon.core.event_stream import DEFAULT_MAXLEN, StreamWriter, stream_key
from sessionmon.core.store import SqliteStore
from sessionmon.core.tokens import TokenCodec


def _valid(auth: Auth, name: str) -> Callable[[], bool]:
    access = auth.login(name, f"{name}@example.com", name)[1]
    return lambda: auth.authenticate(access).ok


def _forged(auth: Auth, name: str) -> Callable[[], bool]:
    access = auth.login(name, f"{name}@example.com", name)[1]
    forged = access[:-6] + ("AAAAAA" if not access.endswith("AAAAAA") else "BBBBBB")
    return lambda: not auth.authenticate(forged, ip="203.0.113.9").ok


def run(ctx: Context) -> None:
    server = bench_redis(ctx.size(1_000_000, 10_000))
    client = connect(server.url)
    store = SqliteStore(scratch_db("events"))
    writer = StreamWriter(client, PREFIX, maxlen=DEFAULT_MAXLEN)
    seconds = 1.0 if ctx.quick else 10.0
    try:
        blacklist, codec = Blacklist(client, prefix=PREFIX), TokenCodec(KEYS)
        on = Auth(store, blacklist, codec, events=writer)
        off = Auth(store, blacklist, codec)
        paths = (
            ("authenticate, valid access token (no event)", _valid, "on"),
            ("authenticate, forged token (a rejection event per call)", _forged, "on"),
            ("silent refresh with rotation (a rotation event per call)", refresher, "on"),
        )
        for what, make, name in paths:
            subject, baseline = make(on, f"{name}-on"), make(off, f"{name}-off")
            if make is refresher:
                for _ in range(SESSIONS):
                    assert subject() and baseline()
            a, b, ratio = compare_throughput(subject, baseline, seconds=seconds)
            ctx.report(
                Figure(
                    "events",
                    f"SQLite: {what}, events on",
                    a,
                    "ops/s",
                    baseline=b,
                    baseline_what="events off",
                    ratio=ratio,
                    target=">= 0.95x baseline",
                    met=ratio >= 0.95,
                    note=f"{1e6 / a:.1f} us vs {1e6 / b:.1f} us per call",
                )
            )
        writer.flush(10)
        ctx.report(
            Figure(
                "events",
                "events dropped by the writer during the run (queue full or Redis down)",
                writer.dropped,
                "events",
                note=f"{writer.written:,} written",
            )
        )
    finally:
        writer.close()
        client.delete(stream_key(PREFIX))
        client.close()
        store.close()
