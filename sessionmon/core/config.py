"""Settings: flags > ``SESSIONMON_*`` env vars > TOML config file > defaults.

Secrets never come from argv: only from ``SESSIONMON_SECRET`` / ``SESSIONMON_SECRET_FILE`` (HMAC) or
``SESSIONMON_PRIVATE_KEY_FILE`` / ``SESSIONMON_PUBLIC_KEY_FILE`` (RS256, ES256, EdDSA), or a key
file generated beside the database when the embedded default is in use.
"""

from __future__ import annotations

import getpass
import math
import os
import re
import secrets
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sessionmon.core.errors import ConfigError, DatabaseMissing
from sessionmon.core.store.base import Backend
from sessionmon.core.store.url import DatabaseUrl, mask_password

ENV_PREFIX = "SESSIONMON_"
HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
PUBLIC_KEY_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA")
ALGORITHMS = HMAC_ALGORITHMS + PUBLIC_KEY_ALGORITHMS

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)?")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}


def parse_duration(text: str | float | int) -> float:
    """Parse ``30s``, ``15m``, ``7d``, ``1h30m`` or a plain number of seconds into seconds."""
    if isinstance(text, bool):
        raise ConfigError(f"not a duration: {text!r}")
    if isinstance(text, int | float):
        if text < 0:
            raise ConfigError(f"duration must not be negative: {text}")
        return float(text)
    s = str(text).strip().lower().replace(" ", "")
    if not s:
        raise ConfigError("empty duration")
    if s.startswith("-"):
        raise ConfigError(f"duration must not be negative: {text!r}")
    total, pos = 0.0, 0
    while pos < len(s):
        m = _DURATION_PART.match(s, pos)
        if not m:
            raise ConfigError(f"not a duration: {text!r} (use e.g. 30s, 15m, 2h, 7d)")
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if not math.isfinite(total):
        raise ConfigError(f"duration too large: {text!r}")
    return total


def format_duration(seconds: float) -> str:
    """Short human form: ``42s``, ``14:32``, ``3h05m``, ``6d23h``."""
    if seconds < 0:
        seconds = 0
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}:{s % 60:02d}"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600:02d}h"


def parse_bool(value: Any) -> bool:
    """Accept 1/0/true/false/yes/no/on/off."""
    if isinstance(value, bool):
        return value
    s = str(value).strip().lower()
    if s in ("1", "true", "yes", "on"):
        return True
    if s in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"not a boolean: {value!r} (use 1/0/true/false)")


def mask_url(url: str | None) -> str:
    """The URL with any password replaced by ``***`` (safe to print)."""
    return mask_password(url) if url else ""


def _xdg(var: str, fallback: str) -> Path:
    value = os.environ.get(var)
    return Path(value) if value else Path.home() / fallback


def default_db_path() -> Path:
    """``$XDG_DATA_HOME/sessionmon/sessions.db``."""
    return _xdg("XDG_DATA_HOME", ".local/share") / "sessionmon" / "sessions.db"


def may_create_db(settings: Settings) -> bool:
    """Whether a missing database file may be created: at the default path (a first run), unless
    ``--read-only``; never at a path the operator named (a typo must not look like an empty,
    healthy system)."""
    path = settings.db.path  # a PostgreSQL database's tables come from `sessionmon migrate`
    if settings.read_only or path is None:
        return False
    return path.expanduser().resolve() == default_db_path().expanduser().resolve()


def default_config_path() -> Path:
    """``$XDG_CONFIG_HOME/sessionmon/config.toml``."""
    return _xdg("XDG_CONFIG_HOME", ".config") / "sessionmon" / "config.toml"


def _default_actor() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "operator"


