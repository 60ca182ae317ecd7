"""Force-logout: one session (pipelined MULTI/EXEC) vs the same steps as separate commands, and
every session of a user with 1,000 sessions, on SQLite and on PostgreSQL. Runs against the big
sessions DB (its rows and indexes make the deletes realistic); the benchmark's own sessions are
inserted fresh and deleted again. The first force-logout timed is the first after the data load
(nothing is warmed up first), so a cold start shows in p99 and max."""

from __future__ import annotations

import json
import random
import statistics
import time

from bench import pg_data
from bench.data import clear_prefix, insert_sessions, session_rows, sessions_db
from bench.fixtures import KEYS, bench_redis
from bench.harness import Context, Figure, percentile
from sessionmon.core.auth import Auth
from sessionmon.core.blacklist import Blacklist, connect
from sessionmon.core.store import Session, SessionStore, SqliteStore, open_store
from sessionmon.core.tokens import TokenCodec

SCRATCH_PREFIX = "benchfl:"
SCRATCH_SOURCE = "bench-logout"


def fresh_sessions(store: SessionStore, n: int, user: str | None = None) -> list[str]:
    """Insert ``n`` new live sessions (for ``user`` if given); returns their ids."""
    rows = session_rows(n, time.time(), seed=random.randrange(1 << 30))
    if user is not None:
        rows = [
            (r[0], user, f"{user}@example.com", *r[3:13], SCRATCH_SOURCE, *r[14:]) for r in rows
        ]
    else:
        rows = [(*r[:13], SCRATCH_SOURCE, *r[14:]) for r in rows]
    if isinstance(store, SqliteStore):
        insert_sessions(store, rows, rebuild=False)
    else:
        store.copy_in([Session(*r) for r in rows], [])  # type: ignore[arg-type]
    return [str(r[0]) for r in rows]


def backends(ctx: Context, n: int) -> list[tuple[str, SessionStore]]:
    """(name, store) of each backend to measure: SQLite, and PostgreSQL when it answers."""
    out: list[tuple[str, SessionStore]] = [("SQLite", SqliteStore(sessions_db(n).path))]
    why = pg_data.available()
    if why is None:
        out.append(("PostgreSQL", open_store(pg_data.pg_sessions_db(n).url)))
    else:
        print(f"  PostgreSQL skipped: {why}", flush=True)
    return out


def unpipelined_force_logout(auth: Auth, session_id: str, actor: str) -> None:
    """The same steps as ``force_logout``, one command at a time: read the session, SET + ZADD
    each key, prune the index, read each TTL back, then delete the row and write the audit."""
    bl, client = auth.blacklist, auth.blacklist.client
    (s,) = auth.store.get_sessions([session_id])
    now = time.time()
    keys: list[tuple[str, float, str]] = []
    for jti, exp, kind in (
        (s.access_jti, s.access_exp, "access"),
        (s.refresh_jti, s.refresh_exp, "refresh"),
        (None, max(s.refresh_exp or now, s.access_exp or now, now + 900), "session"),
    ):
        key = bl.sid_key(s.id) if jti is None else bl.token_key(s.id, jti)
        keys.append((key, float(exp or now), kind))
    revoked = {}
    for key, exp, kind in keys:
        ttl = bl.ttl_for(exp, now)
        if ttl <= 0:  # expired beyond the leeway: revoke skips it too
            continue
        value = json.dumps(
            {"kind": kind, "sid": s.id, "sub": s.user_id, "email": s.email, "reason": None,
             "actor": actor, "revoked_at": round(now, 3), "exp": exp},
            separators=(",", ":"),
        )  # fmt: skip
        client.set(key, value, ex=ttl)
        client.zadd(bl.layout.index_for_sid(s.id), {key: now + ttl})
    client.zremrangebyscore(bl.layout.index_for_sid(s.id), "-inf", now)
    for key, _, _ in keys:
        revoked[key] = client.ttl(key)
    auth.store.delete_sessions_with_audit(
        [s.id],
        [{"at": now, "action": "force_logout", "actor": actor, "reason": None, "session_id": s.id,
          "user_id": s.user_id, "email": s.email, "revoked": list(revoked), "outcome": "ok"}],
    )  # fmt: skip


