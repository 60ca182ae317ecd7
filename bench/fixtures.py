"""Shared, lazily started benchmark resources: the dedicated Redis servers and the keys."""

from __future__ import annotations

import contextlib
import secrets

from bench.data import BenchRedis, blacklist_keys
from sessionmon.core.keys import KeyMaterial

SECRET = secrets.token_bytes(32)
KEYS = KeyMaterial("HS256", SECRET, SECRET, "bench")

_servers: dict[int, BenchRedis] = {}


def bench_redis(n: int) -> BenchRedis:
    """The dedicated embedded Redis holding ``n`` blacklist keys (started once per run)."""
    server = _servers.get(n)
    if server is None:
        server = BenchRedis(n)
        server.start()
        blacklist_keys(server, n)
        _servers[n] = server
    return server


def stop_all() -> None:
    """Stop every server this run started (they keep their data in the AOF)."""
    for server in _servers.values():
        with contextlib.suppress(Exception):
            server.stop()
    _servers.clear()
