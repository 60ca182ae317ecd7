"""Benchmark sessions in PostgreSQL: the machine's server, one schema per data size, cached.

``SESSIONMON_BENCH_PG_URL`` names the server (default: the machine's, database ``test``). The
schema ``bench_<n>`` is made by the real store (``open_store``: same tables, indexes, trigger),
then filled with the same rows as the SQLite data (``session_rows``) by ``COPY`` with the
secondary indexes dropped and rebuilt once (the schema's own definitions, read back from
``pg_indexes``), then ``ANALYZE`` and ``VACUUM`` (index-only scans need the visibility map).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import psycopg

from bench.data import MAX_DATA_AGE, session_chunks
from sessionmon.core.store import SESSION_COLUMNS, open_store
from sessionmon.core.store.url import DatabaseUrl, with_search_path

PG_URL = os.environ.get("SESSIONMON_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
_CHUNK = 100_000


def _log(msg: str) -> None:
    print(f"  [pg data] {msg}", flush=True)


def available() -> str | None:
    """None when the server answers, else why not (one line)."""
    try:
        with psycopg.connect(PG_URL, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return str(exc).strip().splitlines()[0]
    return None


@dataclass
class PgData:
    """A schema with ``n`` live sessions."""

    url: str
    n: int
    created_at: float

    @property
    def db(self) -> DatabaseUrl:
        return DatabaseUrl.parse(self.url)


def pg_sessions_db(n: int, *, quiet: bool = False) -> PgData:
    """The schema ``bench_<n>`` with ``n`` sessions (regenerated when missing or stale)."""
    schema = f"bench_{n}"
    url = with_search_path(PG_URL, schema)
    now = time.time()
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm SCHEMA public")
        row = conn.execute(
            "SELECT to_regclass(%s) IS NOT NULL", (f"{schema}.bench_meta",)
        ).fetchone()
        if row and row[0]:
            meta = conn.execute(f"SELECT n, created_at FROM {schema}.bench_meta").fetchone()
            count = conn.execute(f"SELECT count(*) FROM {schema}.sessions").fetchone()
            fresh = meta is not None and now - meta[1] < MAX_DATA_AGE
            if fresh and meta[0] == n and count and count[0] == n:
                return PgData(url, n, meta[1])
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        conn.execute(f"CREATE SCHEMA {schema}")
    start = time.perf_counter()
    open_store(url).close()  # the real schema, migrated
    with psycopg.connect(url) as conn:
        indexes = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = %s "
            "AND tablename = 'sessions' AND indexname <> 'sessions_pkey'",
            (schema,),
        ).fetchall()
        for name, _ in indexes:
            conn.execute(f"DROP INDEX {schema}.{name}")
        with conn.cursor() as cur:
            copy_sql = f"COPY sessions ({', '.join(SESSION_COLUMNS)}) FROM STDIN"
            for chunk in session_chunks(n, now, chunk=_CHUNK):
                with cur.copy(copy_sql) as copy:  # type: ignore[arg-type]
                    for r in chunk:
                        copy.write_row(r)
        for _, create in indexes:
            conn.execute(create)  # type: ignore[arg-type]
        conn.execute("CREATE TABLE bench_meta (n bigint, created_at double precision)")
        conn.execute("INSERT INTO bench_meta VALUES (%s, %s)", (n, now))
        conn.commit()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE sessions")
    if not quiet:
        _log(f"generated {n:,} sessions in {time.perf_counter() - start:.1f}s -> schema {schema}")
    return PgData(url, n, now)
