"""Exit codes of partial results; the one JSON object a failing ``--json`` command prints."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable

from sessionmon.core.auth import Auth

Run = Callable[..., subprocess.CompletedProcess[str]]


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
