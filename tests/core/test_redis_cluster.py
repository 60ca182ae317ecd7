"""The blacklist on a real Redis Cluster: URL detection, bad input, every master's settings, a
master down during a logout, and a master failover during revocations.

Each test that kills a node starts a cluster of its own (``tests/redis_cluster.py``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.cluster import RedisCluster

from sessionmon.core.auth import Auth, LogoutOutcome, LogoutResult
from sessionmon.core.blacklist import KIND_SESSION, Blacklist, RevokeRequest, connect
from sessionmon.core.blacklist_keys import shard_of
from sessionmon.core.clock import FrozenClock
from sessionmon.core.errors import (
    ConfigError,
    NotDurable,
    RedisMayEvict,
    RedisUnavailable,
    RevocationNotDurable,
    SessionmonError,
)
from sessionmon.core.redis_client import ClusterUrl
from sessionmon.core.redis_health import WriteGuard
from sessionmon.core.revocation_cache import CachedRevocations
from sessionmon.core.store import SessionStore
from sessionmon.core.tokens import TokenCodec
from tests.redis_cluster import RedisClusterProcesses, cluster_port
from tests.support.waiting import wait_until


@pytest.fixture
def new_cluster(tmp_path: Path) -> Iterator[type[RedisClusterProcesses]]:
    """Start clusters with ``new_cluster(masters=, replicas=, args=)``; all are torn down."""
    started: list[RedisClusterProcesses] = []

    def start(**kwargs: object) -> RedisClusterProcesses:
        c = RedisClusterProcesses(tmp_path / f"cluster-{len(started)}", **kwargs)  # type: ignore[arg-type]
        started.append(c)
        return c.start()

    yield start  # type: ignore[misc]
    for c in started:
        c.stop()


def sessions(n: int) -> list[RevokeRequest]:
    return [RevokeRequest(KIND_SESSION, f"sess-{i}", time.time() + 600) for i in range(n)]


def test_a_redis_url_of_a_cluster_node_gives_a_cluster_client(new_cluster, prefix: str) -> None:
    cluster = new_cluster(masters=3)
    node = cluster.nodes[1]
    client = connect(f"redis://127.0.0.1:{node.port}")
    try:
        assert isinstance(client, RedisCluster)
        bl = Blacklist(client, prefix=prefix)
        written = bl.revoke(sessions(30))
        assert len(written) == 30
        # The shards spread over the three masters.
        owners = {client.get_node_from_key(bl.sid_key(f"sess-{i}")).name for i in range(30)}
        assert len(owners) == 3
        assert all(bl.is_revoked(None, f"sess-{i}") for i in range(30))
        assert bl.count() == 30 and len(bl.page(limit=100)) == 30
    finally:
        client.close()
    with pytest.raises(ConfigError, match="database 0 only"):
        connect(f"redis://127.0.0.1:{node.port}/3")
    cluster_url = connect(f"redis+cluster://127.0.0.1:{node.port},127.0.0.1:1")
    try:
        assert isinstance(cluster_url, RedisCluster)
        assert Blacklist(cluster_url, prefix=prefix).is_revoked(None, "sess-0")
    finally:
        cluster_url.close()


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("redis+cluster://", "expected host:port"),
        ("redis+cluster://h1:7000,h2", "expected host:port"),
        ("redis+cluster://h1:99999", "expected host:port"),
        ("redis+cluster://h1:7000/2", "database 0 only"),
        ("redis+cluster://h1:7000?nope=1", "unknown option 'nope'"),
    ],
)
def test_a_malformed_cluster_url_is_one_line(url: str, why: str) -> None:
    with pytest.raises(ConfigError, match=why) as err:
        ClusterUrl.parse(url)
    assert "\n" not in str(err.value)


def test_a_wrong_seed_is_redis_unavailable_in_one_line(
    cli_env: dict[str, str], db_path: Path
) -> None:
    port = cluster_port()
    with pytest.raises(RedisUnavailable) as err:
        connect(f"redis+cluster://127.0.0.1:{port}", timeout=0.5)
    text = str(err.value)
    assert "\n" not in text and f"127.0.0.1:{port}" in text and "unreachable" in text
    env = cli_env | {"SESSIONMON_REDIS_URL": f"redis+cluster://127.0.0.1:{port}"}
    proc = subprocess.run(
        [sys.executable, "-m", "sessionmon", "blacklist"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 3, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert "Redis Cluster" in proc.stderr and "revoked" not in proc.stdout


def test_the_guard_reads_every_master(new_cluster, prefix: str) -> None:
    cluster = new_cluster(masters=3)
    client = connect(cluster.url)
    try:
        guard = WriteGuard(client)
        bl = Blacklist(client, prefix=prefix, guard=guard)
        assert bl.revoke(sessions(3))
        evicting = cluster.nodes[2]
        admin = evicting.client()
        try:
            admin.config_set("maxmemory", "100mb")
            admin.config_set("maxmemory-policy", "allkeys-lru")
        finally:
            admin.close()
        guard.max_age = 0  # read again now (else: on the next connection, or within a minute)
        with pytest.raises(RedisMayEvict, match=f"on master 127.0.0.1:{evicting.port}"):
            bl.revoke([RevokeRequest(KIND_SESSION, "after", time.time() + 600)])
        assert not bl.is_revoked(None, "after")
        assert guard.settings().node == f"127.0.0.1:{evicting.port}"
    finally:
        client.close()


def test_a_policy_changed_on_one_master_is_seen_when_its_connection_is_remade(
    new_cluster, prefix: str
) -> None:
    cluster = new_cluster(masters=3)
    client = connect(cluster.url)
    try:
        bl = Blacklist(client, prefix=prefix, guard=WriteGuard(client))
        assert len(bl.revoke(sessions(30))) == 30  # a connection to every master, checked
        changed = cluster.nodes[0]
        admin = changed.client()
        try:
            admin.config_set("maxmemory", "100mb")
            admin.config_set("maxmemory-policy", "volatile-lru")
            admin.client_kill_filter(_type="normal", skipme=True)  # our connections drop
        finally:
            admin.close()
        # The guard's settings are fresh (max_age): only the reconnect's check can see it.
        on_changed = [
            r
            for r in sessions(300)[30:]  # not revoked yet
            if client.get_node_from_key(bl.sid_key(r.sid)).port == changed.port
        ][:5]
        with pytest.raises(RedisMayEvict, match=f"on master 127.0.0.1:{changed.port}"):
            bl.revoke(on_changed)
        assert on_changed and not any(bl.is_revoked(None, r.sid) for r in on_changed)
    finally:
        client.close()


def test_a_master_down_during_a_logout_reports_exactly_what_was_revoked(
    new_cluster, store: SessionStore, codec: TokenCodec, clock: FrozenClock, prefix: str
) -> None:
    # Without full coverage the other masters keep serving their slots while one is down.
    cluster = new_cluster(masters=3, args=("--cluster-require-full-coverage", "no"))
    client = connect(cluster.url, timeout=1.0)
    try:
        bl = Blacklist(client, prefix=prefix, clock=clock)
        auth = Auth(store, bl, codec, access_ttl=60, refresh_ttl=3600, clock=clock)
        ids = [auth.login(f"u{i}", f"u{i}@example.com", f"U{i}")[0].id for i in range(40)]
        down = cluster.nodes[0]
        down.stop()
        result = auth.force_logout_many(ids, actor="ops", reason="incident")
        assert result.outcome is LogoutOutcome.REDIS_PARTIAL
        assert result.failed and result.found and not set(result.failed) & set(result.found)
        assert sorted(result.failed + result.found) == sorted(ids)
        assert result.error is not None and "NOT revoked" in result.error
        assert result.deleted == len(result.found)
        on_down = {sid for sid in ids if client.keyslot(bl.sid_key(sid)) in _slots(cluster, 1)}
        assert set(result.failed) == on_down  # exactly the sessions of the dead master's slots
        for sid in result.found:
            assert bl.is_revoked(None, sid)
            assert store.get_session(sid) is None
        for sid in result.failed:
            assert store.get_session(sid) is not None  # not revoked: not deleted either
        audit = {a.session_id: a.outcome for a in store.audit() if a.session_id in result.failed}
        assert set(audit.values()) == {LogoutOutcome.REDIS_PARTIAL.value}
        down.start()
        cluster.wait_ok()
        wait_until(lambda: _answers(bl, result.failed[0]), "the restarted master", timeout=30)
        assert not any(bl.is_revoked(None, sid) for sid in result.failed)
        again = auth.force_logout_many(result.failed, actor="ops", reason="incident")
        assert again.outcome is LogoutOutcome.OK and again.deleted == len(result.failed)
    finally:
        client.close()


def test_a_master_lost_in_the_middle_of_a_users_logout_fails_exactly_its_sessions(
    new_cluster, store: SessionStore, codec: TokenCodec, clock: FrozenClock, prefix: str
) -> None:
    """One user's sessions on every master; one master hangs (SIGSTOP) while the logout's
    pipelines are out, the others answer, then it dies without having run anything (SIGKILL).
    The masters work in parallel: the others' sessions are on the blacklist while the hung one
    still holds its pipeline (one after the other, they would wait behind it)."""
    cluster = new_cluster(masters=3, args=("--cluster-require-full-coverage", "no"))
    client = connect(cluster.url, timeout=30.0)  # the hang is ended by the kill, not a timeout
    reader = connect(cluster.url, timeout=1.0)
    try:
        bl = Blacklist(client, prefix=prefix, clock=clock)
        auth = Auth(store, bl, codec, access_ttl=60, refresh_ttl=3600, clock=clock)
        # A first logout: a connection to every master is open before one of them hangs.
        warm = [auth.login("warm", "warm@example.com", "W")[0].id for _ in range(30)]
        assert auth.force_logout_user("warm", actor="ops").deleted == len(warm)
        ids = [auth.login("alice", "alice@example.com", "Alice")[0].id for _ in range(60)]
        hung = cluster.nodes[1]
        on_hung = {sid for sid in ids if client.keyslot(bl.sid_key(sid)) in _slots(cluster, 2)}
        others = [sid for sid in ids if sid not in on_hung]
        assert on_hung and others and len({bl.layout.tag(s) for s in others}) > 1
        check = Blacklist(reader, prefix=prefix, clock=clock)
        hung.pause()
        results: list[object] = []
        worker = threading.Thread(
            target=lambda: results.append(auth.force_logout_user("alice", actor="ops"))
        )
        worker.start()
        try:
            wait_until(
                lambda: all(check.is_revoked(None, sid) for sid in others),
                "the other masters to take their sessions while one hangs",
                timeout=20,
            )
        finally:
            assert hung.proc is not None
            os.kill(hung.proc.pid, signal.SIGKILL)  # still stopped: it never ran the EVALs
            hung.proc.wait(timeout=10)
            hung.proc = None
            hung.paused = False
            worker.join(timeout=30)
        (result,) = results
        assert isinstance(result, LogoutResult)
        assert result.outcome is LogoutOutcome.REDIS_PARTIAL
        assert set(result.failed) == on_hung  # exactly the sessions of the lost master
        assert sorted(result.found) == sorted(others) and result.deleted == len(others)
        assert result.error is not None and "NOT revoked" in result.error
        assert f"127.0.0.1:{hung.port}" in result.error
        for sid in others:
            assert store.get_session(sid) is None
        for sid in on_hung:
            assert store.get_session(sid) is not None  # not revoked: not deleted either
        audit = {a.session_id: a.outcome for a in store.audit() if a.session_id in on_hung}
        assert set(audit.values()) == {LogoutOutcome.REDIS_PARTIAL.value}
        hung.start()
        cluster.wait_ok()
        wait_until(lambda: _answers(check, next(iter(on_hung))), "the restarted master", 30)
        assert not any(check.is_revoked(None, sid) for sid in on_hung)  # nothing written there
        again = auth.force_logout_user("alice", actor="ops")
        assert again.outcome is LogoutOutcome.OK and again.deleted == len(on_hung)
    finally:
        reader.close()
        client.close()


def test_wait_follows_each_masters_pipeline_and_the_least_count_decides(
    new_cluster, prefix: str
) -> None:
    cluster = new_cluster(masters=3, replicas=1)
    masters = [n for n in cluster.nodes if cluster.master_of(n)]
    wait_until(lambda: all(_replica_online(m) for m in masters), "every replica online", 30)
    client = connect(cluster.url, timeout=3.0)
    try:
        guard = WriteGuard(client, wait_replicas=1, wait_timeout=1.0)
        bl = Blacklist(client, prefix=prefix, guard=guard)
        many = sessions(60)
        assert len({client.get_node_from_key(bl.sid_key(r.sid)).name for r in many}) == 3
        assert len(bl.revoke(many[:30])) == 30  # every master's replica acknowledged
        guard.wait_replicas = 2  # each master has one replica: never enough
        guard.wait_timeout = 0.2
        with pytest.raises(NotDurable) as err:
            bl.revoke(many[30:])
        exc = err.value
        assert isinstance(exc, RevocationNotDurable)
        assert (exc.acked, exc.wanted) == (1, 2) and len(exc.ttls) == 30
        assert all(bl.is_revoked(None, r.sid) for r in many)  # written on the masters
    finally:
        client.close()


def _replica_online(master) -> bool:  # master: RedisProcess
    client = master.client()
    try:
        info = client.info("replication")
    finally:
        client.close()
    return int(info.get("connected_slaves", 0)) >= 1 and "online" in str(info.get("slave0", ""))


def test_a_master_failover_during_revocations_loses_no_acknowledged_one(
    new_cluster, prefix: str
) -> None:
    cluster = new_cluster(masters=3, replicas=1)
    client = connect(cluster.url, timeout=1.0)
    try:
        guard = WriteGuard(client, wait_replicas=1, wait_timeout=0.3)
        bl = Blacklist(client, prefix=prefix, guard=guard)
        masters = [n for n in cluster.nodes if cluster.master_of(n)]
        victim = masters[0]
        victim_slots = _slots(cluster, cluster.nodes.index(victim) + 1)
        done: list[str] = []
        failed: list[str] = []
        errors: list[str] = []
        killed_at: float | None = None
        done_after_kill = 0
        deadline = time.monotonic() + 90
        i = 0
        while time.monotonic() < deadline:
            sid = f"f-{i}"
            i += 1
            try:
                bl.revoke([RevokeRequest(KIND_SESSION, sid, time.time() + 600)])
            except (RedisUnavailable, NotDurable) as exc:  # reported as errors, never "done"
                failed.append(sid)
                errors.append(str(exc))
                if isinstance(exc, NotDurable) and killed_at is not None and victim.proc is None:
                    # The replica was promoted and has no replica of its own: bring the old
                    # master back (it rejoins as the new master's replica).
                    victim.start()
            except SessionmonError as exc:  # any other outcome is a bug
                raise AssertionError(f"unexpected {type(exc).__name__}: {exc}") from None
            else:
                done.append(sid)
                if killed_at is not None and client.keyslot(bl.sid_key(sid)) in victim_slots:
                    done_after_kill += 1  # on the victim's slots: its replica took over
            if killed_at is None and len(done) >= 100:
                victim.stop()  # SIGKILL: its replica takes over after the node timeout
                killed_at = time.monotonic()
            if killed_at is not None and done_after_kill >= 20:
                break
        assert killed_at is not None and done_after_kill >= 20, (len(done), errors[-3:])
        assert errors, "the failover window produced no error (the kill was not noticed)"
        assert all("\n" not in e for e in errors)
        check = connect(cluster.url)
        try:
            reader = Blacklist(check, prefix=prefix)
            lost = [sid for sid in done if not reader.is_revoked(None, sid)]
            assert lost == [], f"{len(lost)} acknowledged revocations lost"
        finally:
            check.close()
    finally:
        client.close()


def _slots(cluster: RedisClusterProcesses, position: int) -> set[int]:
    """The slots the ``position``-th node (1-based, in creation order) was given."""
    node = cluster.nodes[position - 1]
    admin = next(n for n in cluster.nodes if n is not node and n.proc is not None).client()
    try:
        raw = admin.execute_command("CLUSTER", "SLOTS")
    finally:
        admin.close()
    out: set[int] = set()
    for start, end, master, *_ in raw:
        if int(master[1]) == node.port:
            out |= set(range(int(start), int(end) + 1))
    return out


def _answers(bl: Blacklist, sid: str) -> bool:
    try:
        bl.is_revoked(None, sid)
    except RedisUnavailable:
        return False
    return True


def test_cached_revocations_track_every_master_and_fail_closed_when_one_channel_drops(
    new_cluster, prefix: str
) -> None:
    cluster = new_cluster(masters=3)
    client = connect(cluster.url)
    cache = CachedRevocations(Blacklist(client, prefix=prefix), max_staleness=0.05)
    writer = connect(cluster.url)
    try:
        assert cache.start(wait=10), cache.last_error
        bl = Blacklist(writer, prefix=prefix)
        sids = [f"c-{i}" for i in range(30)]  # on every master
        assert len({writer.get_node_from_key(bl.sid_key(s)).name for s in sids}) == 3
        assert not any(cache.is_revoked("j", s) for s in sids)
        wait_until(lambda: cache.live, "the cache to be live on every master")
        assert not any(cache.is_revoked("j", s) for s in sids)  # from memory now
        hits = cache.stats.hits
        assert not cache.is_revoked("j", sids[0]) and cache.stats.hits > hits
        bl.revoke([RevokeRequest(KIND_SESSION, s, time.time() + 600) for s in sids])
        # Another client's revocations reach the cache from each master's channel.
        wait_until(lambda: all(cache.is_revoked("j", s) for s in sids), "every invalidation")
        # One master's tracking connection drops: nothing is answered from memory.
        admin = cluster.nodes[1].client()
        try:
            listing = admin.client_list()
            ids = [c["id"] for c in listing if c.get("name") == "sessionmon-revocation-cache"]
            assert ids
            for cid in ids:
                admin.client_kill_filter(_id=cid)
        finally:
            admin.close()
        wait_until(lambda: not cache._live, "the cache to go dark")
        bypassed = cache.stats.bypassed
        bl.unrevoke([bl.sid_key(sids[0])])
        assert cache.is_revoked("j", sids[1]) is True
        if not cache.live:
            assert cache.stats.bypassed > bypassed
        wait_until(lambda: not cache.is_revoked("j", sids[0]), "the unrevoke to be seen")
        wait_until(lambda: cache.live, "the channels to be back", timeout=15)
    finally:
        cache.close()
        writer.close()
        client.close()


def test_a_slot_migration_during_revocations_keeps_every_acknowledged_one(
    new_cluster, prefix: str
) -> None:
    cluster = new_cluster(masters=3)
    client = connect(cluster.url, timeout=2.0)
    stale_client = None
    try:
        bl = Blacklist(client, prefix=prefix)
        sids = [s for s in (f"m-{i}" for i in range(20_000)) if shard_of(s) == 0][:600]
        slot = client.keyslot(bl.layout.index_keys[0])
        source = _owner(cluster, slot)
        target = next(n for n in cluster.nodes if n is not source)
        bl.revoke([RevokeRequest(KIND_SESSION, s, time.time() + 600) for s in sids[:200]])
        done: list[str] = list(sids[:200])
        # A client that learns of the move only from the MOVED answer to its check.
        stale_client = connect(cluster.url, timeout=2.0)
        stale = Blacklist(stale_client, prefix=prefix)
        assert stale.is_revoked(None, sids[0]) and not stale.is_revoked(None, sids[-1])
        errors: list[BaseException] = []
        stop = threading.Event()

        def revoke_more() -> None:
            for sid in sids[200:]:
                if stop.is_set():
                    return
                try:
                    bl.revoke([RevokeRequest(KIND_SESSION, sid, time.time() + 600)])
                except RedisUnavailable as exc:  # reported as an error, never "done"
                    errors.append(exc)
                except BaseException as exc:  # anything else is a bug
                    errors.append(exc)
                    return
                else:
                    done.append(sid)

        worker = threading.Thread(target=revoke_more)
        worker.start()
        wait_until(lambda: len(done) >= 250, "revocations under way")
        n_before = len(done)
        moved = _migrate_slot(slot, source, target, cluster)
        n_at_move = len(done)
        assert n_at_move > n_before, "no revocation ran while the slot was migrating"
        wait_until(lambda: len(done) >= n_at_move + 20 or not worker.is_alive(), "more revokes")
        stop.set()
        worker.join(timeout=30)
        assert moved > 0
        assert all(isinstance(e, RedisUnavailable) for e in errors), errors[:3]
        assert client.get_node_from_key(bl.sid_key(sids[0])).port == target.port
        # The check goes straight to the master it knows, which answers MOVED: followed.
        assert stale_client.get_node_from_key(bl.sid_key(sids[0])).port == source.port
        assert stale.is_revoked(None, sids[0]) and stale.is_revoked(None, done[-1])
        assert stale_client.get_node_from_key(bl.sid_key(sids[0])).port == target.port
        reader_client = connect(cluster.url)
        try:
            reader = Blacklist(reader_client, prefix=prefix)
            lost = [sid for sid in done if not reader.is_revoked(None, sid)]
            assert lost == [], f"{len(lost)} acknowledged revocations lost"
            # The index moved with its keys: every key listed, nothing listed twice.
            assert reader.count() == len(set(done)) + _written_but_failed(reader, sids, done)
        finally:
            reader_client.close()
    finally:
        if stale_client is not None:
            stale_client.close()
        client.close()


def _written_but_failed(bl: Blacklist, sids: list[str], done: list[str]) -> int:
    """Revokes that raised but whose EVAL ran (an error after the write): on the blacklist,
    never reported done. Counted so that the index total can be compared."""
    reported = set(done)
    return sum(1 for s in sids if s not in reported and bl.is_revoked(None, s))


def _owner(cluster: RedisClusterProcesses, slot: int):  # -> RedisProcess
    for position, node in enumerate(cluster.nodes, start=1):
        if slot in _slots(cluster, position):
            return node
    raise AssertionError(f"no node owns slot {slot}")


def _migrate_slot(slot: int, source, target, cluster: RedisClusterProcesses) -> int:
    """Move ``slot`` from ``source`` to ``target`` by hand (IMPORTING / MIGRATING, MIGRATE in
    batches of 10 keys, then SETSLOT NODE everywhere); returns the number of keys moved."""
    src, dst = source.client(), target.client()
    try:
        src_id = src.execute_command("CLUSTER", "MYID").decode()
        dst_id = dst.execute_command("CLUSTER", "MYID").decode()
        dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
        src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
        moved = 0
        while True:
            keys = src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 10)
            if not keys:
                break
            src.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys)
            moved += len(keys)
        for node in cluster.live():
            admin = node.client()
            try:
                admin.execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
            finally:
                admin.close()
        return moved
    finally:
        src.close()
        dst.close()


def test_doctor_reads_every_master(new_cluster, store: SessionStore, prefix: str) -> None:
    from sessionmon.core.doctor import Probe, Status, run_checks

    cluster = new_cluster(masters=3)
    client = connect(cluster.url)
    try:
        bl = Blacklist(client, prefix=prefix)
        bl.revoke(sessions(40))
        full = cluster.nodes[2]
        admin = full.client()
        try:
            used = int(admin.info("memory")["used_memory"])
            admin.config_set("maxmemory", str(int(used * 1.05)))  # 95% full: a problem
        finally:
            admin.close()
        report = run_checks(Probe(store, bl))
        checks = {c.name: c for c in report.checks}
        assert checks["index"].status is Status.OK, checks["index"]
        assert "40 key(s), 40 index entries" in checks["index"].figure
        assert checks["redis_memory"].status is Status.PROBLEM, checks["redis_memory"]
        assert checks["redis_eviction"].status is Status.OK  # noeviction on every master
    finally:
        client.close()
