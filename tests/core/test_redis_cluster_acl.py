"""sessionmon as a Redis ACL user on a Redis Cluster, with exactly the README's cluster
permissions (set on every node): revoke, check, list and doctor work and no node refuses anything
else; a redirect during a slot migration (ASK) works; a user lacking one of the cluster's
permissions gets one line naming it, never "revoked"."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from sessionmon.core.blacklist import KIND_SESSION, Blacklist, RevokeRequest, connect
from sessionmon.core.blacklist_keys import shard_of
from sessionmon.core.doctor import Probe, Status, run_checks
from sessionmon.core.errors import RedisUnavailable
from sessionmon.core.revocation_cache import CachedRevocations
from sessionmon.core.runtime import open_runtime
from sessionmon.core.settings import Settings
from sessionmon.core.store import Backend, DatabaseUrl
from tests.conftest import TEST_SECRET
from tests.redis_acl import (
    CLUSTER_RULES,
    SESSIONMON_CLUSTER_RULES,
    SESSIONMON_RULES,
    TEST_INSPECTION,
    add_cluster_user,
    denials,
)
from tests.redis_cluster import RedisClusterProcesses
from tests.redis_server import RedisProcess

REPO = Path(__file__).resolve().parents[2]
PREFIX = "smacl:"
# What sessionmon asks and expects to be refused under the README's user: CONFIG GET (the guard
# then reads INFO) and TIME (the doctor's clock check, a warning that says so).
EXPECTED_REFUSALS = ("command: config|get ", "command: time ")


@pytest.fixture(autouse=True)
def secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SESSIONMON_SECRET", TEST_SECRET)


@pytest.fixture
def prefix() -> str:
    """A key prefix of this test's own (on this file's cluster, not the suite's Redis)."""
    return f"smacl:{uuid.uuid4().hex[:12]}:"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterProcesses]:
    """One 3-master cluster for this file (users are re-created, with a fresh ACL LOG, per test)."""
    c = RedisClusterProcesses(tmp_path_factory.mktemp("acl-cluster"), masters=3).start()
    yield c
    c.stop()


def settings_for(url: str, tmp_path: Path, prefix: str = PREFIX) -> Settings:
    return Settings(
        db=DatabaseUrl(Backend.SQLITE, tmp_path / "sessions.db"), redis_url=url, prefix=prefix,
        access_ttl=60, refresh_ttl=3600, redis_wait_replicas=0,
    )  # fmt: skip


def unexpected_refusals(nodes: list[RedisProcess]) -> list[str]:
    return [d for n in nodes for d in denials(n) if not d.startswith(EXPECTED_REFUSALS)]


def test_the_readme_lists_exactly_the_cluster_rules() -> None:
    readme = (REPO / "README.md").read_text()
    rules = SESSIONMON_CLUSTER_RULES.format(prefix="sessionmon:")
    assert f"ACL SETUSER sessionmon on >PASSWORD {rules}" in readme


