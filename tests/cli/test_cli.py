"""The console script end to end: JSON shapes, exit codes, one-line errors, no secrets printed."""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from sessionmon.core.auth import Auth
from sessionmon.core.blacklist_keys import KeyLayout
from tests.conftest import TEST_SECRET

Run = Callable[..., subprocess.CompletedProcess[str]]

SESSION_FIELDS = {
    "id",
    "user_id",
    "email",
    "name",
    "created_at",
    "last_seen_at",
    "ip",
    "user_agent",
    "access_jti",
    "access_exp",
    "refresh_jti",
    "refresh_exp",
    "refresh_count",
    "source",
    "generation",
    "prev_refresh_jti",
    "rotated_at",
    "rotated_ip",
    "rotated_ua",
    "access_kid",
    "refresh_kid",
    "rotations",
    "state",
    "idle_deadline",
    "absolute_deadline",
}
BLACKLIST_FIELDS = {
    "key",
    "kind",
    "sid",
    "sub",
    "email",
    "reason",
    "actor",
    "revoked_at",
    "exp",
    "expires_at",
    "ttl",
}
AUDIT_FIELDS = {
    "id",
    "at",
    "actor",
    "action",
    "session_id",
    "user_id",
    "email",
    "reason",
    "revoked",
    "outcome",
    "detail",
}


def assert_clean_error(proc: subprocess.CompletedProcess[str], code: int, needle: str) -> None:
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert needle in lines[0]


def test_version_and_help_on_every_command(run_cli: Run) -> None:
    assert run_cli("--version").stdout.startswith("sessionmon ")
    for cmd in ("tui", "demo", "ls", "logout", "blacklist", "check", "audit", "purge"):
        proc = run_cli(cmd, "--help")
        assert proc.returncode == 0, cmd
        assert "--db" in proc.stdout and "usage: sessionmon " + cmd in proc.stdout