@dataclass(frozen=True)
class Settings:
    """Everything sessionmon is configured with (no secrets in here)."""

    db: DatabaseUrl = field(default_factory=lambda: DatabaseUrl(Backend.SQLITE, default_db_path()))
    redis_url: str | None = None
    prefix: str = "sessionmon:"
    algorithm: str = "HS256"
    access_ttl: float = 15 * 60.0
    refresh_ttl: float = 7 * 86400.0
    leeway: float = 10.0
    require_typ: bool = True
    issuer: str | None = None
    audience: str | None = None
    actor: str = field(default_factory=_default_actor)
    interval: float = 1.0
    read_only: bool = False
    secret_file: Path | None = None
    private_key_file: Path | None = None
    public_key_file: Path | None = None
    config: Path | None = None
    # The settings that a flag, an env var or the config file set (the rest are defaults).
    explicit: frozenset[str] = field(default_factory=frozenset, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.db, DatabaseUrl):  # a path given directly (tests, scripts)
            object.__setattr__(self, "db", DatabaseUrl.parse(self.db))

    @property
    def embedded(self) -> bool:
        """True when no Redis URL is configured and sessionmon runs its own server."""
        return not self.redis_url

    @property
    def redis_display(self) -> str:
        return mask_url(self.redis_url) if self.redis_url else f"embedded ({self.db.anchor}.redis)"

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)


# name -> converter; the names are the flag names with "_" for "-".
_CONVERTERS: dict[str, Any] = {
    "db": lambda v: DatabaseUrl.parse(str(v)),
    "redis_url": lambda v: str(v) or None,
    "prefix": str,
    "algorithm": str,
    "access_ttl": parse_duration,
    "refresh_ttl": parse_duration,
    "leeway": parse_duration,
    "require_typ": parse_bool,
    "issuer": lambda v: str(v) or None,
    "audience": lambda v: str(v) or None,
    "actor": str,
    "interval": parse_duration,
    "read_only": parse_bool,
    "secret_file": lambda v: Path(str(v)).expanduser(),
    "private_key_file": lambda v: Path(str(v)).expanduser(),
    "public_key_file": lambda v: Path(str(v)).expanduser(),
}


def _convert(name: str, value: Any, origin: str) -> Any:
    try:
        return _CONVERTERS[name](value)
    except ConfigError as exc:
        raise ConfigError(f"{origin}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{origin}: invalid value {value!r}: {exc}") from None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    section = data.get("sessionmon", data)
    out: dict[str, Any] = {}
    for key, value in section.items():
        name = key.replace("-", "_")
        if name in ("secret", "private_key", "public_key"):
            raise ConfigError(
                f"config file {path}: put secrets in SESSIONMON_SECRET or a file "
                f"(secret_file = ...), not in the config"
            )
        if name not in _CONVERTERS:
            raise ConfigError(f"config file {path}: unknown setting {key!r}")
        out[name] = _convert(name, value, f"config file {path}, {key}")
    return out


def load_settings(
    flags: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None
) -> Settings:
    """Merge flags (values that are not None), ``SESSIONMON_*`` env vars and the TOML file."""
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    env = os.environ if env is None else env

    config_path: Path | None
    explicit = flags.get("config") or env.get(ENV_PREFIX + "CONFIG")
    if explicit:
        config_path = Path(str(explicit)).expanduser()
        if not config_path.exists():
            raise ConfigError(f"config file not found: {config_path}")
    else:
        config_path = default_config_path()
        if not config_path.exists():
            config_path = None

    values: dict[str, Any] = _read_toml(config_path) if config_path else {}
    for name in _CONVERTERS:
        raw = env.get(ENV_PREFIX + name.upper())
        if raw is not None and raw != "":
            values[name] = _convert(name, raw, f"{ENV_PREFIX}{name.upper()}")
    for name, value in flags.items():
        if name in _CONVERTERS:
            flag = "--" + name.replace("_", "-")
            values[name] = _convert(name, value, flag)
    if "algorithm" in values and values["algorithm"] not in ALGORITHMS:
        raise ConfigError(
            f"unsupported algorithm {values['algorithm']!r}; choose one of {', '.join(ALGORITHMS)}"
        )
    if values.get("access_ttl", 1) <= 0 or values.get("refresh_ttl", 1) <= 0:
        raise ConfigError("--access-ttl and --refresh-ttl must be positive")
    if "interval" in values:
        values["interval"] = max(0.2, values["interval"])
    return Settings(config=config_path, explicit=frozenset(values), **values)


