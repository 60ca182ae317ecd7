"""Silent refresh: ``Auth.authenticate`` with an absent access token and a refresh token, with
refresh-token rotation (the compare-and-set, a new refresh token minted) vs without it (the
original design: one access-token update), interleaved in the same run on the same store and
Redis. Target: rotation >= 0.8x. Each rotating session presents its newest refresh token, as a
browser would; the non-rotating ones keep theirs."""

from __future__ import annotations

from collections.abc import Callable

from bench.bench_check import scratch_db
from bench.data import PREFIX
from bench.fixtures import KEYS, bench_redis
from bench.harness import Context, Figure, compare_throughput
from sessionmon.core.auth import Auth
from sessionmon.core.blacklist import Blacklist, connect
from sessionmon.core.policy import SessionPolicy
from sessionmon.core.store import SqliteStore
from sessionmon.core.tokens import TokenCodec

SESSIONS = 200


def refresher(auth: Auth, name: str) -> Callable[[], bool]:
    """One silent refresh per call, round-robin over ``SESSIONS`` sessions of ``auth``."""
    tokens = [auth.login(f"{name}{i}", f"{name}{i}@example.com", name)[2] for i in range(SESSIONS)]
    position = 0

    def refresh() -> bool:
        nonlocal position
        i = position = (position + 1) % SESSIONS
        result = auth.authenticate(None, tokens[i])
        if result.new_refresh_token is not None:
            tokens[i] = result.new_refresh_token
        return result.ok

    return refresh


def run(ctx: Context) -> None:
    server = bench_redis(ctx.size(1_000_000, 10_000))
    client = connect(server.url)
    store = SqliteStore(scratch_db("rotate"))
    try:
        blacklist, codec = Blacklist(client, prefix=PREFIX), TokenCodec(KEYS)
        rotating = Auth(store, blacklist, codec)
        plain = Auth(store, blacklist, codec, policy=SessionPolicy(rotate_refresh=False))
        subject, baseline = refresher(rotating, "rot"), refresher(plain, "plain")
        for _ in range(SESSIONS):
            assert subject() and baseline()
        seconds = 1.0 if ctx.quick else 10.0
        a, b, ratio = compare_throughput(subject, baseline, seconds=seconds)
        ctx.report(
            Figure(
                "silent refresh",
                "SQLite: authenticate with silent refresh, rotating (CAS + new refresh token)",
                a,
                "ops/s",
                baseline=b,
                baseline_what="without rotation",
                ratio=ratio,
                target=">= 0.8x baseline",
                met=ratio >= 0.8,
                note=f"{1e6 / a:.0f} us vs {1e6 / b:.0f} us per refresh",
            )
        )
    finally:
        client.close()
        store.close()
