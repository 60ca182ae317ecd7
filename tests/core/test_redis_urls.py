"""Redis URL forms: redis+sentinel:// parsed into sentinels, service, db and credentials;
passwords masked; the TLS files read from the settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from sessionmon.core.errors import ConfigError
from sessionmon.core.redis_client import SentinelClient, SentinelUrl, TlsFiles, connect
from sessionmon.core.settings import load_settings
from sessionmon.core.urls import mask_url


def test_sentinel_url_forms() -> None:
    url = SentinelUrl.parse("redis+sentinel://app:s%3Acret@10.0.0.1:26379,10.0.0.2:26380/main/2")
    assert url.sentinels == (("10.0.0.1", 26379), ("10.0.0.2", 26380))
    assert (url.service, url.db, url.username, url.password) == ("main", 2, "app", "s:cret")
    assert (url.sentinel_username, url.sentinel_password) == (None, None)
    short = SentinelUrl.parse("redis+sentinel://sentinel.internal/main")
    assert short.sentinels == (("sentinel.internal", 26379),) and short.db == 0
    assert short.password is None
    both = SentinelUrl.parse(
        "redis+sentinel://:pw@[::1]:26379/main?sentinel_username=mon&sentinel_password=spw"
    )
    assert both.sentinels == (("::1", 26379),) and both.password == "pw"
    assert (both.sentinel_username, both.sentinel_password) == ("mon", "spw")


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("redis+sentinel://h:1", "expected /service_name"),
        ("redis+sentinel://h:1/a/b/c", "expected /service_name"),
        ("redis+sentinel://h:1/a/b", "the database must be a number"),
        ("redis+sentinel://h:0/a", "expected host:port"),
        ("redis+sentinel://h:1,/a", "expected host:port"),
        ("redis+sentinel://h:1/a?password=x", "unknown option"),
        ("rediss+sentinel://h:1/a?sentinel_tls=maybe", "expected 1 or 0, not 'maybe'"),
    ],
)
def test_bad_sentinel_urls(url: str, needle: str) -> None:
    with pytest.raises(ConfigError, match="bad Redis Sentinel URL") as failed:
        connect(url.replace("//", "//u:topsecret@", 1))
    assert needle in str(failed.value) and "topsecret" not in str(failed.value)


def test_a_sentinel_client_is_made_without_connecting() -> None:
    client = connect("redis+sentinel://127.0.0.1:1,127.0.0.1:2/main", timeout=0.5)
    try:
        assert isinstance(client, SentinelClient)
        kwargs = client.connection_pool.connection_kwargs
        assert kwargs["socket_timeout"] == 0.5 and kwargs["retry"].budget == 0.5
    finally:
        client.close()


def test_sentinel_passwords_are_masked() -> None:
    masked = mask_url("redis+sentinel://app:pw@h1:1,h2:2/main?sentinel_password=spw")
    assert "pw" not in masked.replace("sentinel_password", "")
    assert masked.startswith("redis+sentinel://app:***@h1:1,h2:2/main")


def test_tls_files_from_env_and_their_checks(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not read until connecting")
    settings = load_settings({}, {"SESSIONMON_REDIS_CA_FILE": str(ca)})
    assert settings.redis_tls == TlsFiles(ca_file=ca)
    assert settings.redis_tls.kwargs() == {
        "ssl_cert_reqs": "required",
        "ssl_check_hostname": True,
        "ssl_ca_certs": str(ca),
    }
    assert not load_settings({}, {}).redis_tls
    with pytest.raises(ConfigError, match="need a rediss:// URL"):
        connect("redis://127.0.0.1:1/0", tls=TlsFiles(ca_file=ca))
    with pytest.raises(ConfigError, match="go together"):
        connect("rediss://127.0.0.1:1/0", tls=TlsFiles(ca_file=ca, cert_file=ca))


def test_sentinel_over_tls_url_forms(tmp_path: Path) -> None:
    both = SentinelUrl.parse("rediss+sentinel://h1:1,h2:2/main")
    assert (both.tls, both.sentinel_tls) == (True, True)
    data_only = SentinelUrl.parse("rediss+sentinel://h1:1/main?sentinel_tls=0")
    assert (data_only.tls, data_only.sentinel_tls) == (True, False)
    sentinels_only = SentinelUrl.parse("redis+sentinel://h1:1/main?sentinel_tls=yes")
    assert (sentinels_only.tls, sentinels_only.sentinel_tls) == (False, True)
    plain = SentinelUrl.parse("redis+sentinel://h1:1/main")
    assert (plain.tls, plain.sentinel_tls) == (False, False)
    ca = tmp_path / "ca.pem"
    ca.write_text("not read until connecting")
    client = connect("rediss+sentinel://127.0.0.1:1/main", timeout=0.5, tls=TlsFiles(ca_file=ca))
    try:
        assert isinstance(client, SentinelClient)
        kwargs = client.connection_pool.connection_kwargs
        assert kwargs["ssl_ca_certs"] == str(ca) and kwargs["ssl_cert_reqs"] == "required"
        assert client.connection_pool.connection_class.__name__ == "SentinelManagedSSLConnection"
        assert client.sentinels is not None
        sentinel_kwargs = client.sentinels.sentinel_kwargs
        assert sentinel_kwargs["ssl"] is True and sentinel_kwargs["ssl_ca_certs"] == str(ca)
    finally:
        client.close()
    with pytest.raises(ConfigError, match=r"need TLS: use rediss\+sentinel://"):
        connect("redis+sentinel://127.0.0.1:1/main", tls=TlsFiles(ca_file=ca))
    with pytest.raises(ConfigError, match="--redis-ca-file: no such file"):
        connect("rediss+sentinel://127.0.0.1:1/main", tls=TlsFiles(ca_file=tmp_path / "none"))