def test_revoke_check_list_and_doctor_as_the_acl_user_on_a_cluster(
    cluster: RedisClusterProcesses, tmp_path: Path
) -> None:
    url = add_cluster_user(
        cluster.nodes, "sessionmon", SESSIONMON_CLUSTER_RULES.format(prefix=PREFIX)
    )
    with open_runtime(settings_for(url, tmp_path)) as rt:
        auth, bl = rt.auth, rt.blacklist
        assert bl.guard is not None and bl.guard.settings().source == "INFO"
        session, access, refresh = auth.login("u1", "ann@example.com", "Ann")
        assert auth.authenticate(access, refresh).user is not None
        result = auth.force_logout(session.id, "tester")
        assert result.revoked and not result.failed, result
        assert auth.authenticate(access, refresh).user is None
        assert bl.is_revoked(None, session.id)
        # A user's logout spans slots (and masters).
        for i in range(12):
            auth.login("u2", "bob@example.com", f"Bob {i}")
        by_user = auth.force_logout_user("u2", "tester")
        assert len(by_user.revoked) == 36 and not by_user.failed, by_user
        owners = {bl.client.get_node_from_key(key).port for key in by_user.revoked}
        assert len(owners) > 1
        assert bl.count() == 39
        assert len(bl.page(0, 100)) == 39
        assert bl.entries_for_session(session.id)
        _, found = bl.scan(0)
        assert found
        extra = bl.sid_key("extra")
        bl.revoke([RevokeRequest(KIND_SESSION, "extra", time.time() + 60)])
        assert bl.unrevoke([extra]) == 1
        checks = {c.name: c for c in run_checks(Probe(rt.store, bl)).checks}
        not_ok = {name: c for name, c in checks.items() if c.status is not Status.OK}
        assert set(not_ok) == {"clock_skew"}, not_ok  # TIME is not granted: says so
        assert "NOPERM" in not_ok["clock_skew"].figure and "'time'" in not_ok["clock_skew"].figure
        assert checks["index"].figure.startswith("39 key(s), 39 index entries")
        cache = CachedRevocations(bl)
        try:
            assert cache.start(wait=10), cache.last_error
            assert cache.is_revoked(None, session.id)
        finally:
            cache.close()
    assert unexpected_refusals(cluster.nodes) == []


def test_the_blacklist_tests_pass_as_the_acl_user_on_a_cluster(
    cluster: RedisClusterProcesses,
) -> None:
    """The suite's blacklist part on this cluster as the user (plus the reads the tests check
    with): ``SESSIONMON_TEST_REDIS_CLUSTER=1`` with this ``redis+cluster://`` URL."""
    rules = f"{SESSIONMON_CLUSTER_RULES.format(prefix='smtest:')} {TEST_INSPECTION}"
    url = add_cluster_user(cluster.nodes, "sessionmon", rules)
    env = {k: v for k, v in os.environ.items() if k != "SESSIONMON_TEST_PG_URL"}
    env.update(
        SESSIONMON_TEST_REDIS_URL=url, SESSIONMON_TEST_REDIS_CLUSTER="1", PYTHONPATH=str(REPO)
    )
    files = [
        "tests/core/test_blacklist.py",
        "tests/core/test_auth.py",
        "tests/core/test_auth_logout_presented.py",
        "tests/core/test_bulk_logout.py",
        "tests/core/test_events.py",
        "tests/core/test_doctor.py",
        "tests/core/test_revocation_cache.py",
    ]
    before = commands_processed(cluster)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *files],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:]
    assert " passed" in done.stdout.splitlines()[-1]
    assert commands_processed(cluster) > before + 1000  # on this cluster, not one of their own
    assert unexpected_refusals(cluster.nodes) == []


def commands_processed(cluster: RedisClusterProcesses) -> int:
    total = 0
    for node in cluster.nodes:
        admin = node.client()
        try:
            total += int(admin.info("stats")["total_commands_processed"])
        finally:
            admin.close()
    return total


def _node(cluster: RedisClusterProcesses, port: int) -> RedisProcess:
    return next(n for n in cluster.nodes if n.port == port)


def in_slot(client: redis.Redis, slot: int) -> list[bytes]:
    return list(client.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100_000))


