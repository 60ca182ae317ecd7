"""Exit codes of partial results; the one JSON object a failing ``--json`` command prints."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from sessionmon.core.auth import Auth
from tests.cli.test_cli import assert_clean_error

Run = Callable[..., subprocess.CompletedProcess[str]]
REDIS_DOWN = {"SESSIONMON_REDIS_URL": "redis://user:hunter2secret@127.0.0.1:1/0"}


def test_logout_with_a_missing_session_is_a_partial_result(run_cli: Run, auth: Auth) -> None:
    a, _, _ = auth.login("u1", "ann@example.com", "Ann")
    b, _, _ = auth.login("u2", "bob@example.com", "Bob")
    proc = run_cli("logout", a.id, "nosuch")
    assert proc.returncode == 1, proc.stderr
    assert f"deleted  session {a.id}" in proc.stdout
    assert proc.stderr == "not found: nosuch\n"
    assert auth.store.get_session(a.id) is None  # what was found is logged out all the same

    proc = run_cli("logout", b.id, "nosuch2", "--json")
    assert proc.returncode == 1, proc.stderr
    out = json.loads(proc.stdout)
    assert out["found"] == [b.id] and out["missing"] == ["nosuch2"] and out["deleted"] == 1
    assert out["error"] is None and out["outcome"].startswith("partial")


def test_logout_json_with_redis_down_prints_the_error(run_cli: Run, auth: Auth) -> None:
    session, _, _ = auth.login("u1", "ann@example.com", "Ann")
    proc = run_cli("logout", session.id, "nosuch", "--json", env_extra=REDIS_DOWN)
    assert proc.returncode == 3
    out = json.loads(proc.stdout)
    assert "Redis unreachable" in out["error"] and "nothing was revoked" in out["error"]
    assert out["outcome"] == "failed: redis unavailable"
    assert out["requested"] == [session.id, "nosuch"]
    assert out["found"] == [session.id] and out["missing"] == ["nosuch"]
    assert out["revoked"] == [] and out["deleted"] == 0
    assert "hunter2secret" not in proc.stdout + proc.stderr
    assert_clean_error(proc, 3, "Redis unreachable")  # and the one line on stderr
    assert auth.store.get_session(session.id) is not None


@pytest.mark.parametrize(
    ("args", "env", "code", "needle"),
    [
        (("ls",), {"SESSIONMON_DB": "{tmp}/nope.db"}, 2, "database not found"),
        (("audit",), {"SESSIONMON_DB": "{tmp}/nope.db"}, 2, "database not found"),
        (("purge",), {"SESSIONMON_DB": "{tmp}/nope.db"}, 2, "database not found"),
        (("purge", "--dry-run"), {"SESSIONMON_DB": "{tmp}/nope.db"}, 2, "database not found"),
        (("logout", "--user", "a@b.c"), REDIS_DOWN, 3, "Redis unreachable"),
        (("blacklist",), REDIS_DOWN, 3, "Redis unreachable"),
        (("check",), {"SESSIONMON_SECRET": ""}, 2, "SESSIONMON_SECRET"),
        (("ls", "--limit", "0"), {}, 2, "--limit must be at least 1"),
    ],
    ids=["ls", "audit", "purge", "purge-dry-run", "logout-user", "blacklist", "check", "usage"],
)
def test_every_json_command_prints_one_object_with_error(
    run_cli: Run,
    auth: Auth,
    tmp_path: Path,
    args: tuple[str, ...],
    env: dict[str, str],
    code: int,
    needle: str,
) -> None:
    auth.login("u1", "a@b.c", "A")  # the user exists: logout --user reaches Redis
    env = {k: v.replace("{tmp}", str(tmp_path)) for k, v in env.items()}
    proc = run_cli(*args, "--json", input="a.b.c", env_extra=env)
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    out = json.loads(proc.stdout)  # exactly one JSON document on stdout
    assert isinstance(out, dict) and needle in out["error"]
    assert "\n" not in out["error"] and "hunter2secret" not in proc.stdout
    assert_clean_error(proc, code, needle)
