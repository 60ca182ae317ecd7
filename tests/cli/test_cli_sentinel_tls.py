"""The console script through ``rediss+sentinel://``: 1 master, 1 replica and 3 sentinels, all
TLS only with client certificates required (tests/redis_sentinel.py with ``tls``). A revoke and a
check go through; a bad certificate or a plain connection is one line, exit 3, never "revoked"."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator

import pytest

from sessionmon.core.auth import Auth
from sessionmon.core.blacklist import Blacklist, connect
from sessionmon.core.redis_client import TlsFiles
from sessionmon.core.store import Backend, SessionStore
from sessionmon.core.tokens import TokenCodec
from tests.cli.test_cli import assert_clean_error
from tests.redis_sentinel import SentinelSetup
from tests.redis_tls import Certificates, tls_binary

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def tls_sentinel(
    certs: Certificates, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SentinelSetup]:
    setup = SentinelSetup(tmp_path_factory.mktemp("tls-sentinel"), tls_binary(), tls=certs)
    try:
        yield setup.start()
    finally:
        setup.stop()


def sentinel_env(
    setup: SentinelSetup, ca: str = "ca.crt", client: str | None = "client", **extra: str
) -> dict[str, str]:
    assert setup.tls is not None
    env = {
        "SESSIONMON_REDIS_URL": setup.url(),
        "SESSIONMON_REDIS_CA_FILE": str(setup.tls.path(ca)),
    }
    if client is not None:
        env["SESSIONMON_REDIS_CERT_FILE"] = str(setup.tls.path(f"{client}.crt"))
        env["SESSIONMON_REDIS_KEY_FILE"] = str(setup.tls.path(f"{client}.key"))
    return env | extra


@pytest.fixture
def tls_auth(
    tls_sentinel: SentinelSetup, store: SessionStore, codec: TokenCodec, prefix: str
) -> Iterator[Auth]:
    """``Auth`` whose blacklist is the TLS service's master (what the console script reads)."""
    certs = tls_sentinel.tls
    assert certs is not None
    files = TlsFiles(certs.path("ca.crt"), certs.path("client.crt"), certs.path("client.key"))
    client = connect(tls_sentinel.url(), tls=files)
    yield Auth(store, Blacklist(client, prefix=prefix), codec, access_ttl=60, refresh_ttl=3600)
    client.close()


