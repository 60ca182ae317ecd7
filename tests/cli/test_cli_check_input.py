"""``sessionmon check`` with bytes that are not a token: invalid UTF-8 is a rejection, not a bug."""

from __future__ import annotations

import json
import subprocess

import pytest

from sessionmon.core.auth import Auth
from tests.cli.conftest import SCRIPT


def check(
    cli_env: dict[str, str], data: bytes, *args: str, **env: str
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [str(SCRIPT), "check", *args],
        input=data,
        capture_output=True,
        env={**cli_env, **env},
        timeout=60,
    )


@pytest.mark.parametrize("encoding", [None, "utf-8:strict"], ids=["locale", "strict-stdin"])
def test_invalid_utf8_on_stdin_is_rejected_as_malformed(
    cli_env: dict[str, str], auth: Auth, encoding: str | None
) -> None:
    _, access, _ = auth.login("u1", "ann@example.com", "Ann")
    extra = {"PYTHONIOENCODING": encoding} if encoding else {}
    for data in (
        access.encode() + b"\xff",
        b"\xff\xfe",
        access[:30].encode() + b"\xc3(" + access[32:].encode(),
    ):
        proc = check(cli_env, data, **extra)
        assert proc.returncode == 1, proc.stderr
        assert b"internal error" not in proc.stderr
        assert proc.stdout.startswith(b"rejected: malformed (token is not ASCII)")

        as_json = check(cli_env, data, "--json", **extra)
        assert as_json.returncode == 1, as_json.stderr
        out = json.loads(as_json.stdout)
        assert out["valid"] is False and out["reason"] == "malformed"
        assert out["signature_verified"] is False


def test_a_token_with_only_its_last_signature_character_changed_is_a_signature_problem(
    cli_env: dict[str, str], auth: Auth
) -> None:
    _, access, _ = auth.login("u1", "ann@example.com", "Ann")
    for ch in "BCD":  # at least two of these leave stray bits in the last character
        if access.endswith(ch):
            continue
        out = json.loads(check(cli_env, (access[:-1] + ch).encode(), "--json").stdout)
        assert out["reason"] == "bad_signature", out
        assert "header" not in (out["detail"] or "")
