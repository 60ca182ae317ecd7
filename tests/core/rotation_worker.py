"""A worker process for the multi-process rotation trials (importable by ``spawn``)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from typing import Any

from sessionmon.core.auth import Auth
from sessionmon.core.blacklist import Blacklist, connect
from sessionmon.core.keys import KeyMaterial
from sessionmon.core.store import open_store
from sessionmon.core.tokens import TokenCodec

Outcome = tuple[bool, str | None, str | None, str | None]


def refresh_together(auths: Sequence[Auth], token: str, threads: int) -> list[Outcome]:
    """``threads`` threads refresh ``token`` at once (thread i through ``auths[i % n]``);
    (ok, reason, access, refresh) each."""
    start = threading.Barrier(threads)
    out: list[Outcome] = [(False, "not run", None, None)] * threads

    def one(i: int) -> None:
        start.wait()
        try:
            r = auths[i % len(auths)].refresh(token)
            reason = r.reason.value if r.reason is not None else None
            out[i] = (r.ok, reason, r.new_access_token, r.new_refresh_token)
        except Exception as exc:  # reported to the test, never swallowed
            out[i] = (False, f"error: {exc}", None, None)

    workers = [threading.Thread(target=one, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    return out


def main(
    db: str,
    redis_url: str,
    prefix: str,
    secret: str,
    threads: int,
    tasks: Queue[Any],
    results: Queue[Any],
    barrier: Barrier,
) -> None:
    store = open_store(db)
    client = connect(redis_url)
    keys = KeyMaterial("HS256", secret.encode(), secret.encode(), "test")
    auth = Auth(store, Blacklist(client, prefix=prefix, leeway=10), TokenCodec(keys, leeway=10))
    try:
        while (token := tasks.get()) is not None:
            barrier.wait(60)
            results.put(refresh_together([auth], token, threads))
    finally:
        client.close()
        store.close()
