"""Large, realistic benchmark data, generated fast and cached between runs.

Sessions go into a SQLite file created by the real store (same schema, same indexes), written
with one ``executemany`` in one transaction. Blacklist keys go into a dedicated embedded Redis
(``EmbeddedRedis`` on a DB path under ``bench/.cache``, never the machine's Redis on 6379), written
pipelined exactly as ``Blacklist.revoke`` writes them: ``SET key value EX ttl`` plus
``ZADD <prefix>bl:index {key: now + ttl}``. The AOF keeps them between runs; the count is checked
before anything is regenerated.
"""

from __future__ import annotations

import json
import random
import re
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import redis

from sessionmon.core.blacklist import KIND_ACCESS, KIND_REFRESH, KIND_SESSION, Blacklist, connect
from sessionmon.core.embedded import EmbeddedRedis
from sessionmon.core.store import SCHEMA_VERSION, SESSION_COLUMNS, SqliteStore

CACHE_DIR = Path(__file__).resolve().parent / ".cache"
PREFIX = "bench:"
SOURCE = "bench"
# Regenerate cached sessions older than this: their access tokens would all have expired.
MAX_DATA_AGE = 6 * 3600.0
ACCESS_TTL = 900.0
REFRESH_TTL = 7 * 86400.0
SESSIONS_PER_USER = 5  # on average; user ids are drawn at random

_AGENTS = (
    "Mozilla/5.0 (X11; Linux x86_64; rv:131.0) Gecko/20100101 Firefox/131.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/130.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_0 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
    "curl/8.10.1",
)


def _log(msg: str) -> None:
    print(f"  [data] {msg}", flush=True)


def _rid(rng: random.Random) -> str:
    """A 22-character URL-safe id, like ``new_id()`` (128 bits), but seeded and fast."""
    return f"{rng.getrandbits(128):032x}"[:22]


# The rotation columns (schema v3) of a session that was never rotated: generation 0, no
# previous refresh token, no rotation yet; and the key ids and rotation history (schema v4):
# unknown kids (a session from before kids were recorded), no rotations.
_NOT_ROTATED: tuple[object, ...] = (0, None, None, None, None, None, None, None)


def session_rows(n: int, now: float, seed: int = 1) -> list[tuple[object, ...]]:
    """``n`` session rows (in ``SESSION_COLUMNS`` order) with spread-out expiries."""
    return [row for chunk in session_chunks(n, now, seed) for row in chunk]