def run(ctx: Context) -> None:
    n = ctx.sessions(1_000_000, 10_000)
    for name, store in backends(ctx, n):
        try:
            run_on(ctx, n, name, store)
        finally:
            store.close()


def run_on(ctx: Context, n: int, backend: str, store: SessionStore) -> None:
    server = bench_redis(min(n, 1_000_000))  # blacklist keys: at most 1M, whatever the sessions
    client = connect(server.url)
    try:
        mark = "?" if isinstance(store, SqliteStore) else "%s"
        with store.transaction() as conn:  # type: ignore[attr-defined]  # leftovers
            conn.execute(f"DELETE FROM sessions WHERE source = {mark}", (SCRATCH_SOURCE,))
        blacklist = Blacklist(client, prefix=SCRATCH_PREFIX)
        auth = Auth(store, blacklist, TokenCodec(KEYS))
        count = 200 if ctx.quick else 1000
        ids_a = fresh_sessions(store, count)
        ids_b = fresh_sessions(store, count)
        pipelined, separate = [], []
        for a, b in zip(ids_a, ids_b, strict=True):  # interleaved: both see the same noise
            start = time.perf_counter()
            result = auth.force_logout(a, actor="bench")
            pipelined.append(time.perf_counter() - start)
            assert result.ok and result.deleted == 1 and len(result.revoked) >= 2
            start = time.perf_counter()
            unpipelined_force_logout(auth, b, actor="bench")
            separate.append(time.perf_counter() - start)
        p50, p99 = percentile(pipelined, 50) * 1000, percentile(pipelined, 99) * 1000
        b50, b99 = percentile(separate, 50) * 1000, percentile(separate, 99) * 1000
        ctx.report(
            Figure(
                "force-logout",
                f"{backend}: one session, p99 ({count} runs, {n:,} sessions in the DB)",
                p99,
                "ms",
                baseline=b99,
                baseline_what="separate unpipelined commands, p99",
                ratio=b99 / p99,
                target="p99 <= 10 ms",
                met=p99 <= 10,
                note=f"p50 {p50:.2f} ms vs {b50:.2f} ms; first {pipelined[0] * 1000:.1f} ms, "
                f"max {max(pipelined) * 1000:.1f} ms",
            )
        )

        per_user = 1000
        runs = 3 if ctx.quick else 7
        user_times, loop_times = [], []
        for i in range(runs):
            user = f"bench-user-{i}-{random.randrange(1 << 30)}"
            fresh_sessions(store, per_user, user=user)
            start = time.perf_counter()
            result = auth.force_logout_user(user, actor="bench")
            user_times.append(time.perf_counter() - start)
            assert result.ok and result.deleted == per_user, result.outcome
            assert len(result.revoked) >= 2 * per_user
            if i < (1 if ctx.quick else 2):  # baseline: one force_logout per session
                other = f"bench-loop-{i}-{random.randrange(1 << 30)}"
                ids = fresh_sessions(store, per_user, user=other)
                start = time.perf_counter()
                for sid in ids:
                    auth.force_logout(sid, actor="bench")
                loop_times.append(time.perf_counter() - start)
        med = statistics.median(user_times) * 1000
        base = statistics.median(loop_times) * 1000
        ctx.report(
            Figure(
                "force-logout",
                f"{backend}: a user with {per_user:,} sessions (median of {runs})",
                med,
                "ms",
                baseline=base,
                baseline_what="force_logout per session",
                ratio=base / med,
                target="<= 200 ms",
                met=max(user_times) <= 0.2,
                note=f"every run: {', '.join(f'{t * 1000:.0f}' for t in user_times)} ms",
            )
        )
    finally:
        clear_prefix(client, SCRATCH_PREFIX)
        client.close()
