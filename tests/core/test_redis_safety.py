"""Revocations on a Redis that may evict them, that is out of memory, that does not persist, and
with replicas that do not acknowledge: real redis-server processes with those settings."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from sessionmon.core.auth import OK_MAY_EVICT, Auth, LogoutFailed, LogoutOutcome
from sessionmon.core.clock import FrozenClock
from sessionmon.core.embedded import EmbeddedRedis
from sessionmon.core.errors import RedisUnavailable
from sessionmon.core.redis_client import connect
from sessionmon.core.redis_health import Severity, findings, read_server_settings
from sessionmon.core.runtime import connect_for, make_blacklist
from sessionmon.core.settings import Settings
from sessionmon.core.store import SessionStore
from sessionmon.core.tokens import Reason, TokenCodec
from tests.redis_server import (
    EVICTING,
    FULL,
    NO_PERSISTENCE,
    RedisProcess,
    StartRedis,
    memory_full,
    start_replica,
    wait_for,
)

AuthOn = Callable[..., Auth]


@pytest.fixture
def auth_on(
    store: SessionStore, codec: TokenCodec, clock: FrozenClock, prefix: str
) -> Iterator[AuthOn]:
    """``auth_on(url, **settings)``: Auth over the store with the blacklist the runtime builds
    (the write guard included) on ``url``."""
    clients: list[redis.Redis] = []

    def make(url: str, **settings: object) -> Auth:
        s = Settings(redis_url=url, prefix=prefix, **settings)  # type: ignore[arg-type]
        client = connect_for(s, url)
        clients.append(client)
        blacklist = make_blacklist(s, client, clock)
        return Auth(store, blacklist, codec, access_ttl=60, refresh_ttl=3600, clock=clock)

    yield make
    for client in clients:
        client.close()


def keys_of(proc: RedisProcess, prefix: str) -> list[bytes]:
    client = proc.client()
    try:
        return list(client.scan_iter(match=prefix + "*"))
    finally:
        client.close()


# -- the embedded server ---------------------------------------------------------------------


def test_embedded_server_is_safe_for_revocations(tmp_path: Path) -> None:
    embedded = EmbeddedRedis(tmp_path / "sessions.db")
    client = connect(embedded.start())
    try:
        server = read_server_settings(client)
        assert (server.policy, server.aof, server.may_evict) == ("noeviction", True, False)
        assert findings(server) == []
    finally:
        client.close()
        embedded.stop(force=True)


# -- eviction --------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["allkeys-lru", "volatile-ttl"])
def test_a_redis_that_may_evict_refuses_revocations(
    start_redis: StartRedis, auth_on: AuthOn, store: SessionStore, prefix: str, policy: str
) -> None:
    proc = start_redis("--maxmemory", "3mb", "--maxmemory-policy", policy)
    auth = auth_on(proc.url)
    session, access, _ = auth.login("u1", "ann@example.com", "Ann")
    with pytest.raises(LogoutFailed) as failed:
        auth.force_logout(session.id, actor="ops", reason="incident")
    result = failed.value.result
    assert result.outcome is LogoutOutcome.REDIS_MAY_EVICT and not result.revoked
    assert f"maxmemory-policy {policy}" in str(failed.value)
    assert "--allow-evicting-redis" in str(failed.value)
    assert keys_of(proc, prefix) == []  # nothing written
    assert store.get_session(session.id) is not None  # nothing deleted
    [row] = store.audit(session_id=session.id)
    assert row.outcome == "failed: redis may evict" and not row.revoked
    # The read path is not a write: authenticate keeps working on that server.
    assert auth.authenticate(access).ok


def test_maxmemory_zero_never_evicts(start_redis: StartRedis, auth_on: AuthOn) -> None:
    proc = start_redis("--maxmemory", "0", "--maxmemory-policy", "allkeys-lru")
    auth = auth_on(proc.url)
    session, access, _ = auth.login("u1", "ann@example.com", "Ann")
    result = auth.force_logout(session.id, actor="ops")
    assert result.outcome is LogoutOutcome.OK and result.warning is None
    assert auth.authenticate(access).reason is Reason.REVOKED


def test_allowed_evicting_redis_revokes_and_every_revoke_says_so(
    start_redis: StartRedis, auth_on: AuthOn, store: SessionStore
) -> None:
    proc = start_redis(*EVICTING)
    auth = auth_on(proc.url, allow_evicting_redis=True)
    for n in range(2):
        session, access, _ = auth.login(f"u{n}", f"user{n}@example.com", "U")
        result = auth.force_logout(session.id, actor="ops")
        assert result.outcome is LogoutOutcome.OK and len(result.revoked) == 3
        assert result.warning and "may evict" in result.warning and "allkeys-lru" in result.warning
        assert result.to_dict()["warning"] == result.warning
        [row] = store.audit(session_id=session.id)
        assert row.outcome == OK_MAY_EVICT and len(row.revoked) == 3
        assert auth.authenticate(access).reason is Reason.REVOKED


def test_a_policy_changed_under_a_live_connection_is_seen_at_the_reconnect(
    start_redis: StartRedis, auth_on: AuthOn, store: SessionStore, prefix: str
) -> None:
    proc = start_redis("--maxmemory", "3mb", "--maxmemory-policy", "noeviction")
    auth = auth_on(proc.url)
    first, _, _ = auth.login("u1", "ann@example.com", "Ann")
    assert auth.force_logout(first.id, actor="ops").outcome is LogoutOutcome.OK
    admin = proc.client()
    try:
        admin.config_set("maxmemory-policy", "allkeys-lru")
        admin.client_kill_filter(_type="normal", skipme=True)  # our connection drops
    finally:
        admin.close()
    second, _, _ = auth.login("u2", "bob@example.com", "Bob")
    before = set(keys_of(proc, prefix))
    with pytest.raises(LogoutFailed) as failed:
        auth.force_logout(second.id, actor="ops")
    assert failed.value.result.outcome is LogoutOutcome.REDIS_MAY_EVICT
    assert set(keys_of(proc, prefix)) == before  # the reconnect's check stopped the write
    assert store.get_session(second.id) is not None


def test_config_not_permitted_falls_back_to_info(start_redis: StartRedis) -> None:
    proc = start_redis(*EVICTING, *NO_PERSISTENCE)
    admin = proc.client()
    try:
        admin.acl_setuser(
            "limited", enabled=True, passwords=["+pw"], keys=["*"], commands=["+@all", "-config"]
        )
    finally:
        admin.close()
    client = connect(f"redis://limited:pw@127.0.0.1:{proc.port}/0")
    try:
        server = read_server_settings(client)
    finally:
        client.close()
    assert server.source == "INFO"
    assert (server.policy, server.maxmemory, server.aof) == ("allkeys-lru", 3 << 20, False)
    codes = {f.code: f.severity for f in findings(server)}
    assert codes == {"may_evict": Severity.ERROR, "persistence_unknown": Severity.WARNING}


# -- out of memory ---------------------------------------------------------------------------


def test_out_of_memory_under_noeviction_is_redis_unavailable(
    start_redis: StartRedis, auth_on: AuthOn, store: SessionStore, prefix: str
) -> None:
    proc = start_redis(*FULL)
    auth = auth_on(proc.url)
    session, access, _ = auth.login("u1", "ann@example.com", "Ann")
    auth.authenticate(access)  # connected before the memory is full
    with memory_full(proc), pytest.raises(LogoutFailed) as failed:
        auth.force_logout(session.id, actor="ops", reason="incident")
    result = failed.value.result
    assert result.outcome is LogoutOutcome.REDIS_UNAVAILABLE and not result.revoked
    message = str(failed.value)
    assert "out of memory" in message and "OOM command not allowed" in message
    assert "\n" not in message and len(message) < 300
    assert keys_of(proc, prefix) == []
    assert store.get_session(session.id) is not None  # blacklist first, then delete: not deleted
    [row] = store.audit(session_id=session.id)
    assert row.outcome == "failed: redis unavailable" and not row.revoked
    assert auth.authenticate(access).ok  # reads still work on a full server


# -- persistence ------------------------------------------------------------------------------


def test_persistence_off_is_a_warning(start_redis: StartRedis) -> None:
    proc = start_redis(*NO_PERSISTENCE)
    client = connect(proc.url)
    try:
        found = findings(read_server_settings(client))
    finally:
        client.close()
    assert [(f.severity, f.code) for f in found] == [(Severity.WARNING, "no_persistence")]
    assert "lost when Redis restarts" in found[0].message


def test_rdb_save_points_alone_are_persistence(start_redis: StartRedis) -> None:
    proc = start_redis("--appendonly", "no", "--save", "900", "1")
    client = connect(proc.url)
    try:
        assert findings(read_server_settings(client)) == []
    finally:
        client.close()


# -- replicas ---------------------------------------------------------------------------------


def test_wait_replicas_a_revoke_is_done_once_the_replica_holds_it(
    start_redis: StartRedis, auth_on: AuthOn, store: SessionStore, prefix: str
) -> None:
    master = start_redis()
    replica = start_replica(start_redis, master)
    auth = auth_on(master.url, redis_wait_replicas=1)
    session, _, _ = auth.login("u1", "ann@example.com", "Ann")
    result = auth.force_logout(session.id, actor="ops")
    assert result.outcome is LogoutOutcome.OK and len(result.revoked) == 3
    assert {k.encode() for k in result.revoked} <= set(keys_of(replica, prefix))
    assert store.get_session(session.id) is None


def test_wait_replicas_with_the_replica_stopped_is_not_durable(
    start_redis: StartRedis, auth_on: AuthOn, store: SessionStore
) -> None:
    master = start_redis()
    replica = start_replica(start_redis, master)
    auth = auth_on(master.url, redis_wait_replicas=1, redis_timeout=1.0)
    session, _, _ = auth.login("u1", "ann@example.com", "Ann")
    replica.pause()
    started = time.monotonic()
    result = auth.force_logout(session.id, actor="ops")
    assert time.monotonic() - started < 1.5  # WAIT gives up after half the timeout
    assert result.outcome is LogoutOutcome.NOT_DURABLE
    assert not result.revoked and len(result.not_durable) == 3  # never reported revoked
    assert result.error and "not durable: 0 of 1 replica" in result.error
    assert result.deleted == 0 and store.get_session(session.id) is not None
    [row] = store.audit(session_id=session.id)
    assert row.outcome == "failed: not durable (0/1 replicas)" and len(row.revoked) == 3
    # Once the replica is back, the same logout completes.
    replica.resume()
    wait_for(
        lambda: auth.force_logout(session.id, actor="ops").outcome is LogoutOutcome.OK,
        "the logout to be durable",
    )
    assert store.get_session(session.id) is None


# -- timeouts ---------------------------------------------------------------------------------


@pytest.mark.parametrize("connected", [True, False], ids=["pooled", "new-connection"])
def test_a_hung_redis_costs_one_timeout_not_one_per_retry(
    redis_process: RedisProcess, auth_on: AuthOn, connected: bool
) -> None:
    auth = auth_on(redis_process.url, redis_timeout=0.5)
    session, access, _ = auth.login("u1", "ann@example.com", "Ann")
    if connected:
        assert auth.authenticate(access).ok
    redis_process.pause()
    try:
        for call in (
            lambda: auth.authenticate(access),
            lambda: auth.force_logout(session.id, actor="ops"),
        ):
            started = time.monotonic()
            with pytest.raises(RedisUnavailable, match="Timeout"):
                call()
            took = time.monotonic() - started
            assert 0.4 < took < 0.5 + 0.4, f"{took:.2f}s"
    finally:
        redis_process.resume()
    assert auth.authenticate(access).ok  # and it reconnects at once when the server is back
