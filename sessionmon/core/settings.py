"""Settings: flags > ``SESSIONMON_*`` env vars > TOML config file > defaults, turned into one
frozen ``Settings`` here. No secret is a setting: keys come from ``core.keys``.
"""

from __future__ import annotations

import getpass
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sessionmon.core.durations import parse_duration
from sessionmon.core.errors import ConfigError
from sessionmon.core.keys import ALGORITHMS, ENV_PREFIX
from sessionmon.core.policy import DEFAULT_REUSE_GRACE, OnMaxSessions, SessionPolicy
from sessionmon.core.store.base import Backend
from sessionmon.core.store.url import DatabaseUrl
from sessionmon.core.urls import mask_url

if TYPE_CHECKING:
    from sessionmon.core.redis_client import TlsFiles


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
    # Seconds a Redis command may take before it counts as unavailable (None: 1 s on the web
    # path, 3 s for the CLI and the monitor; see ``redis_timeout_for``).
    redis_timeout: float | None = None
    # Revoke even on a Redis that may evict keys (each revoke then says so).
    allow_evicting_redis: bool = False
    # > 0: a revoke is done only once this many replicas acknowledged it (WAIT).
    redis_wait_replicas: int = 0
    # rediss://: the CA bundle of the server's certificate, and a client certificate and key.
    redis_ca_file: Path | None = None
    redis_cert_file: Path | None = None
    redis_key_file: Path | None = None
    secret_file: Path | None = None
    private_key_file: Path | None = None
    public_key_file: Path | None = None
    key_dir: Path | None = None
    allow_weak_secret: bool = False
    config: Path | None = None
    # Refresh-token rotation and session lifetime policies (see core.policy).
    rotate_refresh: bool = True
    reuse_grace: float = DEFAULT_REUSE_GRACE
    idle_timeout: float | None = None
    absolute_timeout: float | None = None
    max_sessions_per_user: int | None = None
    on_max_sessions: OnMaxSessions = OnMaxSessions.DENY
    # The activity feed: a capped Redis Stream every process appends its events to.
    events: bool = True
    events_maxlen: int = 100_000
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

    def redis_timeout_for(self, *, web: bool = False) -> float:
        """The Redis timeout: the setting, else 1 s on the web path and 3 s for the tools."""
        from sessionmon.core.redis_client import TOOL_TIMEOUT, WEB_TIMEOUT

        if self.redis_timeout is not None:
            return self.redis_timeout
        return WEB_TIMEOUT if web else TOOL_TIMEOUT

    @property
    def redis_tls(self) -> TlsFiles:
        """The TLS files of a ``rediss://`` URL (empty when none is set)."""
        from sessionmon.core.redis_client import TlsFiles

        return TlsFiles(self.redis_ca_file, self.redis_cert_file, self.redis_key_file)

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)


def _positive(seconds: float) -> float:
    if seconds <= 0:
        raise ConfigError(f"must be positive, not {seconds:g}s")
    return seconds


def _count(value: Any) -> int:
    try:
        n = int(str(value).strip())
    except ValueError:
        raise ConfigError(f"not a whole number: {value!r}") from None
    if n < 0:
        raise ConfigError(f"must be 0 or more, not {n}")
    return n


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
    "redis_timeout": lambda v: _positive(parse_duration(v)),
    "allow_evicting_redis": parse_bool,
    "redis_wait_replicas": _count,
    "redis_ca_file": lambda v: Path(str(v)).expanduser(),
    "redis_cert_file": lambda v: Path(str(v)).expanduser(),
    "redis_key_file": lambda v: Path(str(v)).expanduser(),
    "secret_file": lambda v: Path(str(v)).expanduser(),
    "private_key_file": lambda v: Path(str(v)).expanduser(),
    "public_key_file": lambda v: Path(str(v)).expanduser(),
    "rotate_refresh": parse_bool,
    "reuse_grace": parse_duration,
    "idle_timeout": lambda v: _optional(parse_duration, v),
    "absolute_timeout": lambda v: _optional(parse_duration, v),
    "max_sessions_per_user": lambda v: _optional(_positive_int, v),
    "on_max_sessions": OnMaxSessions.parse,
    "key_dir": lambda v: Path(str(v)).expanduser(),
    "allow_weak_secret": parse_bool,
    "events": parse_bool,
    "events_maxlen": lambda v: _positive_int(v),
}


def _optional(convert: Any, value: Any) -> Any:
    """``convert(value)``, or None (no limit) for "", "0", "off", "none"."""
    if str(value).strip().lower() in ("", "0", "off", "none"):
        return None
    return convert(value)


def _positive_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"not a whole number: {value!r}")
    try:
        number = int(str(value).strip())
    except ValueError:
        raise ConfigError(f"not a whole number: {value!r}") from None
    if number < 1:
        raise ConfigError(f"must be at least 1: {value!r}")
    return number


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
    settings = Settings(config=config_path, explicit=frozenset(values), **values)
    SessionPolicy.from_settings(settings)  # one line for a policy that cannot work
    return settings
