"""The web layer's settings, cookie attributes and cross-site rules, in process (no server)."""

from __future__ import annotations

import pytest

from sessionmon.core.errors import ConfigError
from sessionmon.web import CookieSettings
from sessionmon.web.config import WebSettings, load_web_settings
from sessionmon.web.origin import cross_site_reason, normalize_origin


def scope(scheme: str = "http", **headers: str) -> dict[str, object]:
    raw = [(k.replace("_", "-").lower().encode(), v.encode()) for k, v in headers.items()]
    return {"type": "http", "scheme": scheme, "headers": raw}


def test_secure_follows_the_request_scheme_unless_forced() -> None:
    auto = CookieSettings()
    assert auto.over_https(scope("https")) and not auto.over_https(scope("http"))
    assert "Secure" in auto.set_header("a", "v", 5, https=True).split("; ")
    assert "Secure" not in auto.set_header("a", "v", 5, https=False).split("; ")
    assert "Secure" in CookieSettings(secure=True).set_header("a", "v", 5).split("; ")
    assert "Secure" not in CookieSettings(secure=False).clear_header("a", https=True).split("; ")


def test_x_forwarded_proto_counts_only_from_a_trusted_proxy() -> None:
    forwarded = scope("http", x_forwarded_proto="https")
    assert not CookieSettings().over_https(forwarded)
    trusted = CookieSettings(trust_forwarded_proto=True)
    assert trusted.over_https(forwarded)
    # The nearest proxy appends its value last: a client's own "https" in front is not believed.
    assert not trusted.over_https(scope("http", x_forwarded_proto="https, http"))
    assert trusted.over_https(scope("http", x_forwarded_proto="http, https"))
    assert not trusted.over_https(scope("http"))


def test_refresh_cookie_path() -> None:
    c = CookieSettings(refresh_path="/auth/refresh")
    access, refresh = c.login_headers("a", "r", 60, 600)
    assert "Path=/" in access.split("; ") and "Path=/auth/refresh" in refresh.split("; ")
    assert "Path=/auth/refresh" in c.logout_headers()[1].split("; ")
    with pytest.raises(ValueError, match="cookie path"):
        CookieSettings(refresh_path="auth; Domain=evil")
    with pytest.raises(ValueError, match="Secure"):
        CookieSettings(samesite="none", secure=None)


def test_load_web_settings() -> None:
    assert load_web_settings({}) == WebSettings()
    s = load_web_settings(
        {
            "SESSIONMON_COOKIE_SECURE": "auto",
            "SESSIONMON_COOKIE_SAMESITE": "Strict",
            "SESSIONMON_TRUSTED_PROXY": "yes",
            "SESSIONMON_ALLOWED_ORIGINS": "https://App.Example.com:443, http://localhost:3000",
            "SESSIONMON_MAX_BODY": "1024",
            "SESSIONMON_FAIL_OPEN": "1",
            "SESSIONMON_REVOCATION_CACHE": "on",
        }
    )
    assert s.cookie_secure is None and s.cookie_samesite == "strict" and s.trusted_proxy
    assert s.allowed_origins == {"https://app.example.com", "http://localhost:3000"}
    assert s.max_body == 1024 and s.fail_open and s.revocation_cache
    assert load_web_settings({}).revocation_cache  # on by default
    assert not load_web_settings({"SESSIONMON_REVOCATION_CACHE": "0"}).revocation_cache
    assert load_web_settings({"SESSIONMON_COOKIE_SECURE": "0"}).cookies().secure is False


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SESSIONMON_COOKIE_SECURE": "maybe"}, "SESSIONMON_COOKIE_SECURE"),
        ({"SESSIONMON_TRUSTED_PROXY": "sure"}, "SESSIONMON_TRUSTED_PROXY"),
        ({"SESSIONMON_REVOCATION_CACHE": "fast"}, "SESSIONMON_REVOCATION_CACHE"),
        ({"SESSIONMON_COOKIE_SAMESITE": "none"}, "Secure"),
        ({"SESSIONMON_COOKIE_SAMESITE": "sometimes"}, "samesite"),
        ({"SESSIONMON_ALLOWED_ORIGINS": "https://a.example/path"}, "ALLOWED_ORIGINS"),
        ({"SESSIONMON_ALLOWED_ORIGINS": "*"}, "ALLOWED_ORIGINS"),
        ({"SESSIONMON_MAX_BODY": "20MB"}, "MAX_BODY"),
        ({"SESSIONMON_MAX_BODY": "0"}, "MAX_BODY"),
    ],
)
def test_bad_web_settings_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_web_settings(env)


def test_normalize_origin() -> None:
    assert normalize_origin("HTTPS://Example.COM:443") == "https://example.com"
    assert normalize_origin("http://[::1]:8080") == "http://[::1]:8080"
    for bad in ("example.com", "ftp://x", "https://x/y", "https://u@x", "null"):
        with pytest.raises(ValueError):
            normalize_origin(bad)


ALLOWED = frozenset({"https://app.example.com"})


@pytest.mark.parametrize(
    ("method", "headers", "refused"),
    [
        ("GET", {"sec-fetch-site": "cross-site"}, False),
        ("POST", {}, False),  # curl, scripts: no browser page behind it
        ("POST", {"sec-fetch-site": "same-origin"}, False),
        ("POST", {"sec-fetch-site": "none"}, False),
        ("POST", {"sec-fetch-site": "same-site"}, True),
        ("POST", {"sec-fetch-site": "cross-site"}, True),
        ("POST", {"sec-fetch-site": "cross-site", "origin": "https://app.example.com"}, False),
        ("POST", {"sec-fetch-site": "cross-site", "origin": "https://evil.example"}, True),
        ("POST", {"origin": "http://site.test:8000", "host": "site.test:8000"}, False),
        ("POST", {"origin": "http://evil.test", "host": "site.test:8000"}, True),
        ("POST", {"origin": "null", "host": "site.test"}, True),
        ("DELETE", {"origin": "http://evil.test", "host": "site.test"}, True),
    ],
)
def test_cross_site_rules(method: str, headers: dict[str, str], refused: bool) -> None:
    raw = [(k.encode(), v.encode()) for k, v in headers.items()]
    assert (cross_site_reason(method, raw, ALLOWED) is not None) is refused
