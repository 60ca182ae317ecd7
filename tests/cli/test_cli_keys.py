"""``sessionmon keys ...`` end to end: listing, rotation, retirement, JWKS export, audit rows,
one-line errors with exit 2, weak secrets."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import jwt

from sessionmon.core.auth import Auth
from sessionmon.core.store import SessionStore
from tests.cli.test_cli import assert_clean_error

Run = Callable[..., subprocess.CompletedProcess[str]]


def managed(tmp_path: Path, algorithm: str = "ES256") -> dict[str, str]:
    """A rotating key set in its own directory instead of the fixture's SESSIONMON_SECRET."""
    return {
        "SESSIONMON_SECRET": "",
        "SESSIONMON_KEY_DIR": str(tmp_path / "keys"),
        "SESSIONMON_ALGORITHM": algorithm,
    }


def ls(run_cli: Run, env: dict[str, str]) -> dict[str, str]:
    proc = run_cli("keys", "ls", "--json", env_extra=env)
    assert proc.returncode == 0, proc.stderr
    return {k["kid"]: k["state"] for k in json.loads(proc.stdout)["keys"]}


def test_rotate_retire_and_list_with_countdown(
    run_cli: Run, tmp_path: Path, store: SessionStore
) -> None:
    env = managed(tmp_path)
    first = ls(run_cli, env)
    assert sorted(first.values()) == ["current", "next"]
    (old,) = [k for k, s in first.items() if s == "current"]
    (nxt,) = [k for k, s in first.items() if s == "next"]

    proc = run_cli("keys", "rotate", "--reason", "quarterly", "--json", env_extra=env)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["kid"] == nxt and {"kid": old, "from": "current", "to": "previous"} in out["changes"]
    now = ls(run_cli, env)
    assert now[old] == "previous" and now[nxt] == "current"

    table = run_cli("keys", "ls", "--refresh-ttl", "2d", "--leeway", "10s", env_extra=env)
    assert table.returncode == 0 and "KID" in table.stdout
    (row,) = [line for line in table.stdout.splitlines() if line.startswith(old)]
    assert "previous" in row and "in 2d00h" in row  # refresh TTL + leeway, counting down
    listed = json.loads(
        run_cli("keys", "ls", "--json", "--refresh-ttl", "1h", env_extra=env).stdout
    )
    (prev,) = [k for k in listed["keys"] if k["state"] == "previous"]
    assert 3600 < prev["can_go_in"] <= 3600 + 10 + 1 and listed["overlap"] == 3610

    assert_clean_error(run_cli("keys", "retire", nxt, env_extra=env), 2, "is the current key")
    assert_clean_error(run_cli("keys", "retire", "nosuchkid", env_extra=env), 2, "nosuchkid")
    proc = run_cli("keys", "retire", old, "--reason", "leaked", env_extra=env)
    assert proc.returncode == 0 and f"{old}  previous -> retired" in proc.stdout
    assert_clean_error(run_cli("keys", "retire", old, env_extra=env), 2, "already retired")
    assert ls(run_cli, env)[old] == "retired"

    audit = json.loads(run_cli("audit", "--json", env_extra=env).stdout)
    actions = [(r["action"], r["reason"]) for r in audit]
    assert ("keys_rotate", "quarterly") in actions and ("keys_retire", "leaked") in actions
    assert_clean_error(run_cli("keys", env_extra=env), 2, "keys")


def test_export_jwks_public_keys_only_and_hmac_says_there_are_none(
    run_cli: Run, tmp_path: Path, store: SessionStore
) -> None:
    env = managed(tmp_path, "EdDSA")
    proc = run_cli("keys", "export-jwks", env_extra=env)
    assert proc.returncode == 0, proc.stderr
    jwks = json.loads(proc.stdout)
    assert set(ls(run_cli, env)) == {k["kid"] for k in jwks["keys"]}
    for jwk in jwks["keys"]:
        assert "d" not in jwk and jwk["alg"] == "EdDSA"
        jwt.PyJWK(jwk)  # a standard library reads it
    audit = json.loads(run_cli("audit", "--json", env_extra=env).stdout)
    assert audit[0]["action"] == "keys_export_jwks"

    hmac_env = managed(tmp_path, "HS256")
    proc = run_cli("keys", "export-jwks", env_extra=hmac_env)
    assert_clean_error(proc, 2, "no public keys")
    assert proc.stdout == ""


