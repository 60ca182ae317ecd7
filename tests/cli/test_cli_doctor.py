"""``sessionmon history`` and ``sessionmon doctor [--repair]`` through the console script: what
they print, their JSON, their exit codes, and bad input."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable

import pytest

from sessionmon.core.auth import Auth
from sessionmon.core.blacklist import Blacklist
from sessionmon.core.clock import FrozenClock
from sessionmon.core.doctor import REPAIR_ACTION
from sessionmon.core.store import SessionStore
from sessionmon.core.tokens import TokenCodec
from tests.cli.test_cli import assert_clean_error
from tests.redis_server import EVICTING, StartRedis

Run = Callable[..., subprocess.CompletedProcess[str]]


def test_history_lists_filters_and_says_when_nothing_matches(
    run_cli: Run, auth: Auth, store: SessionStore
) -> None:
    ann, _, _ = auth.login("u1", "ann@example.com", "Ann", "10.0.0.1")
    bob, _, _ = auth.login("u2", "bob@example.com", "Bob", "10.0.0.2")
    auth.logout(ann.id)
    auth.force_logout(bob.id, "alice", "stolen phone")
    out = run_cli("history")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["ENDED", "HOW", "EMAIL", "SESSION", "BY", "REASON", "IP", "STARTED"]
    assert len(lines) == 3 and "force_logout" in lines[1] and "stolen phone" in lines[1]
    rows = json.loads(run_cli("history", "--json", "--user", "ANN@example.com").stdout)
    assert [(r["session_id"], r["how"], r["ip"]) for r in rows] == [(ann.id, "logout", "10.0.0.1")]
    assert "token" not in json.dumps(rows).replace("_jti", "").replace("refresh_", "")
    rows = json.loads(run_cli("history", "--json", "--how", "force-logout").stdout)
    assert [r["session_id"] for r in rows] == [bob.id]
    rows = json.loads(run_cli("history", "--json", "--since", "1h", "--limit", "1").stdout)
    assert len(rows) == 1
    none = run_cli("history", "--until", "2h")
    assert none.returncode == 1 and none.stderr == "no ended sessions match\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--since", "yesterday-ish"), "not a time"),
        (("--how", "exploded"), "not a way a session ends"),
        (("--limit", "0"), "--limit must be at least 1"),
    ],
)
def test_history_bad_input_is_one_line_exit_2(
    run_cli: Run, store: SessionStore, args: tuple[str, ...], message: str
) -> None:
    out = run_cli("history", *args)
    assert_clean_error(out, 2, message)


def test_doctor_healthy_then_repair(
    run_cli: Run,
    start_redis: StartRedis,
    store: SessionStore,
    codec: TokenCodec,
    prefix: str,
) -> None:
    proc = start_redis()
    client = proc.client()
    clock = FrozenClock(time.time())
    bl = Blacklist(client, prefix=prefix, clock=clock)
    auth = Auth(store, bl, codec, access_ttl=60, refresh_ttl=3600, clock=clock)
    try:
        session, _, _ = auth.login("u1", "ann@example.com", "Ann")
        auth.logout(session.id)
        env = {"SESSIONMON_REDIS_URL": proc.url}
        ok = run_cli("doctor", env_extra=env)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert ok.stdout.splitlines()[-1].startswith("0 problem(s), 0 warning(s), 13 ok")

        # The revocation lost behind the core's back (keys and index entries).
        assert session.access_jti and session.refresh_jti
        bl.unrevoke(
            [
                bl.sid_key(session.id),
                bl.token_key(session.id, session.access_jti),
                bl.token_key(session.id, session.refresh_jti),
            ]
        )
        bad = run_cli("doctor", "--json", env_extra=env)
        assert bad.returncode == 2
        report = json.loads(bad.stdout)
        (check,) = [c for c in report["checks"] if c["status"] != "ok"]
        assert check["name"] == "deleted_but_usable" and check["items"][0].startswith(session.id)
        text = run_cli("doctor", env_extra=env).stdout
        assert f"  - {session.id}" in text and "fix: sessionmon doctor --repair" in text

        fixed = run_cli("doctor", "--repair", env_extra=env)
        assert fixed.returncode == 0, fixed.stdout
        assert fixed.stdout.splitlines()[0].startswith("repaired: index: 0 added")
        assert "sessions revoked again: 1" in fixed.stdout.splitlines()[0]
        assert bl.is_revoked(None, session.id)
        assert [a.action for a in store.audit(limit=1)] == [REPAIR_ACTION]
        feed = run_cli("events", "--json", "--kind", "doctor_repair", env_extra=env)
        (event,) = [json.loads(line) for line in feed.stdout.splitlines()]
        assert event["kind"] == "doctor_repair" and "revoked again: 1" in event["reason"]
    finally:
        client.close()


def test_doctor_on_an_evicting_redis_exits_2_and_repair_refuses(
    run_cli: Run, start_redis: StartRedis, store: SessionStore
) -> None:
    proc = start_redis(*EVICTING)
    out = run_cli("doctor", env_extra={"SESSIONMON_REDIS_URL": proc.url})
    assert out.returncode == 2
    assert out.stdout.startswith("problem  Redis eviction policy: maxmemory-policy allkeys-lru")
    warn = run_cli("doctor", "--allow-evicting-redis", env_extra={"SESSIONMON_REDIS_URL": proc.url})
    assert warn.returncode == 1 and warn.stdout.startswith("warning  Redis eviction policy")


def test_history_retention_is_a_setting_and_purge_applies_it(
    run_cli: Run, auth: Auth, clock: FrozenClock
) -> None:
    clock.set(time.time() - 3600)  # ended an hour ago
    old, _, _ = auth.login("u1", "ann@example.com", "Ann")
    auth.logout(old.id)
    clock.set(time.time())
    new, _, _ = auth.login("u2", "bob@example.com", "Bob")
    auth.logout(new.id)
    assert len(json.loads(run_cli("history", "--json").stdout)) == 2
    out = run_cli("purge", env_extra={"SESSIONMON_HISTORY_RETENTION": "30m"})
    assert out.returncode == 0, out.stderr
    rows = json.loads(run_cli("history", "--json").stdout)
    assert [r["session_id"] for r in rows] == [new.id]
    bad = run_cli("history", "--history-retention", "0s")
    assert_clean_error(bad, 2, "must be positive")
