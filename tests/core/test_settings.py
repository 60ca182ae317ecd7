"""Settings: flags > env > TOML file, durations, booleans, masking, secrets and key loading."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from sessionmon.core.durations import format_duration, parse_duration
from sessionmon.core.errors import ConfigError
from sessionmon.core.keydir import key_dir_for
from sessionmon.core.keys import load_keys, secret_path_for
from sessionmon.core.settings import Settings, load_settings, parse_bool
from sessionmon.core.urls import mask_url
from tests.core.forge import new_private_key, write_key_files


@pytest.fixture(autouse=True)
def isolated_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Never read the developer's own config file or data directory."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    return tmp_path


def write_toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


# -- precedence ------------------------------------------------------------------------------


def test_defaults(tmp_path: Path) -> None:
    s = load_settings({}, env={})
    assert s.db.path == tmp_path / "xdg-data" / "sessionmon" / "sessions.db"
    assert (s.redis_url, s.prefix, s.algorithm) == (None, "sessionmon:", "HS256")
    assert (s.access_ttl, s.refresh_ttl, s.leeway) == (900, 7 * 86400, 10)
    assert s.require_typ is True and s.read_only is False and s.embedded
    assert s.config is None


def test_flags_beat_env_beat_toml(tmp_path: Path) -> None:
    path = write_toml(
        tmp_path,
        '[sessionmon]\nprefix = "toml:"\naccess-ttl = "1m"\nleeway = "3s"\nactor = "toml"\n',
    )
    env = {"SESSIONMON_PREFIX": "env:", "SESSIONMON_ACCESS_TTL": "2m"}
    s = load_settings({"config": str(path), "prefix": "flag:"}, env=env)
    assert s.prefix == "flag:"  # flag over env over file
    assert s.access_ttl == 120  # env over file
    assert s.leeway == 3 and s.actor == "toml"  # file over defaults
    assert s.config == path
    # None flags mean "not given" and do not hide the env var.
    assert load_settings({"config": str(path), "prefix": None}, env=env).prefix == "env:"
    # An empty env var is "not set".
    assert load_settings({"config": str(path)}, env={"SESSIONMON_PREFIX": ""}).prefix == "toml:"


def test_toml_without_section_and_config_from_env(tmp_path: Path) -> None:
    path = write_toml(tmp_path, 'prefix = "flat:"\n')
    assert load_settings({}, env={"SESSIONMON_CONFIG": str(path)}).prefix == "flat:"


def test_default_config_path_is_read(tmp_path: Path) -> None:
    default = tmp_path / "xdg-config" / "sessionmon" / "config.toml"
    default.parent.mkdir(parents=True)
    default.write_text('[sessionmon]\nprefix = "xdg:"\n')
    s = load_settings({}, env={})
    assert s.prefix == "xdg:" and s.config == default


def test_every_flag_has_an_env_var(tmp_path: Path) -> None:
    env = {
        "SESSIONMON_DB": str(tmp_path / "x.db"),
        "SESSIONMON_REDIS_URL": "redis://127.0.0.1:6379/3",
        "SESSIONMON_ALGORITHM": "ES256",
        "SESSIONMON_REFRESH_TTL": "1d",
        "SESSIONMON_LEEWAY": "0",
        "SESSIONMON_REQUIRE_TYP": "0",
        "SESSIONMON_ISSUER": "iss",
        "SESSIONMON_AUDIENCE": "aud",
        "SESSIONMON_ACTOR": "ops",
        "SESSIONMON_INTERVAL": "2s",
        "SESSIONMON_READ_ONLY": "true",
    }
    s = load_settings({}, env=env)
    assert s.db.path == tmp_path / "x.db" and s.redis_url == "redis://127.0.0.1:6379/3"
    assert (s.algorithm, s.refresh_ttl, s.leeway, s.require_typ) == ("ES256", 86400, 0, False)
    assert (s.issuer, s.audience, s.actor, s.interval, s.read_only) == (
        "iss",
        "aud",
        "ops",
        2,
        True,
    )
    assert not s.embedded


@pytest.mark.parametrize(
    ("flags", "env", "match"),
    [
        ({"algorithm": "none"}, {}, "unsupported algorithm"),
        ({"algorithm": "HS256, RS256"}, {}, "unsupported algorithm"),
        ({"access_ttl": "0s"}, {}, "must be positive"),
        ({}, {"SESSIONMON_ACCESS_TTL": "soon"}, "SESSIONMON_ACCESS_TTL"),
        ({"leeway": "10x"}, {}, "--leeway"),
        ({}, {"SESSIONMON_REQUIRE_TYP": "maybe"}, "SESSIONMON_REQUIRE_TYP"),
        ({"config": "/nonexistent/sessionmon.toml"}, {}, "config file not found"),
    ],
)
def test_bad_settings_are_config_errors(flags: dict, env: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_settings(flags, env=env)


def test_unknown_toml_key(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[sessionmon]\nprefx = 'typo:'\n")
    with pytest.raises(ConfigError, match="unknown setting 'prefx'"):
        load_settings({"config": str(path)}, env={})


def test_invalid_toml(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "prefix = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings({"config": str(path)}, env={})


@pytest.mark.parametrize("key", ["secret", "private_key", "private-key", "public_key"])
def test_secrets_in_toml_are_refused(tmp_path: Path, key: str) -> None:
    path = write_toml(tmp_path, f'[sessionmon]\n{key} = "hunter2-secret-value"\n')
    with pytest.raises(ConfigError) as info:
        load_settings({"config": str(path)}, env={})
    assert "SESSIONMON_SECRET" in str(info.value)
    assert "hunter2-secret-value" not in str(info.value)


def test_secret_file_in_toml_is_allowed(tmp_path: Path) -> None:
    path = write_toml(tmp_path, f'secret_file = "{tmp_path / "s"}"\n')
    assert load_settings({"config": str(path)}, env={}).secret_file == tmp_path / "s"


# -- durations and booleans ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30),
        ("15m", 900),
        ("7d", 604800),
        ("1h30m", 5400),
        ("2h", 7200),
        ("1w", 604800),
        ("500ms", 0.5),
        ("1.5m", 90),
        ("45", 45),
        (" 1h 30m ", 5400),
        ("15M", 900),
        (12, 12.0),
        (0.25, 0.25),
    ],
)
def test_parse_duration(text: str | int | float, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text",
    ["", "   ", "abc", "10x", "m", "-5s", "1h-30m", "1e3", "inf", "nan", "9" * 400 + "d", -1, True],
)
def test_bad_durations(text: str | int | bool) -> None:
    with pytest.raises(ConfigError):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (42, "42s"),
        (59.9, "59s"),
        (60, "1:00"),
        (872, "14:32"),
        (3600, "1h00m"),
        (11100, "3h05m"),
        (604_799, "6d23h"),
        (-5, "0s"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1", True),
        ("true", True),
        ("TRUE", True),
        ("yes", True),
        ("on", True),
        (True, True),
        ("0", False),
        ("false", False),
        ("no", False),
        ("off", False),
        (False, False),
    ],
)
def test_parse_bool(value: str | bool, expected: bool) -> None:
    assert parse_bool(value) is expected


def test_bad_bool() -> None:
    with pytest.raises(ConfigError, match="not a boolean"):
        parse_bool("maybe")


# -- masking ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("redis://user:hunter2@db.example:6379/0", "redis://user:***@db.example:6379/0"),
        ("rediss://:hunter2@db.example/1", "rediss://:***@db.example/1"),
        ("redis://:hunter2@[::1]:6379/0", "redis://:***@[::1]:6379/0"),
        ("unix://:hunter2@/run/redis.sock?db=2", "unix://:***@/run/redis.sock?db=2"),
        ("redis://db.example:6379/0?password=hunter2", "redis://db.example:6379/0?password=***"),
        ("redis://127.0.0.1:6379/15", "redis://127.0.0.1:6379/15"),
        ("unix:///tmp/x.sock", "unix:///tmp/x.sock"),
        ("", ""),
        (None, ""),
    ],
)
def test_mask_url(url: str | None, masked: str) -> None:
    assert mask_url(url) == masked
    assert "hunter2" not in mask_url(url)


def test_redis_display_never_shows_the_password(tmp_path: Path) -> None:
    s = Settings(db=tmp_path / "x.db", redis_url="redis://u:hunter2@h:1/0")
    assert "hunter2" not in s.redis_display and "***" in s.redis_display
    assert "hunter2" not in repr(s.with_(redis_url=None).redis_display)
    assert Settings(db=tmp_path / "x.db").redis_display.startswith("embedded")


# -- secrets and keys ------------------------------------------------------------------------


def test_missing_secret_with_a_redis_url_names_both_variables(tmp_path: Path) -> None:
    s = Settings(db=tmp_path / "x.db", redis_url="redis://127.0.0.1:6379/0")
    with pytest.raises(ConfigError) as info:
        load_keys(s, env={})
    assert "SESSIONMON_SECRET" in str(info.value) and "SESSIONMON_SECRET_FILE" in str(info.value)


def test_secret_from_env_or_file(tmp_path: Path) -> None:
    s = Settings(db=tmp_path / "x.db", redis_url="redis://h/0")
    from_env, from_file = "from-env-" + "e" * 32, "from-file-" + "f" * 32
    keys = load_keys(s, env={"SESSIONMON_SECRET": from_env})
    assert keys.signing_key == keys.verifying_key == from_env.encode()
    assert keys.source == "SESSIONMON_SECRET" and from_env not in repr(keys)
    secret_file = tmp_path / "secret"
    secret_file.write_text(from_file + "\n")
    keys = load_keys(s, env={"SESSIONMON_SECRET_FILE": str(secret_file)})
    assert keys.signing_key == from_file.encode()  # trailing newline stripped
    assert load_keys(s.with_(secret_file=secret_file), env={}).signing_key == from_file.encode()
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        load_keys(s, env={"SESSIONMON_SECRET_FILE": str(tmp_path / "empty")})
    with pytest.raises(ConfigError, match="cannot read"):
        load_keys(s, env={"SESSIONMON_SECRET_FILE": str(tmp_path / "missing")})


def test_embedded_default_generates_a_key_set_once(tmp_path: Path) -> None:
    db = tmp_path / "data" / "sessions.db"
    s = Settings(db=db)  # no Redis URL: the embedded default
    first = load_keys(s, env={})
    state = key_dir_for(db) / "state.json"
    assert state.parent == tmp_path / "data" / "sessions.db.keys" and state.exists()
    assert stat.S_IMODE(state.parent.stat().st_mode) == 0o700
    for path in state.parent.iterdir():
        want = 0o644 if path.name == "jwks.json" else 0o600
        assert stat.S_IMODE(path.stat().st_mode) == want, path
    assert len(first.signing_key) >= 64 and first.kid
    mtime = state.stat().st_mtime_ns
    second = load_keys(s, env={})
    assert second.signing_key == first.signing_key and state.stat().st_mtime_ns == mtime
    assert not secret_path_for(db).exists()
    # A configured secret wins over the generated one.
    explicit = "explicit-" + "x" * 32
    assert load_keys(s, env={"SESSIONMON_SECRET": explicit}).signing_key == explicit.encode()


def test_public_key_algorithm_without_key_files(tmp_path: Path) -> None:
    # With a Redis URL (not the embedded default) nothing is generated: a key must be configured.
    s = Settings(db=tmp_path / "x.db", algorithm="RS256", redis_url="redis://h/0")
    with pytest.raises(ConfigError) as info:
        load_keys(s, env={})
    assert "SESSIONMON_PRIVATE_KEY_FILE" in str(info.value)
    assert "SESSIONMON_PUBLIC_KEY_FILE" in str(info.value)


def test_key_files_that_are_not_keys(tmp_path: Path) -> None:
    s = Settings(db=tmp_path / "x.db", algorithm="RS256")
    junk = tmp_path / "junk.pem"
    junk.write_text("-----BEGIN NOTHING-----\n")
    with pytest.raises(ConfigError, match="not a PEM private key"):
        load_keys(s, env={"SESSIONMON_PRIVATE_KEY_FILE": str(junk)})
    with pytest.raises(ConfigError, match="not a PEM public key"):
        load_keys(s, env={"SESSIONMON_PUBLIC_KEY_FILE": str(junk)})


@pytest.mark.parametrize(("key_alg", "configured"), [("ES256", "RS256"), ("RS256", "EdDSA")])
def test_key_of_the_wrong_type_is_a_config_error(
    tmp_path: Path, key_alg: str, configured: str
) -> None:
    priv, pub = write_key_files(new_private_key(key_alg), tmp_path / "keys")
    s = Settings(db=tmp_path / "x.db", algorithm=configured)
    for env in (
        {"SESSIONMON_PRIVATE_KEY_FILE": str(priv)},
        {"SESSIONMON_PUBLIC_KEY_FILE": str(pub)},
    ):
        with pytest.raises(ConfigError, match=f"not a key for {configured}"):
            load_keys(s, env=env)
