"""The console script on a Redis that may evict, is full, does not persist, hangs, or has a
replica that does not acknowledge: exit codes, one line, nothing reported revoked that is not."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable

import pytest

from sessionmon.core.auth import OK_MAY_EVICT, Auth
from tests.cli.test_cli import assert_clean_error
from tests.redis_server import (
    EVICTING,
    FULL,
    NO_PERSISTENCE,
    RedisProcess,
    StartRedis,
    memory_full,
    start_replica,
)

Run = Callable[..., subprocess.CompletedProcess[str]]


def on(proc: RedisProcess, **extra: str) -> dict[str, str]:
    return {"SESSIONMON_REDIS_URL": proc.url, **extra}


def test_logout_on_an_evicting_redis_is_refused_exit_3(
    run_cli: Run, auth: Auth, start_redis: StartRedis
) -> None:
    proc = start_redis(*EVICTING)
    session, _, _ = auth.login("u1", "ann@example.com", "Ann")
    out = run_cli("logout", session.id, env_extra=on(proc))
    assert_clean_error(out, 3, "Redis may evict blacklist keys")
    assert "maxmemory-policy allkeys-lru" in out.stderr and "--allow-evicting-redis" in out.stderr
    assert out.stdout == ""  # nothing reported revoked (nor deleted)
    assert auth.store.get_session(session.id) is not None

    out = run_cli("logout", session.id, "--json", env_extra=on(proc))
    assert out.returncode == 3
    doc = json.loads(out.stdout)
    assert doc["outcome"] == "failed: redis may evict" and doc["revoked"] == []
    assert doc["deleted"] == 0 and "may evict" in doc["error"]
    audit = json.loads(run_cli("audit", "--json", "--session", session.id).stdout)
    assert [r["outcome"] for r in audit] == ["failed: redis may evict"] * 2


@pytest.mark.parametrize("how", ["flag", "env"])
def test_allow_evicting_redis_revokes_and_says_so(
    run_cli: Run, auth: Auth, start_redis: StartRedis, how: str
) -> None:
    proc = start_redis(*EVICTING)
    session, _, _ = auth.login("u1", "ann@example.com", "Ann")
    if how == "flag":
        out = run_cli("logout", session.id, "--allow-evicting-redis", env_extra=on(proc))
    else:
        env = on(proc, SESSIONMON_ALLOW_EVICTING_REDIS="1")
        out = run_cli("logout", session.id, env_extra=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("revoked  ") == 3 and f"deleted  session {session.id}" in out.stdout
    [line] = out.stderr.splitlines()
    assert line.startswith("sessionmon: warning: Redis may evict this revocation")
    assert auth.store.get_session(session.id) is None
    [row] = auth.store.audit(session_id=session.id)
    assert row.outcome == OK_MAY_EVICT

    other, _, _ = auth.login("u2", "bob@example.com", "Bob")
    out = run_cli("logout", other.id, "--json", "--allow-evicting-redis", env_extra=on(proc))
    assert out.returncode == 0
    doc = json.loads(out.stdout)
    assert doc["outcome"] == "ok" and len(doc["revoked"]) == 3 and "may evict" in doc["warning"]


def test_logout_on_a_full_redis_is_redis_unavailable_exit_3(
    run_cli: Run, auth: Auth, start_redis: StartRedis
) -> None:
    proc = start_redis(*FULL)
    session, _, _ = auth.login("u1", "ann@example.com", "Ann")
    with memory_full(proc):
        out = run_cli("logout", session.id, "--json", env_extra=on(proc))
    assert out.returncode == 3, out.stderr
    assert "internal error" not in out.stderr and "Traceback" not in out.stderr
    doc = json.loads(out.stdout)
    assert "OOM command not allowed" in doc["error"] and "nothing was revoked" in doc["error"]
    assert doc["outcome"] == "failed: redis unavailable" and doc["revoked"] == []
    assert auth.store.get_session(session.id) is not None  # blacklist first: nothing deleted
    [row] = auth.store.audit(session_id=session.id)
    assert row.outcome == "failed: redis unavailable"


def test_blacklist_check_one_line_per_finding(
    run_cli: Run, start_redis: StartRedis, redis_process: RedisProcess
) -> None:
    out = run_cli("blacklist", "--check", env_extra=on(redis_process))
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok: ") and "noeviction" in out.stdout

    out = run_cli("blacklist", "--check", env_extra=on(start_redis(*NO_PERSISTENCE)))
    assert out.returncode == 1, out.stderr
    assert out.stdout.splitlines() == [
        "warning: Redis persistence is off (appendonly no, no save points): revocations are "
        "lost when Redis restarts"
    ]

    evicting = start_redis(*EVICTING, *NO_PERSISTENCE)
    out = run_cli("blacklist", "--check", env_extra=on(evicting))
    assert out.returncode == 3
    lines = out.stdout.splitlines()
    assert len(lines) == 2 and lines[0].startswith("error: Redis may evict blacklist keys")
    assert lines[1].startswith("warning: Redis persistence is off")

    out = run_cli("blacklist", "--check", "--json", env_extra=on(evicting))
    doc = json.loads(out.stdout)
    assert doc["maxmemory_policy"] == "allkeys-lru" and doc["maxmemory"] == 3 << 20
    assert [f["code"] for f in doc["findings"]] == ["may_evict", "no_persistence"]

    out = run_cli("blacklist", "--check", "--allow-evicting-redis", env_extra=on(evicting))
    assert out.returncode == 1 and "allowed by --allow-evicting-redis" in out.stdout


def test_logout_not_acknowledged_by_the_replica_is_not_durable_exit_4(
    run_cli: Run, auth: Auth, start_redis: StartRedis
) -> None:
    master = start_redis()
    replica = start_replica(start_redis, master)
    session, _, _ = auth.login("u1", "ann@example.com", "Ann")
    env = on(master, SESSIONMON_REDIS_WAIT_REPLICAS="1")
    replica.pause()
    out = run_cli("logout", session.id, "--redis-timeout", "1s", env_extra=env)
    assert out.returncode == 4, out.stderr
    assert "revoked  " not in out.stdout and out.stdout.count("NOT durable  ") == 3
    assert f"NOT deleted  session {session.id}" in out.stdout
    assert_clean_error(out, 4, "not durable: 0 of 1 replica")
    assert auth.store.get_session(session.id) is not None
    doc = json.loads(
        run_cli("logout", session.id, "--json", "--redis-timeout", "1s", env_extra=env).stdout
    )
    assert doc["outcome"] == "failed: not durable" and doc["revoked"] == []
    assert len(doc["not_durable"]) == 3

    replica.resume()
    out = run_cli("logout", session.id, env_extra=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("revoked  ") == 3 and auth.store.get_session(session.id) is None


def test_logout_on_a_hung_redis_exits_3_within_the_timeout(
    run_cli: Run, auth: Auth, redis_process: RedisProcess
) -> None:
    session, _, _ = auth.login("u1", "ann@example.com", "Ann")
    # The console script's own start-up, measured now: the margin is what it costs.
    started = time.monotonic()
    assert run_cli("ls", env_extra=on(redis_process)).returncode == 0
    startup = time.monotonic() - started
    redis_process.pause()
    try:
        started = time.monotonic()
        out = run_cli("logout", session.id, "--redis-timeout", "3s", env_extra=on(redis_process))
        took = time.monotonic() - started
    finally:
        redis_process.resume()
    assert_clean_error(out, 3, "Redis unreachable")
    assert "Timeout" in out.stderr
    # One timeout plus the start-up, with room for a loaded machine; two timeouts (6 s) fail.
    assert took < 3.0 + 1.5 * startup + 1.0, f"{took:.2f}s (start-up {startup:.2f}s)"
    assert auth.store.get_session(session.id) is not None


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--redis-timeout", "0s"), "--redis-timeout: must be positive"),
        (("--redis-timeout", "soon"), "--redis-timeout: not a duration"),
        (("--redis-wait-replicas", "two"), "--redis-wait-replicas: not a whole number"),
        (("--redis-wait-replicas=-1"), "--redis-wait-replicas: must be 0 or more"),
    ],
)
def test_bad_redis_settings_are_one_line_exit_2(
    run_cli: Run, args: tuple[str, ...] | str, needle: str
) -> None:
    argv = (args,) if isinstance(args, str) else args
    assert_clean_error(run_cli("blacklist", *argv), 2, needle)
