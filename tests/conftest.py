"""Shared fixtures: a real Redis (embedded, SESSIONMON_TEST_REDIS_URL, or with
SESSIONMON_TEST_REDIS_CLUSTER=1 a 3-master cluster this run starts), a fresh SQLite file."""

from __future__ import annotations

import os
import secrets
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from sessionmon.core.auth import Auth
from sessionmon.core.blacklist import Blacklist, connect
from sessionmon.core.clock import FrozenClock
from sessionmon.core.embedded import EmbeddedRedis
from sessionmon.core.errors import SessionmonError
from sessionmon.core.keys import KeyMaterial
from sessionmon.core.settings import Settings
from sessionmon.core.store import Backend, DatabaseUrl, SessionStore, open_store
from sessionmon.core.tokens import TokenCodec
from tests.redis_cluster import RedisClusterProcesses
from tests.redis_server import RedisProcess, StartRedis
from tests.redis_tls import Certificates, TlsRedis, tls_binary
from tests.support import pg
from tests.support.redis_mode import CLUSTER

TEST_SECRET = "test-secret-" + secrets.token_hex(24)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The Redis every test uses: SESSIONMON_TEST_REDIS_CLUSTER=1 a fixture-started cluster
    (``redis+cluster://``; or SESSIONMON_TEST_REDIS_URL's when it is a ``redis+cluster://``
    URL), SESSIONMON_TEST_REDIS_URL, else an embedded server."""
    if CLUSTER and os.environ.get("SESSIONMON_TEST_REDIS_URL", "").startswith("redis+cluster://"):
        # A cluster of the caller's (tests/core/test_redis_cluster_acl.py: as an ACL user).
        yield os.environ["SESSIONMON_TEST_REDIS_URL"]
        return
    if CLUSTER:
        cluster = RedisClusterProcesses(tmp_path_factory.mktemp("redis-cluster"), masters=3)
        try:
            cluster.start()
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            pytest.exit(f"SESSIONMON_TEST_REDIS_CLUSTER=1: cannot start a cluster: {exc}", 3)
        yield cluster.url
        cluster.stop()
        return
    url = os.environ.get("SESSIONMON_TEST_REDIS_URL")
    if url:
        client = redis.Redis.from_url(url, socket_connect_timeout=2)
        try:
            client.ping()
        except redis.RedisError as exc:
            pytest.exit(f"SESSIONMON_TEST_REDIS_URL={url} does not answer: {exc}", returncode=3)
        finally:
            client.close()
        yield url
        return
    embedded = EmbeddedRedis(tmp_path_factory.mktemp("embedded-redis") / "tests.db")
    yield embedded.start()
    embedded.stop(force=True)


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own; its keys are removed afterwards."""
    p = f"smtest:{uuid.uuid4().hex[:12]}:"
    yield p
    try:
        client = connect(redis_url)
    except SessionmonError:
        return
    try:
        pipe = client.pipeline(transaction=False)
        for key in client.scan_iter(match=p + "*", count=1000):
            pipe.delete(key)
        pipe.execute()
    except redis.RedisError:
        pass
    finally:
        client.close()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = connect(redis_url)
    yield client
    client.close()


@pytest.fixture
def clock() -> FrozenClock:
    """A clock that starts at the real time (Redis TTLs are real) and moves only when told."""
    return FrozenClock(time.time())


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "sessions.db"


@pytest.fixture(params=[Backend.SQLITE, Backend.POSTGRES], ids=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> Backend:
    """Every test that uses the store runs on both backends (PostgreSQL: see tests.support.pg)."""
    if request.param is Backend.POSTGRES:
        pg.require()
    return request.param


@pytest.fixture
def db_url(backend: Backend, db_path: Path) -> Iterator[DatabaseUrl]:
    """This test's database: the SQLite file ``db_path``, or a fresh PostgreSQL schema."""
    if backend is Backend.SQLITE:
        yield DatabaseUrl(Backend.SQLITE, db_path)
        return
    with pg.fresh_schema() as url:
        yield DatabaseUrl.parse(url)


@pytest.fixture
def store(db_url: DatabaseUrl, clock: FrozenClock) -> Iterator[SessionStore]:
    s = open_store(db_url, clock=clock)
    yield s
    s.close()


@pytest.fixture
def blacklist(redis_client: redis.Redis, prefix: str, clock: FrozenClock) -> Blacklist:
    return Blacklist(redis_client, prefix=prefix, leeway=10, clock=clock)


@pytest.fixture
def keys() -> KeyMaterial:
    return KeyMaterial("HS256", TEST_SECRET.encode(), TEST_SECRET.encode(), "test")


@pytest.fixture
def codec(keys: KeyMaterial, clock: FrozenClock) -> TokenCodec:
    return TokenCodec(keys, leeway=10, clock=clock)


@pytest.fixture
def auth(store: SessionStore, blacklist: Blacklist, codec: TokenCodec, clock: FrozenClock) -> Auth:
    return Auth(store, blacklist, codec, access_ttl=60, refresh_ttl=3600, clock=clock)


@pytest.fixture
def settings(db_url: DatabaseUrl, redis_url: str, prefix: str) -> Settings:
    return Settings(db=db_url, redis_url=redis_url, prefix=prefix, access_ttl=60, refresh_ttl=3600)


@pytest.fixture
def cli_env(db_url: DatabaseUrl, redis_url: str, prefix: str, tmp_path: Path) -> dict[str, str]:
    """Environment for running the console script against this test's DB and Redis."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SESSIONMON_")}
    env.update(
        SESSIONMON_DB=db_url.url or str(db_url.path),
        SESSIONMON_REDIS_URL=redis_url,
        SESSIONMON_PREFIX=prefix,
        SESSIONMON_SECRET=TEST_SECRET,
        XDG_CONFIG_HOME=str(tmp_path / "xdg-config"),
        XDG_DATA_HOME=str(tmp_path / "xdg-data"),
    )
    return env


@pytest.fixture
def redis_process(tmp_path: Path) -> Iterator[RedisProcess]:
    """A private redis-server the test may kill and restart."""
    proc = RedisProcess(tmp_path / "redis-proc").start()
    yield proc
    proc.stop()


@pytest.fixture
def start_redis(tmp_path: Path) -> Iterator[StartRedis]:
    """Start a private redis-server with extra options; all are stopped (SIGCONT first)."""
    started: list[RedisProcess] = []

    def start(*args: str) -> RedisProcess:
        proc = RedisProcess(tmp_path / f"redis-{len(started)}", args=args).start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """A CA, a server certificate for 127.0.0.1 and client certificates, made with openssl."""
    return Certificates.make(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def tls_redis(certs: Certificates, tmp_path: Path) -> Iterator[TlsRedis]:
    """The machine's redis-server, TLS only, client certificates required (skipped, saying
    why, when it has no TLS)."""
    server = TlsRedis(tls_binary(), certs, tmp_path / "tls-redis").start()
    yield server
    server.stop()
