"""The CLI and rotation / lifetime policies: ``ls`` generations and deadlines, ``audit`` of
reuse detections and policy endings, the policy flags' one-line errors."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable

import pytest

from sessionmon.core.auth import Auth
from sessionmon.core.clock import FrozenClock
from sessionmon.core.policy import SessionPolicy
from sessionmon.core.tokens import Reason

Run = Callable[..., subprocess.CompletedProcess[str]]


def test_ls_shows_generation_and_policy_deadlines(run_cli: Run, auth: Auth) -> None:
    session, _, refresh = auth.login("u1", "ann@example.com", "Ann")
    for _ in range(3):
        result = auth.refresh(refresh)
        assert result.new_refresh_token
        refresh = result.new_refresh_token
    row = auth.store.get_session(session.id)
    assert row is not None

    (plain,) = json.loads(run_cli("ls", "--json").stdout)
    assert plain["generation"] == 3
    assert plain["idle_deadline"] is None and plain["absolute_deadline"] is None

    proc = run_cli("ls", "--json", "--idle-timeout", "30m", "--absolute-timeout", "12h")
    assert proc.returncode == 0, proc.stderr
    (limited,) = json.loads(proc.stdout)
    assert limited["idle_deadline"] == pytest.approx(row.last_seen_at + 1800)
    assert limited["absolute_deadline"] == pytest.approx(row.created_at + 43200)

    table = run_cli("ls", env_extra={"SESSIONMON_IDLE_TIMEOUT": "30m"}).stdout
    header, line = table.splitlines()[:2]
    assert header.split()[:9] == [
        "SESSION", "EMAIL", "NAME", "IP", "ACCESS", "REFRESH", "GEN", "IDLE", "STATE"
    ]  # fmt: skip
    assert line.split()[6] == "3" and "ABSOLUTE" not in header


def test_audit_shows_reuse_detection_and_policy_endings(
    run_cli: Run, auth: Auth, clock: FrozenClock
) -> None:
    stolen, _, first = auth.login("u1", "ann@example.com", "Ann", "10.0.0.1", "Laptop")
    assert auth.refresh(first, ip="10.0.0.2", user_agent="Laptop").ok
    clock.advance(11)
    reused = auth.refresh(first, ip="203.0.113.9", user_agent="Thief")
    assert reused.reason is Reason.REFRESH_REUSED
    auth.policy = SessionPolicy(idle_timeout=60)
    idle, _, refresh = auth.login("u2", "bob@example.com", "Bob")
    clock.advance(60)
    assert auth.refresh(refresh).reason is Reason.IDLE_TIMEOUT

    rows = json.loads(run_cli("audit", "--json").stdout)
    by_action = {r["action"]: r for r in rows}
    reuse = by_action["reuse_detected"]
    assert reuse["session_id"] == stolen.id and reuse["reason"] == "refresh_reused"
    assert reuse["detail"]["reuse"]["ip"] == "203.0.113.9"
    assert reuse["detail"]["legitimate"]["ip"] == "10.0.0.2"
    ended = by_action["session_ended"]
    assert (ended["session_id"], ended["reason"], ended["detail"]) == (idle.id, "idle", None)

    text = run_cli("audit").stdout
    assert "DETAIL" in text.splitlines()[0]
    (line,) = [ln for ln in text.splitlines() if "reuse_detected" in ln]
    assert "generation 0 presented, 1 live" in line
    assert "legitimate 10.0.0.2 (Laptop), reuse 203.0.113.9 (Thief)" in line
    assert any("session_ended" in ln and "idle" in ln for ln in text.splitlines())


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--on-max-sessions", "kick"), "--on-max-sessions: not one of deny, evict-oldest"),
        (("--max-sessions-per-user", "lots"), "--max-sessions-per-user: not a whole number"),
        (("--reuse-grace", "-5s"), "--reuse-grace"),
        (("--idle-timeout", "soon"), "--idle-timeout"),
    ],
)
def test_bad_policy_flags_are_one_line(run_cli: Run, args: tuple[str, ...], needle: str) -> None:
    proc = run_cli("ls", *args)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert needle in line