def session_chunks(
    n: int, now: float, seed: int = 1, chunk: int = 100_000
) -> Iterator[list[tuple[object, ...]]]:
    """The rows of ``session_rows`` in lists of ``chunk`` (10M rows never sit in memory)."""
    rng = random.Random(seed)
    users = max(1, n // SESSIONS_PER_USER)
    rows: list[tuple[object, ...]] = []
    for _ in range(n):
        u = rng.randrange(users)
        created = now - rng.uniform(0, 3 * 86400)
        access_exp = now + rng.uniform(-ACCESS_TTL, ACCESS_TTL)
        rows.append(
            (
                _rid(rng),
                f"u{u}",
                f"user{u}@example.com",
                f"User {u}",
                created,
                max(created, now - rng.uniform(0, 600)),
                f"203.0.113.{u % 250}",
                _AGENTS[u % len(_AGENTS)],
                _rid(rng),
                access_exp,
                _rid(rng),
                now + rng.uniform(3600, REFRESH_TTL),
                rng.randrange(20),
                SOURCE,
                *_NOT_ROTATED,
            )
        )
        if len(rows) >= chunk:
            yield rows
            rows = []
    if rows:
        yield rows


def insert_sessions(
    store: SqliteStore, rows: Iterable[tuple[object, ...]], *, rebuild: bool
) -> None:
    """Insert rows in one transaction.

    With ``rebuild`` (bulk generation), the schema's secondary structures are built once after the
    insert instead of row by row: the indexes are dropped and recreated, the triggers on
    ``sessions`` (schema v2: they keep the FTS5 search index current) are dropped during the
    insert, each external-content FTS5 table over ``sessions`` is rebuilt with
    ``INSERT INTO t(t) VALUES ('rebuild')``, and the triggers are recreated. Every statement is
    the schema's own SQL, read back from ``sqlite_master``, so the result is what the store makes.
    """
    sql = (
        f"INSERT INTO sessions ({', '.join(SESSION_COLUMNS)}) "
        f"VALUES ({', '.join('?' for _ in SESSION_COLUMNS)})"
    )
    with store.transaction() as conn:
        indexes: list[tuple[str, str]] = []
        triggers: list[tuple[str, str]] = []
        search_tables: list[str] = []
        if rebuild:
            indexes = conn.execute(
                "SELECT name, sql FROM sqlite_master WHERE type = 'index' "
                "AND tbl_name = 'sessions' AND sql IS NOT NULL"
            ).fetchall()
            triggers = conn.execute(
                "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' "
                "AND tbl_name = 'sessions'"
            ).fetchall()
            search_tables = [
                name
                for name, create in conn.execute(
                    "SELECT name, sql FROM sqlite_master WHERE type = 'table' "
                    "AND sql LIKE 'CREATE VIRTUAL TABLE%'"
                )
                if re.search(r"content\s*=\s*'?sessions'?", create)
            ]
            for name, _ in indexes:
                conn.execute(f"DROP INDEX {name}")
            for name, _ in triggers:
                conn.execute(f"DROP TRIGGER {name}")
        conn.executemany(sql, rows)
        for _, create in indexes:
            conn.execute(create)
        for name in search_tables:
            conn.execute(f"INSERT INTO {name}({name}) VALUES ('rebuild')")
            conn.execute(f"INSERT INTO {name}({name}) VALUES ('optimize')")
        for _, create in triggers:
            conn.execute(create)


@dataclass
class SessionData:
    """A cached SQLite file with ``n`` live sessions."""

    path: Path
    n: int
    created_at: float


def sessions_db(n: int, *, quiet: bool = False) -> SessionData:
    """A SQLite file with ``n`` sessions (cached under bench/.cache, keyed by size)."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    path = CACHE_DIR / f"sessions-{n}.db"
    meta_path = path.with_suffix(".json")
    now = time.time()
    if path.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if now - meta["created_at"] < MAX_DATA_AGE:
            conn = sqlite3.connect(path)
            try:
                count = conn.execute("SELECT COUNT(*) FROM sessions").fetchone()[0]
                version = conn.execute("PRAGMA user_version").fetchone()[0]
            finally:
                conn.close()
            if count == n:
                if version != SCHEMA_VERSION:
                    # Migrate once here, never inside a timed section (the store migrates on open).
                    start = time.perf_counter()
                    SqliteStore(path).close()
                    if not quiet:
                        _log(
                            f"migrated {path.name} from schema v{version} to v{SCHEMA_VERSION} "
                            f"in {time.perf_counter() - start:.1f}s"
                        )
                return SessionData(path, n, meta["created_at"])
    for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        p.unlink(missing_ok=True)
    start = time.perf_counter()
    store = SqliteStore(path)
    try:
        rows = (row for chunk in session_chunks(n, now) for row in chunk)
        insert_sessions(store, rows, rebuild=n >= 50_000)
        store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        store.conn.execute("ANALYZE")
    finally:
        store.close()
    meta_path.write_text(json.dumps({"n": n, "created_at": now}))
    if not quiet:
        _log(f"generated {n:,} sessions in {time.perf_counter() - start:.1f}s -> {path.name}")
    return SessionData(path, n, now)


class BenchRedis:
    """The dedicated embedded Redis for one data size (bench/.cache/redis-<n>.db.redis.*)."""

    def __init__(self, n: int) -> None:
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        self.n = n
        self.embedded = EmbeddedRedis(CACHE_DIR / f"redis-{n}.db", start_timeout=120)
        self.url = ""

    def start(self) -> str:
        """Start (or join) the server and wait until it has loaded its AOF."""
        self.url = self.embedded.start()
        client = self.client()
        try:
            deadline = time.monotonic() + 300
            while True:
                try:
                    client.ping()
                    break
                except redis.exceptions.BusyLoadingError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
        finally:
            client.close()
        return self.url

    def client(self) -> redis.Redis:
        return connect(self.url, timeout=60)

    def stop(self) -> None:
        self.embedded.stop()


def blacklist_value(kind: str, sid: str, sub: str, email: str, exp: float, now: float) -> str:
    """The JSON document ``Blacklist.revoke`` stores (same fields, same separators)."""
    return json.dumps(
        {
            "kind": kind,
            "sid": sid,
            "sub": sub,
            "email": email,
            "reason": "bench",
            "actor": "bench",
            "revoked_at": round(now, 3),
            "exp": exp,
        },
        separators=(",", ":"),
    )


def fill_blacklist(client: redis.Redis, n: int, *, prefix: str = PREFIX, seed: int = 2) -> None:
    """Write ``n`` blacklist keys (TTLs of 1 d to 7 d) and their index entries, pipelined."""
    rng = random.Random(seed)
    bl = Blacklist(client, prefix=prefix)
    kinds = (KIND_ACCESS, KIND_REFRESH, KIND_SESSION)
    now = time.time()
    batch = 5_000
    for start in range(0, n, batch):
        pipe = client.pipeline(transaction=False)
        index: dict[str, dict[str, float]] = {}
        for i in range(start, min(n, start + batch)):
            kind = kinds[i % 3]
            sid = _rid(rng)
            u = rng.randrange(max(1, n // SESSIONS_PER_USER))
            ttl = rng.randint(86400, int(REFRESH_TTL))
            key = bl.sid_key(sid) if kind == KIND_SESSION else bl.token_key(sid, _rid(rng))
            value = blacklist_value(kind, sid, f"u{u}", f"user{u}@example.com", now + ttl, now)
            pipe.set(key, value, ex=ttl)
            index.setdefault(bl.layout.index_for_sid(sid), {})[key] = now + ttl
        for shard, members in index.items():
            pipe.zadd(shard, members)
        pipe.execute()


def blacklist_keys(redis_: BenchRedis, n: int, *, prefix: str = PREFIX) -> int:
    """Make sure ``n`` live blacklist keys exist under ``prefix``; returns the count."""
    client = redis_.client()
    try:
        bl = Blacklist(client, prefix=prefix)
        count = bl.count()
        keys = client.dbsize()
        # Every key on the index must still exist (and be at least an hour from expiry).
        soon = sum(client.zcount(i, "-inf", time.time() + 3600) for i in bl.index_keys)
        if count == n and soon == 0 and keys >= n + 1:
            return count
        start = time.perf_counter()
        client.flushdb()
        fill_blacklist(client, n, prefix=prefix)
        client.bgrewriteaof()
        _log(f"generated {n:,} blacklist keys in {time.perf_counter() - start:.1f}s")
        return bl.count()
    finally:
        client.close()


def clear_prefix(client: redis.Redis, prefix: str) -> None:
    """Delete every key under ``prefix`` (benchmark scratch space)."""
    batch: list[bytes] = []
    for key in client.scan_iter(match=prefix + "*", count=5000):
        batch.append(key)
        if len(batch) >= 5000:
            client.delete(*batch)
            batch = []
    if batch:
        client.delete(*batch)
