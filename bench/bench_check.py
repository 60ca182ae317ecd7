"""Revocation check: ``Auth.authenticate`` with a valid access token (verify + one EXISTS for jti
and sid) vs the flask-jwt-extended pattern: ``jwt.decode`` + one ``EXISTS`` of the jti key."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jwt
import redis

from bench.data import CACHE_DIR, PREFIX
from bench.fixtures import KEYS, SECRET, bench_redis
from bench.harness import Context, Figure, compare_throughput
from sessionmon.core.auth import Auth
from sessionmon.core.blacklist import Blacklist, connect
from sessionmon.core.store import SqliteStore
from sessionmon.core.tokens import TokenCodec

SESSIONS = 200


def scratch_db(name: str) -> Path:
    """A fresh SQLite path under bench/.cache for one benchmark's own sessions."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    path = CACHE_DIR / f"scratch-{name}.db"
    for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        p.unlink(missing_ok=True)
    return path


class CheckSetup:
    """An ``Auth`` on the benchmark Redis with ``SESSIONS`` logged-in sessions, and a client.

    ``url``: another Redis (a cluster, a plain server) instead of the embedded benchmark server
    holding ``n_keys`` blacklist keys."""

    def __init__(self, n_keys: int, name: str, *, url: str | None = None, **auth_options: Any):
        self.client = connect(url if url is not None else bench_redis(n_keys).url)
        self.store = SqliteStore(scratch_db(name))
        self.blacklist = Blacklist(self.client, prefix=PREFIX)
        self.codec = TokenCodec(KEYS)
        self.auth = Auth(self.store, self.blacklist, self.codec, **auth_options)
        self.sessions = [
            self.auth.login(f"u{i}", f"user{i}@example.com", f"User {i}") for i in range(SESSIONS)
        ]
        self.tokens = [access for _, access, _ in self.sessions]

    def token_cycle(self) -> Iterator[str]:
        return itertools.cycle(self.tokens)

    def close(self) -> None:
        self.client.close()
        self.store.close()


def baseline_check(client: redis.Redis, tokens: Iterator[str]) -> Callable[[], bool]:
    """flask-jwt-extended's pattern: decode with PyJWT, then one EXISTS on the jti key."""
    decode = jwt.decode
    key_prefix = PREFIX + "bl:"

    def check() -> bool:
        payload = decode(next(tokens), SECRET, algorithms=["HS256"])
        return not client.exists(key_prefix + payload["jti"])

    return check


def authenticate_check(auth: Auth, tokens: Iterator[str]) -> Callable[[], bool]:
    def check() -> bool:
        return auth.authenticate(next(tokens)).ok

    return check


def run(ctx: Context) -> None:
    n = ctx.size(1_000_000, 10_000)
    setup = CheckSetup(n, "check")
    try:
        subject = authenticate_check(setup.auth, setup.token_cycle())
        baseline = baseline_check(setup.client, setup.token_cycle())
        for _ in range(SESSIONS):  # every token verifies and every session is touched once
            assert subject() and baseline()
        seconds = 1.0 if ctx.quick else 10.0
        a, b, ratio = compare_throughput(subject, baseline, seconds=seconds)
        ctx.report(
            Figure(
                "revocation check",
                "authenticate (verify + EXISTS jti sid)",
                a,
                "ops/s",
                baseline=b,
                baseline_what="jwt.decode + EXISTS",
                ratio=ratio,
                target=">= 0.9x baseline",
                met=ratio >= 0.9,
                note=f"{1e6 / a:.0f} us vs {1e6 / b:.0f} us per check",
            )
        )
        # The token step alone, to show where the time goes.
        tokens, tokens2 = setup.token_cycle(), setup.token_cycle()
        codec = setup.codec
        va, vb, vratio = compare_throughput(
            lambda: codec.verify(next(tokens)),
            lambda: jwt.decode(next(tokens2), SECRET, algorithms=["HS256"]),
            seconds=seconds / 3,
        )
        ctx.report(
            Figure(
                "revocation check",
                "TokenCodec.verify alone",
                va,
                "ops/s",
                baseline=vb,
                baseline_what="jwt.decode alone",
                ratio=vratio,
                note=f"{1e6 / va:.1f} us vs {1e6 / vb:.1f} us",
            )
        )
    finally:
        setup.close()
