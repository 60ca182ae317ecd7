"""Every settings flag works before or after every command name; usage errors are one line."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sessionmon.cli import SETTING_FLAGS, build_parser, settings_from_args
from sessionmon.core.policy import OnMaxSessions
from sessionmon.core.store import DatabaseUrl, SqliteStore
from tests.cli.test_cli import assert_clean_error

Run = Callable[..., subprocess.CompletedProcess[str]]
COMMANDS = (None, "tui", "demo", "ls", "logout", "blacklist", "check", "audit", "purge")


def examples(tmp_path: Path) -> dict[str, tuple[list[str], str, Any]]:
    """Per setting: the arguments that set it, the Settings field and the value expected."""
    config = tmp_path / "config.toml"
    config.write_text("")
    return {
        "db": (["--db", str(tmp_path / "x.db")], "db", DatabaseUrl.parse(tmp_path / "x.db")),
        "redis_url": (["--redis-url", "redis://h:1/2"], "redis_url", "redis://h:1/2"),
        "prefix": (["--prefix", "p:"], "prefix", "p:"),
        "config": (["--config", str(config)], "config", config),
        "algorithm": (["--algorithm", "HS512"], "algorithm", "HS512"),
        "access_ttl": (["--access-ttl", "2m"], "access_ttl", 120.0),
        "refresh_ttl": (["--refresh-ttl", "3d"], "refresh_ttl", 3 * 86400.0),
        "leeway": (["--leeway", "7s"], "leeway", 7.0),
        "issuer": (["--issuer", "iss"], "issuer", "iss"),
        "audience": (["--audience", "aud"], "audience", "aud"),
        "require_typ": (["--no-require-typ"], "require_typ", False),
        "actor": (["--actor", "alice"], "actor", "alice"),
        "interval": (["--interval", "2s"], "interval", 2.0),
        "read_only": (["--read-only"], "read_only", True),
        "rotate_refresh": (["--no-rotate-refresh"], "rotate_refresh", False),
        "reuse_grace": (["--reuse-grace", "0"], "reuse_grace", 0.0),
        "idle_timeout": (["--idle-timeout", "30m"], "idle_timeout", 1800.0),
        "absolute_timeout": (["--absolute-timeout", "1d"], "absolute_timeout", 86400.0),
        "max_sessions_per_user": (["--max-sessions-per-user", "3"], "max_sessions_per_user", 3),
        "on_max_sessions": (
            ["--on-max-sessions", "evict-oldest"],
            "on_max_sessions",
            OnMaxSessions.EVICT_OLDEST,
        ),
        "key_dir": (["--key-dir", str(tmp_path / "k")], "key_dir", tmp_path / "k"),
        "allow_weak_secret": (["--allow-weak-secret"], "allow_weak_secret", True),
        "redis_timeout": (["--redis-timeout", "500ms"], "redis_timeout", 0.5),
        "allow_evicting_redis": (["--allow-evicting-redis"], "allow_evicting_redis", True),
        "redis_wait_replicas": (["--redis-wait-replicas", "2"], "redis_wait_replicas", 2),
        "redis_ca_file": (["--redis-ca-file", "~/ca.pem"], "redis_ca_file", Path.home() / "ca.pem"),
        "redis_cert_file": (["--redis-cert-file", "/c.pem"], "redis_cert_file", Path("/c.pem")),
        "redis_key_file": (["--redis-key-file", "/k.pem"], "redis_key_file", Path("/k.pem")),
        "events": (["--no-events"], "events", False),
        "events_maxlen": (["--events-maxlen", "5000"], "events_maxlen", 5000),
    }


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c or "monitor")
def test_every_settings_flag_before_or_after_every_command(
    command: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "no-config"))
    cases = examples(tmp_path)
    assert set(cases) == {flag.name for flag in SETTING_FLAGS}  # a new flag needs an example
    cmd = [command] if command else []
    for name, (flag_args, field, expected) in cases.items():
        for argv in (cmd + flag_args, flag_args + cmd):
            args = build_parser().parse_args(argv)
            settings = settings_from_args(args, env={})
            assert getattr(settings, field) == expected, (name, argv)
            assert args.command == command


def test_settings_flags_around_keys_actions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "no-config"))
    for name, (flag_args, field, expected) in examples(tmp_path).items():
        for argv in (
            ["keys", "ls", *flag_args],
            ["keys", *flag_args, "rotate"],
            [*flag_args, "keys", "retire", "KID"],
        ):
            args = build_parser().parse_args(argv)
            assert getattr(settings_from_args(args, env={}), field) == expected, (name, argv)
            assert args.command == "keys"


def test_a_flag_after_the_command_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "no-config"))
    args = build_parser().parse_args(["--interval", "5s", "ls", "--interval", "2s"])
    assert settings_from_args(args, env={}).interval == 2.0


def test_ls_takes_the_monitor_settings_flags(run_cli: Run, store: SqliteStore) -> None:
    for extra in (["--read-only"], ["--interval", "2s"]):
        proc = run_cli("ls", *extra)
        assert proc.returncode == 1, proc.stderr  # an empty database: nothing matched
        assert proc.stderr == "no live sessions\n"


def test_a_negative_duration_is_one_line(run_cli: Run) -> None:
    proc = run_cli("purge", "--older-than", "-5m")
    assert_clean_error(proc, 2, "--older-than: duration must not be negative: '-5m'")
    assert "usage:" not in proc.stderr
    proc = run_cli("ls", "--access-ttl", "-1h")
    assert_clean_error(proc, 2, "--access-ttl: duration must not be negative: '-1h'")
    assert_clean_error(run_cli("purge", "--older-than", "5x"), 2, "--older-than: not a duration")


def test_argparse_errors_are_one_line(run_cli: Run) -> None:
    proc = run_cli("ls", "--nosuch")
    assert_clean_error(proc, 2, "unrecognized arguments: --nosuch")
    assert "usage:" not in proc.stderr and "(see sessionmon ls --help)" in proc.stderr
    proc = run_cli("purge", "--older-than")
    assert_clean_error(proc, 2, "purge: argument --older-than: expected one argument")
    assert "sessionmon purge --help" in proc.stderr
    proc = run_cli("ls", "--limit", "x", "--json")
    assert proc.returncode == 2
    assert "invalid int value: 'x'" in json.loads(proc.stdout)["error"]
