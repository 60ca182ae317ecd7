"""The web layer's own settings, parsed in one place from ``SESSIONMON_*`` environment variables
(the core's settings, database, Redis, keys and TTLs, come from :mod:`sessionmon.core.settings`).

=================================  ===========================================================
``SESSIONMON_COOKIE_SECURE``       ``auto`` (default: ``Secure`` when the request came over
                                   HTTPS), ``1`` always, ``0`` never
``SESSIONMON_COOKIE_SAMESITE``     ``lax`` (default), ``strict`` or ``none`` (needs Secure=1)
``SESSIONMON_REFRESH_COOKIE_PATH`` ``Path`` of the refresh cookie (default: ``/``)
``SESSIONMON_TRUSTED_PROXY``       ``1``: believe ``X-Forwarded-Proto`` (default ``0``)
``SESSIONMON_ALLOWED_ORIGINS``     other origins allowed to POST, comma-separated
                                   (``https://app.example.com``); default: same origin only
``SESSIONMON_MAX_BODY``            request body cap in bytes (default 16384)
``SESSIONMON_FAIL_OPEN``           ``1``: serve without a user while Redis is down (default 503)
``SESSIONMON_REVOCATION_CACHE``    ``1`` (default): answer revocation checks from memory, kept
                                   current by Redis (``CachedRevocations``); ``0``: one
                                   ``EXISTS`` per request
=================================  ===========================================================
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from sessionmon.core.errors import ConfigError
from sessionmon.core.keys import ENV_PREFIX
from sessionmon.core.settings import parse_bool
from sessionmon.web.body import DEFAULT_MAX_BODY
from sessionmon.web.cookies import CookieSettings
from sessionmon.web.origin import normalize_origin

MAX_BODY_CEILING = 16 * 1024 * 1024


@dataclass(frozen=True)
class WebSettings:
    """Cookie attributes, proxy trust, cross-site policy and request limits of a web app."""

    cookie_secure: bool | None = None  # None: automatic (HTTPS requests only)
    cookie_samesite: str = "lax"
    refresh_cookie_path: str | None = None
    trusted_proxy: bool = False
    allowed_origins: frozenset[str] = frozenset()
    max_body: int = DEFAULT_MAX_BODY
    fail_open: bool = False
    revocation_cache: bool = True

    def cookies(self) -> CookieSettings:
        """The :class:`CookieSettings` these settings describe."""
        return CookieSettings(
            secure=self.cookie_secure,
            samesite=self.cookie_samesite,
            refresh_path=self.refresh_cookie_path,
            trust_forwarded_proto=self.trusted_proxy,
        )


def _var(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(ENV_PREFIX + name)
    return value.strip() if value is not None and value.strip() != "" else None


def _bool(env: Mapping[str, str], name: str) -> bool | None:
    value = _var(env, name)
    if value is None:
        return None
    try:
        return parse_bool(value)
    except ConfigError as exc:
        raise ConfigError(f"{ENV_PREFIX}{name}: {exc}") from None


def load_web_settings(env: Mapping[str, str] | None = None) -> WebSettings:
    """Parse the web settings; a bad value is a ``ConfigError`` naming the variable."""
    env = os.environ if env is None else env
    values: dict[str, object] = {}
    if (secure := _var(env, "COOKIE_SECURE")) is not None:
        values["cookie_secure"] = None if secure.lower() == "auto" else _bool(env, "COOKIE_SECURE")
    if (samesite := _var(env, "COOKIE_SAMESITE")) is not None:
        values["cookie_samesite"] = samesite.lower()
    if (path := _var(env, "REFRESH_COOKIE_PATH")) is not None:
        values["refresh_cookie_path"] = path
    for field_name, var in (
        ("trusted_proxy", "TRUSTED_PROXY"),
        ("fail_open", "FAIL_OPEN"),
        ("revocation_cache", "REVOCATION_CACHE"),
    ):
        if (flag := _bool(env, var)) is not None:
            values[field_name] = flag
    if (origins := _var(env, "ALLOWED_ORIGINS")) is not None:
        try:
            values["allowed_origins"] = frozenset(
                normalize_origin(o) for o in origins.split(",") if o.strip()
            )
        except ValueError as exc:
            raise ConfigError(f"{ENV_PREFIX}ALLOWED_ORIGINS: {exc}") from None
    if (max_body := _var(env, "MAX_BODY")) is not None:
        if not max_body.isdigit() or not 0 < int(max_body) <= MAX_BODY_CEILING:
            raise ConfigError(
                f"{ENV_PREFIX}MAX_BODY: a number of bytes from 1 to {MAX_BODY_CEILING}, "
                f"not {max_body!r}"
            )
        values["max_body"] = int(max_body)
    settings = WebSettings(**values)  # type: ignore[arg-type]
    try:
        settings.cookies()
    except ValueError as exc:
        raise ConfigError(f"cookie settings: {exc}") from None
    return settings