def test_ls_json_shape_and_user_filter(run_cli: Run, auth: Auth) -> None:
    auth.login("u1", "ann@example.com", "Ann", ip="192.0.2.1", user_agent="curl/8")
    auth.login("u2", "bob@example.com", "Bob")
    proc = run_cli("ls", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert {r["email"] for r in rows} == {"ann@example.com", "bob@example.com"}
    assert all(set(r) == SESSION_FIELDS for r in rows)
    assert all(r["state"] == "active" for r in rows)

    only = json.loads(run_cli("ls", "--json", "--user", "ann@example.com").stdout)
    assert [r["email"] for r in only] == ["ann@example.com"]

    text = run_cli("ls").stdout
    assert "ann@example.com" in text and "ACCESS" in text and "active" in text

    none = run_cli("ls", "--user", "nobody@example.com")
    assert none.returncode == 1


def test_ls_all_includes_expired(run_cli: Run, auth: Auth, clock) -> None:  # type: ignore[no-untyped-def]
    auth.refresh_ttl = 5
    auth.login("u1", "old@example.com", "Old")
    clock.advance(-3600)  # this session was created an hour ago: long expired now
    auth.login("u2", "older@example.com", "Older")
    clock.advance(3600)
    live = json.loads(run_cli("ls", "--json").stdout or "[]")
    everything = json.loads(run_cli("ls", "--json", "--all").stdout)
    assert "older@example.com" not in {r["email"] for r in live}
    assert {"older@example.com"} <= {r["email"] for r in everything}
    assert next(r for r in everything if r["email"] == "older@example.com")["state"] == "expired"


def test_purge_deletes_only_expired_and_audits(run_cli: Run, auth: Auth, clock) -> None:  # type: ignore[no-untyped-def]
    live, _, _ = auth.login("u1", "live@example.com", "Live")
    clock.advance(-7200)
    gone, _, _ = auth.login("u2", "gone@example.com", "Gone")  # refresh expired an hour ago
    clock.advance(7200)
    nothing = run_cli("purge", "--older-than", "2h", "--json")  # expired only 1h ago
    assert nothing.returncode == 0 and json.loads(nothing.stdout) == {"deleted": 0}
    assert auth.store.audit(limit=5) == []  # nothing done, nothing audited
    dry = run_cli("purge", "--dry-run", "--json")
    assert json.loads(dry.stdout) == {"would_delete": 1}
    assert auth.store.get_session(gone.id) is not None
    proc = run_cli("purge", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"deleted": 1}
    assert auth.store.get_session(gone.id) is None
    assert auth.store.get_session(live.id) is not None
    assert auth.store.audit(limit=1)[0].action == "purge"


def test_logout_session_then_blacklist_and_audit(
    run_cli: Run, auth: Auth, redis_client: redis.Redis, prefix: str
) -> None:
    session, access, _ = auth.login("u1", "ann@example.com", "Ann")
    proc = run_cli("logout", session.id, "--reason", "stolen laptop", "--actor", "alice")
    assert proc.returncode == 0, proc.stderr
    assert f"deleted  session {session.id}" in proc.stdout
    layout = KeyLayout(prefix)
    assert layout.sid_key(session.id) in proc.stdout
    assert access not in proc.stdout + proc.stderr

    assert auth.store.get_session(session.id) is None
    assert auth.authenticate(access).reason == "revoked"
    for key in (layout.sid_key(session.id), layout.token_key(session.id, session.access_jti)):
        assert redis_client.ttl(key) > 0

    entries = json.loads(run_cli("blacklist", "--json").stdout)
    assert {e["kind"] for e in entries} == {"access", "refresh", "session"}
    assert all(set(e) == BLACKLIST_FIELDS for e in entries)
    assert all(e["sid"] == session.id and e["ttl"] > 0 for e in entries)
    assert [e["expires_at"] for e in entries] == sorted(e["expires_at"] for e in entries)

    audit = json.loads(run_cli("audit", "--json").stdout)
    assert audit[0]["action"] == "force_logout" and audit[0]["actor"] == "alice"
    assert audit[0]["reason"] == "stolen laptop" and audit[0]["outcome"] == "ok"
    assert set(audit[0]) == AUDIT_FIELDS and len(audit[0]["revoked"]) == 3

    again = run_cli("logout", session.id)
    assert again.returncode == 1
    assert "not found" in again.stderr


def test_logout_user_json(run_cli: Run, auth: Auth) -> None:
    s1, _, _ = auth.login("u1", "ann@example.com", "Ann")
    s2, _, _ = auth.login("u1", "ann@example.com", "Ann")
    s3, _, _ = auth.login("u2", "bob@example.com", "Bob")
    proc = run_cli("logout", "--user", "ANN@example.com", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert set(out["found"]) == {s1.id, s2.id} and out["deleted"] == 2
    assert out["action"] == "force_logout_user" and out["outcome"] == "ok"
    assert auth.store.get_session(s3.id) is not None


def test_logout_usage_errors(run_cli: Run, auth: Auth) -> None:
    assert_clean_error(run_cli("logout"), 2, "SESSION_ID")
    assert run_cli("logout", "x", "--user", "y").returncode == 2


def test_check_valid_and_rejected(run_cli: Run, auth: Auth) -> None:
    session, access, refresh = auth.login("u1", "ann@example.com", "Ann")
    ok = run_cli("check", "--json", input=access + "\n")
    assert ok.returncode == 0, ok.stderr
    out = json.loads(ok.stdout)
    assert out["valid"] is True and out["reason"] is None
    assert out["claims"]["sid"] == session.id and out["claims"]["typ"] == "access"
    assert access.split(".")[2] not in ok.stdout  # never the signature

    text = run_cli("check", input=access)
    assert text.stdout.startswith("valid") and "ann@example.com" in text.stdout

    wrong = json.loads(run_cli("check", "--json", input=refresh).stdout)
    assert wrong == {**wrong, "valid": False, "reason": "wrong_type"}
    assert run_cli("check", "--refresh", input=refresh).returncode == 0

    tampered = access[:-4] + ("AAAA" if not access.endswith("AAAA") else "BBBB")
    bad = run_cli("check", "--json", input=tampered)
    assert bad.returncode == 1
    assert json.loads(bad.stdout)["reason"] == "bad_signature"

    garbage = run_cli("check", "--json", input="not a token")
    assert json.loads(garbage.stdout)["reason"] == "malformed"

    auth.force_logout(session.id, "ops")
    revoked = json.loads(run_cli("check", "--json", input=access).stdout)
    assert revoked["reason"] == "revoked"


def test_check_missing_secret_names_both_variables(run_cli: Run, cli_env: dict[str, str]) -> None:
    proc = run_cli("check", input="a.b.c", env_extra={"SESSIONMON_SECRET": ""})
    assert_clean_error(proc, 2, "SESSIONMON_SECRET")
    assert "SESSIONMON_SECRET_FILE" in proc.stderr


def test_corrupt_and_missing_db_exit_2(run_cli: Run, tmp_path: Path) -> None:
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not a database" * 100)
    assert_clean_error(run_cli("ls", "--db", str(bad)), 2, "corrupt")
    assert_clean_error(run_cli("audit", "--db", str(tmp_path / "nope.db")), 2, "not found")


def test_redis_unreachable_exit_3_password_masked(run_cli: Run, auth: Auth) -> None:
    session, _, _ = auth.login("u1", "ann@example.com", "Ann")
    url = "redis://user:hunter2secret@127.0.0.1:1/0"
    proc = run_cli("logout", session.id, env_extra={"SESSIONMON_REDIS_URL": url})
    assert_clean_error(proc, 3, "Redis unreachable")
    assert "hunter2secret" not in proc.stderr + proc.stdout
    assert auth.store.get_session(session.id) is not None  # nothing deleted


def test_secret_never_printed_and_not_accepted_on_argv(run_cli: Run) -> None:
    proc = run_cli("ls", "--secret", "abc")
    assert proc.returncode == 2
    assert TEST_SECRET not in proc.stdout + proc.stderr


def test_debug_shows_traceback(run_cli: Run, tmp_path: Path) -> None:
    proc = run_cli("ls", "--db", str(tmp_path / "nope.db"), "--debug")
    assert proc.returncode == 2 and "Traceback" in proc.stderr


def test_config_file_and_env_precedence(run_cli: Run, tmp_path: Path, auth: Auth) -> None:
    auth.login("u1", "ann@example.com", "Ann")
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(f'db = "{tmp_path / "other.db"}"\n')
    # env SESSIONMON_DB (set by cli_env) beats the config file
    assert run_cli("ls", "--config", str(cfg)).returncode == 0
    # the flag beats env
    proc = run_cli("ls", "--config", str(cfg), "--db", str(tmp_path / "other.db"))
    assert_clean_error(proc, 2, "not found")
    bad = tmp_path / "bad.toml"
    bad.write_text("colour = 'red'\n")
    assert_clean_error(run_cli("ls", "--config", str(bad)), 2, "unknown setting")


def test_demo_refuses_foreign_db_unless_forced(run_cli: Run, auth: Auth) -> None:
    auth.login("u1", "real@example.com", "Real User")
    proc = run_cli("demo", "--users", "2", "--quiet")
    assert_clean_error(proc, 2, "--force")


@pytest.mark.timeout(60)
def test_demo_runs_and_stops_cleanly_on_sigint(cli_env: dict[str, str], db_url) -> None:
    import signal
    import sys
    import time

    from sessionmon.core.errors import DatabaseError
    from sessionmon.core.store import open_store

    script = Path(sys.executable).parent / "sessionmon"
    proc = subprocess.Popen(
        [str(script), "demo", "--users", "6", "--seed", "7", "--access-ttl", "2s"],
        env=cli_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # As from a terminal: a suite started in the background (``cmd &``) passes SIGINT on
        # ignored, and Python then installs no handler for it.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 20
        store = None
        while time.monotonic() < deadline:
            if db_url.exists():
                with contextlib.suppress(DatabaseError):  # not created (migrated) yet
                    store = store or open_store(db_url, create=False)
                if store is not None and store.count_sessions() >= 3:
                    break
            time.sleep(0.2)
        assert store is not None and store.count_sessions() >= 3
        sessions = store.list_sessions()
        assert all(s.source == "demo" for s in sessions)
        assert len({s.ip for s in sessions}) > 1
        store.close()
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "login" in out
    assert "Traceback" not in err and "stopped" in err


def test_check_wrong_type_shows_verified_claims_and_hint(run_cli: Run, auth: Auth) -> None:
    session, _, refresh = auth.login("u1", "ann@example.com", "Ann")
    proc = run_cli("check", input=refresh)
    assert proc.returncode == 1
    assert "rejected: wrong_type (expected an access token" in proc.stdout
    assert "--refresh" in proc.stdout
    assert "UNVERIFIED" not in proc.stdout and session.id in proc.stdout
    out = json.loads(run_cli("check", "--json", input=refresh).stdout)
    assert out["signature_verified"] is True and out["claims"]["typ"] == "refresh"


def test_check_unverified_claims_are_marked(run_cli: Run, auth: Auth) -> None:
    from sessionmon.core.keys import KeyMaterial
    from sessionmon.core.tokens import TokenCodec

    other = TokenCodec(KeyMaterial("HS256", b"x" * 40, b"x" * 40))
    forged, _ = other.mint("access", sub="u1", sid="s1", ttl=60, email="evil@example.com")
    proc = run_cli("check", input=forged)
    assert "rejected: unknown_key" in proc.stdout  # another key: its kid is not ours
    assert "UNVERIFIED" in proc.stdout and "evil@example.com" in proc.stdout


def test_bad_redis_url_is_a_configuration_error(run_cli: Run) -> None:
    proc = run_cli("blacklist", "--redis-url", "http://user:pw@x")
    assert_clean_error(proc, 2, "bad Redis URL")
    assert "pw" not in proc.stderr.replace("http://user:***@x", "")


def test_usage_errors_and_no_match_messages(run_cli: Run, auth: Auth) -> None:
    auth.login("u1", "ann@example.com", "Ann")
    assert_clean_error(run_cli("ls", "--limit", "0"), 2, "--limit")
    proc = run_cli("audit", "--session", "nosuch")
    assert proc.returncode == 1 and "no audit rows match" in proc.stderr
    missing = run_cli("logout", "--user", "Nobody@Example.com")
    assert missing.returncode == 1
    rows = json.loads(run_cli("audit", "--json", "--user", "nobody@example.com").stdout)
    assert rows and rows[0]["outcome"] == "not_found"


def test_generated_key_set_beside_db_is_used_with_a_redis_url(
    run_cli: Run, tmp_path: Path, redis_url: str
) -> None:
    from sessionmon.core.keydir import key_dir_for
    from sessionmon.core.keys import load_keys
    from sessionmon.core.settings import Settings

    db = tmp_path / "own.db"
    embedded = Settings(db=db)  # the embedded default generates the key set once
    keys = load_keys(embedded, env={})
    key_file = key_dir_for(db) / f"HS256-{keys.kid}.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    # Later, with a Redis URL and no secret configured, the same key set is used.
    with_url = load_keys(Settings(db=db, redis_url=redis_url), env={})
    assert with_url.signing_key == keys.signing_key


def test_mistyped_db_is_never_created(run_cli: Run, tmp_path: Path, auth: Auth) -> None:
    _, access, _ = auth.login("u1", "ann@example.com", "Ann")
    missing = tmp_path / "typo" / "sessions.db"
    env = {"SESSIONMON_REDIS_URL": ""}  # the embedded default, which lives beside the DB
    assert_clean_error(run_cli("blacklist", "--db", str(missing), env_extra=env), 2, "not found")
    assert_clean_error(
        run_cli("check", "--db", str(missing), input=access, env_extra=env), 2, "not found"
    )
    # A malformed token needs neither the database nor Redis to be rejected.
    assert run_cli("check", "--db", str(missing), input="a.b.c", env_extra=env).returncode == 1
    assert not missing.parent.exists()


def test_embedded_redis_that_cannot_start_is_exit_3(run_cli: Run, tmp_path: Path) -> None:
    from sessionmon.core.store import SqliteStore

    db = tmp_path / "sessions.db"
    SqliteStore(db).close()
    (tmp_path / "sessions.db.redis.lock").mkdir()  # the start lock cannot be opened
    proc = run_cli("blacklist", "--db", str(db), env_extra={"SESSIONMON_REDIS_URL": ""})
    assert_clean_error(proc, 3, "could not start the embedded Redis")
