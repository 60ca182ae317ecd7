"""PostgreSQL for the tests: the machine's server (SESSIONMON_TEST_PG_URL), one schema per test.

Without SESSIONMON_TEST_PG_URL every PostgreSQL case is skipped with that reason; ``.ci/run`` sets
it. Each test gets a schema of its own (``search_path`` in the URL's ``options``), dropped when it
ends; ``pg_trgm`` is created once in ``public`` (extensions are per database).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from sessionmon.core.store.url import with_search_path

ENV = "SESSIONMON_TEST_PG_URL"
SKIP_REASON = f"PostgreSQL tests need {ENV} (e.g. postgresql://postgres@127.0.0.1:5432/test)"


def base_url() -> str | None:
    return os.environ.get(ENV) or None


def require() -> str:
    """The server URL, or skip the test with the reason."""
    url = base_url()
    if not url:
        pytest.skip(SKIP_REASON)
    return url


_prepared: set[str] = set()


def _prepare(url: str) -> None:
    if url in _prepared:
        return
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm SCHEMA public")
    except psycopg.Error as exc:
        pytest.exit(f"{ENV}={url} does not answer: {exc}", returncode=3)
    _prepared.add(url)


@contextlib.contextmanager
def fresh_schema() -> Iterator[str]:
    """A URL whose tables live in a new, empty schema; the schema is dropped afterwards."""
    url = require()
    _prepare(url)
    schema = "t_" + uuid.uuid4().hex[:16]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    # The schema's name is also its connections' application_name: a test that kills
    # connections kills its own only, never those of a test running beside it.
    try:
        yield with_search_path(url, schema) + f"&application_name={schema}"
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            # Connections this test left open (a killed process's) must not hold the drop.
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                "AND application_name = %s AND state = 'idle in transaction'",
                (schema,),
            )
            conn.execute("SET lock_timeout = '10s'")
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