@dataclass(frozen=True)
class KeyMaterial:
    """The keys for one algorithm. ``repr`` never shows them."""

    algorithm: str
    signing_key: Any = field(repr=False)
    verifying_key: Any = field(repr=False)
    source: str = ""


def _read_key_file(path: Path, what: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from None
    if not data.strip():
        raise ConfigError(f"{what} {path} is empty")
    return data


def secret_path_for(db: Path) -> Path:
    """Where the generated secret for the embedded default lives (beside the DB, mode 0600)."""
    return db.with_name(db.name + ".secret")


def _generated_secret(db: Path) -> bytes:
    path = secret_path_for(db)
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48).encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process won the race
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as fh:
        fh.write(secret)
    return secret


def load_keys(
    settings: Settings, env: Mapping[str, str] | None = None, *, may_generate: bool = True
) -> KeyMaterial:
    """Load the signing and verifying keys for the configured algorithm.

    ``may_generate=False``: when the secret would be generated beside a database that does not
    exist, raise ``DatabaseMissing`` instead of creating anything beside a mistyped path.
    """
    env = os.environ if env is None else env
    alg = settings.algorithm
    if alg in HMAC_ALGORITHMS:
        secret_env = env.get(ENV_PREFIX + "SECRET")
        file_env = env.get(ENV_PREFIX + "SECRET_FILE")
        secret_file = Path(file_env).expanduser() if file_env else settings.secret_file
        if secret_env:
            secret, source = secret_env.encode(), "SESSIONMON_SECRET"
        elif secret_file:
            secret, source = _read_key_file(secret_file, "secret file").strip(), str(secret_file)
        elif settings.embedded or secret_path_for(settings.db.anchor).is_file():
            # The secret generated beside the DB is used whenever no secret is configured; it
            # is only ever created for the embedded default.
            path = secret_path_for(settings.db.anchor)
            if not may_generate and not path.is_file():
                raise DatabaseMissing(
                    f"database not found: {settings.db} (no secret is configured, and the "
                    f"generated one lives beside the database)"
                )
            secret, source = _generated_secret(settings.db.anchor), str(path)
        else:
            raise ConfigError(
                f"no signing secret for {alg}: set SESSIONMON_SECRET or SESSIONMON_SECRET_FILE"
            )
        return KeyMaterial(alg, secret, secret, source)

    priv_env = env.get(ENV_PREFIX + "PRIVATE_KEY_FILE")
    pub_env = env.get(ENV_PREFIX + "PUBLIC_KEY_FILE")
    priv_path = Path(priv_env).expanduser() if priv_env else settings.private_key_file
    pub_path = Path(pub_env).expanduser() if pub_env else settings.public_key_file
    if not priv_path and not pub_path:
        raise ConfigError(
            f"no key for {alg}: set SESSIONMON_PRIVATE_KEY_FILE (to sign) "
            f"and/or SESSIONMON_PUBLIC_KEY_FILE (to verify)"
        )
    from cryptography.hazmat.primitives import serialization

    private = public = None
    if priv_path:
        try:
            private = serialization.load_pem_private_key(
                _read_key_file(priv_path, "private key file"), password=None
            )
        except (ValueError, TypeError) as exc:
            raise ConfigError(
                f"private key file {priv_path} is not a PEM private key: {exc}"
            ) from None
        public = private.public_key()
    if pub_path:
        try:
            public = serialization.load_pem_public_key(_read_key_file(pub_path, "public key file"))
        except (ValueError, TypeError) as exc:
            raise ConfigError(
                f"public key file {pub_path} is not a PEM public key: {exc}"
            ) from None
    # A key of another type (an EC key for RS256, ...) is a configuration error now, not a
    # TypeError on the first mint or "bad_signature" for every token.
    import jwt

    for key, path in ((private, priv_path), (public, pub_path)):
        if key is None:
            continue
        try:
            jwt.get_algorithm_by_name(alg).prepare_key(key)
        except (jwt.InvalidKeyError, TypeError, ValueError):
            raise ConfigError(
                f"key file {path} holds a {type(key).__name__}, not a key for {alg}"
            ) from None
    return KeyMaterial(alg, private, public, str(priv_path or pub_path))