def test_revoke_and_check_through_tls_sentinels(
    run_cli: Run, tls_auth: Auth, tls_sentinel: SentinelSetup
) -> None:
    env = sentinel_env(tls_sentinel)
    session, access, _ = tls_auth.login("u1", "ann@example.com", "Ann")
    valid = run_cli("check", "--json", input=access, env_extra=env)
    assert valid.returncode == 0 and json.loads(valid.stdout)["valid"] is True, valid.stderr
    out = run_cli("logout", session.id, "--json", env_extra=env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["outcome"] == "ok"
    rejected = run_cli("check", "--json", input=access, env_extra=env)
    assert rejected.returncode == 1, rejected.stderr
    assert json.loads(rejected.stdout)["reason"] == "revoked"
    # Written on the master over TLS, and replicated over TLS.
    master = tls_sentinel.master.client()
    assert tls_sentinel.replica is not None
    replica = tls_sentinel.replica.client()
    try:
        key = tls_auth.blacklist.sid_key(session.id)
        assert master.exists(key)
        master.execute_command("WAIT", 1, 5000)
        assert replica.exists(key)
    finally:
        master.close()
        replica.close()
    check = run_cli("blacklist", "--check", env_extra=env)
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.startswith("ok: rediss+sentinel://127.0.0.1:"), check.stdout


@pytest.mark.parametrize(
    ("how", "needle"),
    [
        ("unknown CA", "no CA of --redis-ca-file"),
        ("no client certificate", "client certificate: --redis-cert-file, --redis-key-file)"),
        ("client certificate of another CA", "--redis-cert-file, --redis-key-file)"),
        ("plain sentinels", "(TLS-only sentinels need rediss+sentinel:// or ?sentinel_tls=1)"),
    ],
)
def test_tls_sentinel_mistakes_are_one_line_exit_3(
    run_cli: Run, tls_auth: Auth, tls_sentinel: SentinelSetup, how: str, needle: str
) -> None:
    env = {
        "unknown CA": sentinel_env(tls_sentinel, ca="other-ca.crt"),
        "no client certificate": sentinel_env(tls_sentinel, client=None),
        "client certificate of another CA": sentinel_env(tls_sentinel, client="stranger"),
        "plain sentinels": sentinel_env(
            tls_sentinel, SESSIONMON_REDIS_URL=tls_sentinel.url() + "?sentinel_tls=0"
        ),
    }[how]
    session, access, _ = tls_auth.login("u1", "ann@example.com", "Ann")
    out = run_cli("logout", session.id, env_extra=env)
    assert_clean_error(out, 3, needle)
    assert "no Redis Sentinel answered" in out.stderr
    if how != "plain sentinels":
        assert "TLS handshake failed" in out.stderr
    assert out.stdout == ""  # nothing reported revoked
    assert tls_auth.store.get_session(session.id) is not None
    assert not tls_auth.blacklist.is_revoked(None, session.id)
    checked = run_cli("check", input=access, env_extra=env)
    assert_clean_error(checked, 3, needle)
    assert checked.stdout == ""  # neither "valid" nor "revoked"


def test_tls_files_with_a_plain_sentinel_url_exit_2(
    run_cli: Run, tls_sentinel: SentinelSetup
) -> None:
    plain = tls_sentinel.url().replace("rediss+sentinel://", "redis+sentinel://")
    env = sentinel_env(tls_sentinel, SESSIONMON_REDIS_URL=plain)
    assert_clean_error(run_cli("blacklist", env_extra=env), 2, "need TLS: use rediss+sentinel://")


def test_plain_sentinels_and_tls_data_nodes(
    run_cli: Run,
    certs: Certificates,
    tmp_path_factory: pytest.TempPathFactory,
    backend: Backend,
    store: SessionStore,
    codec: TokenCodec,
    prefix: str,
) -> None:
    """``rediss+sentinel://...?sentinel_tls=0``: the sentinels are asked in plain text, the master
    is spoken to over TLS (a bad CA is then the master's handshake, in one line)."""
    if backend is Backend.POSTGRES:
        pytest.skip("the store's backend is not what this test is about (its own 3 sentinels)")
    setup = SentinelSetup(
        tmp_path_factory.mktemp("tls-data-sentinel"), tls_binary(), tls=certs, sentinel_tls=False
    )
    try:
        setup.start()
        assert setup.url().endswith("?sentinel_tls=0")
        files = TlsFiles(certs.path("ca.crt"), certs.path("client.crt"), certs.path("client.key"))
        client = connect(setup.url(), tls=files)
        try:
            auth = Auth(store, Blacklist(client, prefix=prefix), codec, access_ttl=60)
            env = sentinel_env(setup)
            first, access, _ = auth.login("u1", "ann@example.com", "Ann")
            second, _, _ = auth.login("u2", "bob@example.com", "Bob")
            bad = run_cli("logout", second.id, env_extra=sentinel_env(setup, ca="other-ca.crt"))
            assert_clean_error(bad, 3, "Redis TLS handshake failed: 127.0.0.1:")
            assert "no CA of --redis-ca-file" in bad.stderr and bad.stdout == ""
            assert not auth.blacklist.is_revoked(None, second.id)
            out = run_cli("logout", first.id, "--json", env_extra=env)
            assert out.returncode == 0, out.stderr
            rejected = run_cli("check", "--json", input=access, env_extra=env)
            assert json.loads(rejected.stdout)["reason"] == "revoked", rejected.stderr
        finally:
            client.close()
    finally:
        setup.stop()