def test_a_configured_secret_is_listed_but_not_rotated(run_cli: Run, auth: Auth) -> None:
    proc = run_cli("keys", "ls", "--json")  # the fixture's SESSIONMON_SECRET
    listed = json.loads(proc.stdout)
    assert listed["managed"] is False and listed["where"] == "SESSIONMON_SECRET"
    (key,) = listed["keys"]
    assert key["state"] == "current" and key["age"] is None
    _, access, _ = auth.login("u1", "ann@example.com", "Ann")
    assert jwt.get_unverified_header(access)["kid"] == key["kid"]
    assert_clean_error(run_cli("keys", "rotate"), 2, "single configured key")
    assert "TEST" not in proc.stdout and "secret-" not in proc.stdout


def test_weak_secret_is_refused_unless_allowed(run_cli: Run) -> None:
    weak = {"SESSIONMON_SECRET": "changeme"}
    for args in (("keys", "ls"), ("check",)):
        proc = run_cli(*args, input="a.b.c", env_extra=weak)
        assert_clean_error(proc, 2, "SESSIONMON_SECRET is 8 bytes; HS256 needs")
        assert "changeme" not in proc.stderr
    proc = run_cli("keys", "ls", "--allow-weak-secret", env_extra=weak)
    assert proc.returncode == 0, proc.stderr
    # A flag that lowers a check is never taken from an abbreviation.
    assert_clean_error(run_cli("keys", "ls", "--allow-weak", env_extra=weak), 2, "--allow-weak")
    proc = run_cli("keys", "ls", env_extra={**weak, "SESSIONMON_ALLOW_WEAK_SECRET": "1"})
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("keys", "ls", env_extra={**weak, "SESSIONMON_ALGORITHM": "HS512"})
    assert_clean_error(proc, 2, "HS512 needs a secret of at least 64")


def test_check_names_an_unknown_key(run_cli: Run, tmp_path: Path) -> None:
    env = managed(tmp_path, "ES256")
    run_cli("keys", "ls", env_extra=env)
    from cryptography.hazmat.primitives.asymmetric import ec

    stranger = ec.generate_private_key(ec.SECP256R1())
    token = jwt.encode(
        {"sid": "s", "exp": 9_999_999_999, "typ": "access"},
        stranger,
        algorithm="ES256",
        headers={"kid": "stranger"},
    )
    proc = run_cli("check", input=token, env_extra=env)
    assert proc.returncode == 1 and "rejected: unknown_key" in proc.stdout


def test_es256_with_nothing_configured_just_works(run_cli: Run, tmp_path: Path) -> None:
    """A fresh machine, the embedded default, only SESSIONMON_ALGORITHM=ES256: the key set is
    generated beside the default database on first use, and rotates."""
    env = {
        "SESSIONMON_DB": "",
        "SESSIONMON_REDIS_URL": "",
        "SESSIONMON_SECRET": "",
        "SESSIONMON_ALGORITHM": "ES256",
    }
    listed = json.loads(run_cli("keys", "ls", "--json", env_extra=env).stdout)
    default_dir = tmp_path / "xdg-data" / "sessionmon" / "sessions.db.keys"
    assert listed["where"] == str(default_dir) and listed["algorithm"] == "ES256"
    assert run_cli("keys", "rotate", env_extra=env).returncode == 0
    assert len(json.loads(run_cli("keys", "export-jwks", env_extra=env).stdout)["keys"]) == 3
    for args in (("keys", "--help"), ("keys", "ls", "--help"), ("keys", "retire", "--help")):
        proc = run_cli(*args)
        assert proc.returncode == 0 and "--db" in proc.stdout, args