def test_a_redirect_during_a_slot_migration_needs_asking(
    cluster: RedisClusterProcesses, prefix: str
) -> None:
    """A slot being migrated answers ASK for a key it no longer (or never) held: redis-py sends
    ASKING to the importing node first, so the user needs ``+asking``."""
    full = add_cluster_user(
        cluster.nodes, "sessionmon", SESSIONMON_CLUSTER_RULES.format(prefix=prefix)
    )
    no_asking = add_cluster_user(
        cluster.nodes,
        "noasking",
        SESSIONMON_CLUSTER_RULES.replace(" +asking", "").format(prefix=prefix),
    )
    client, lacking = connect(full), connect(no_asking)
    try:
        bl, bl_lacking = Blacklist(client, prefix=prefix), Blacklist(lacking, prefix=prefix)
        blocked = next(
            f"b-{i}" for i in itertools.count() if shard_of(f"b-{i}") == shard_of("moving")
        )
        slot = client.keyslot(bl.sid_key("moving"))
        assert client.keyslot(bl.sid_key(blocked)) == slot
        source = _node(cluster, client.get_node_from_key(bl.sid_key("moving")).port)
        target = next(n for n in cluster.nodes if n is not source)
        bl.revoke([RevokeRequest(KIND_SESSION, "moving", time.time() + 600)])
        mine = [bl.sid_key("moving").encode(), bl.layout.index_keys[shard_of("moving")].encode()]
        src, dst = source.client(), target.client()
        try:
            assert set(mine) <= set(in_slot(src, slot))
            src_id = src.execute_command("CLUSTER", "MYID").decode()
            dst_id = dst.execute_command("CLUSTER", "MYID").decode()
            dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
            src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
            try:
                # This test's keys have moved, the slot has not yet: the source answers ASK.
                src.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *mine)
                assert bl.is_revoked(None, "moving")  # ASKING, then EXISTS on the target
                for attempt in (
                    lambda: bl_lacking.is_revoked(None, "moving"),
                    lambda: bl_lacking.revoke(
                        [RevokeRequest(KIND_SESSION, blocked, time.time() + 600)]
                    ),
                ):
                    with pytest.raises(RedisUnavailable) as refused:  # never "not revoked"
                        attempt()
                    message = str(refused.value)
                    assert "NOPERM this user has no permissions to run the 'asking' command" in (
                        message
                    )
                    assert len(message.splitlines()) == 1
                # Nothing written (both nodes asked without a redirect).
                assert set(in_slot(dst, slot)) == set(mine)
                assert bl.sid_key(blocked).encode() not in in_slot(src, slot)
            finally:
                # Finish the migration: the slot's keys (other tests' too) go to the target.
                while keys := src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
                    src.execute_command(
                        "MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys
                    )
                for node in cluster.nodes:
                    admin = node.client()
                    try:
                        admin.execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
                    finally:
                        admin.close()
        finally:
            src.close()
            dst.close()
        cluster.wait_ok()
        assert bl.is_revoked(None, "moving")  # MOVED: the layout is read again (CLUSTER SLOTS)
        assert not bl.is_revoked(None, blocked)
    finally:
        client.close()
        lacking.close()
    refused_to = {d.rpartition(" x")[0] for d in unexpected_refusals(cluster.nodes)}
    assert refused_to == {"command: asking (noasking)"}


@pytest.mark.parametrize("permission", CLUSTER_RULES.split()[:2])
def test_a_user_lacking_a_cluster_permission_gets_one_line_naming_it(
    cluster: RedisClusterProcesses, prefix: str, permission: str
) -> None:
    rules = SESSIONMON_CLUSTER_RULES.replace(f" {permission}", "").format(prefix=prefix)
    assert permission not in rules
    url = add_cluster_user(cluster.nodes, "lacking", rules)
    with pytest.raises(RedisUnavailable) as refused:
        connect(url)
    message = str(refused.value)
    name = permission.removeprefix("+")
    assert f"NOPERM this user has no permissions to run the '{name}' command" in message, message
    assert "the ACL user needs the permissions the README lists" in message
    assert len(message.splitlines()) == 1 and url.split(":")[2].split("@")[0] not in message


def test_the_single_node_rules_are_not_enough_on_a_cluster(
    cluster: RedisClusterProcesses, prefix: str
) -> None:
    url = add_cluster_user(cluster.nodes, "single", SESSIONMON_RULES.format(prefix=prefix))
    with pytest.raises(RedisUnavailable, match=r"'cluster\|slots' command"):
        connect(url)
