"""The console script on a Sentinel service, a TLS-only Redis with client certificates, and as an
ACL user: it works with the right settings; each wrong one is one clear line, exit 3 (the server
said no) or 2 (the settings cannot work), never a traceback, never "revoked"."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable

import pytest

from sessionmon.core.auth import Auth
from tests.cli.test_cli import assert_clean_error
from tests.redis_acl import SESSIONMON_RULES, add_user
from tests.redis_server import RedisProcess, StartRedis, free_port
from tests.redis_tls import TlsRedis, tls_env

Run = Callable[..., subprocess.CompletedProcess[str]]


def test_logout_over_mutual_tls(run_cli: Run, auth: Auth, tls_redis: TlsRedis) -> None:
    session, _, _ = auth.login("u1", "ann@example.com", "Ann")
    out = run_cli("logout", session.id, "--json", env_extra=tls_env(tls_redis))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["outcome"] == "ok"
    client = tls_redis.client()
    try:
        assert client.exists(auth.blacklist.sid_key(session.id))
    finally:
        client.close()
    check = run_cli("blacklist", "--check", env_extra=tls_env(tls_redis))
    assert check.returncode == 0 and check.stdout.startswith("ok: rediss://127.0.0.1:"), check


def test_the_tls_files_as_flags(run_cli: Run, tls_redis: TlsRedis) -> None:
    c = tls_redis.certs.path
    out = run_cli(
        "blacklist", "--check", "--redis-url", tls_redis.url(),
        "--redis-ca-file", str(c("ca.crt")), "--redis-cert-file", str(c("client.crt")),
        "--redis-key-file", str(c("client.key")),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize(
    ("how", "needle"),
    [
        ("unknown CA", "no CA of --redis-ca-file"),
        ("wrong host", "Hostname mismatch, certificate is not valid for 'localhost'"),
        ("no client certificate", "client certificate: --redis-cert-file, --redis-key-file)"),
        (
            "client certificate of another CA",
            "client certificate: --redis-cert-file, --redis-key-file)",
        ),
        ("plain redis:// to a TLS port", "Redis unreachable"),
    ],
)
def test_tls_mistakes_are_one_line_exit_3(
    run_cli: Run, auth: Auth, tls_redis: TlsRedis, how: str, needle: str
) -> None:
    env = {
        "unknown CA": tls_env(tls_redis, ca="other-ca.crt"),
        "wrong host": tls_env(tls_redis, SESSIONMON_REDIS_URL=tls_redis.url("localhost")),
        "no client certificate": tls_env(tls_redis, client=None),
        "client certificate of another CA": tls_env(tls_redis, client="stranger"),
        "plain redis:// to a TLS port": {
            "SESSIONMON_REDIS_URL": f"redis://127.0.0.1:{tls_redis.port}/0"
        },
    }[how]
    session, _, _ = auth.login("u1", "ann@example.com", "Ann")
    out = run_cli("logout", session.id, env_extra=env)
    assert_clean_error(out, 3, needle)
    assert out.stdout == ""  # nothing reported revoked
    assert auth.store.get_session(session.id) is not None


def test_tls_settings_that_cannot_work_exit_2(run_cli: Run, tls_redis: TlsRedis) -> None:
    missing = tls_env(tls_redis, SESSIONMON_REDIS_CA_FILE="/nonexistent/ca.pem")
    assert_clean_error(run_cli("blacklist", env_extra=missing), 2, "--redis-ca-file: no such file")
    plain = tls_env(tls_redis, SESSIONMON_REDIS_URL=f"redis://127.0.0.1:{tls_redis.port}/0")
    assert_clean_error(run_cli("blacklist", env_extra=plain), 2, "need a rediss:// URL")
    half = tls_env(tls_redis)
    del half["SESSIONMON_REDIS_KEY_FILE"]
    assert_clean_error(run_cli("blacklist", env_extra=half), 2, "go together")


def test_sentinel_mistakes_are_one_line_exit_3(
    run_cli: Run, auth: Auth, start_redis: StartRedis
) -> None:
    session, _, _ = auth.login("u1", "ann@example.com", "Ann")
    down = f"redis+sentinel://127.0.0.1:{free_port()},127.0.0.1:{free_port()}/smtest"
    out = run_cli("logout", session.id, env_extra={"SESSIONMON_REDIS_URL": down})
    assert_clean_error(out, 3, "no Redis Sentinel answered (sentinels 127.0.0.1:")
    assert out.stdout == "" and auth.store.get_session(session.id) is not None


def test_sentinel_urls_that_cannot_work_exit_2(run_cli: Run) -> None:
    for url, needle in (
        ("redis+sentinel://127.0.0.1:26379", "expected /service_name"),
        ("redis+sentinel://127.0.0.1:26379/svc/x", "the database must be a number"),
        ("redis+sentinel://127.0.0.1:notaport/svc", "expected host:port"),
        ("redis+sentinel://127.0.0.1:26379/svc?sentinel_pasword=x", "unknown option"),
    ):
        out = run_cli("blacklist", env_extra={"SESSIONMON_REDIS_URL": url})
        assert_clean_error(out, 2, needle)
        assert "bad Redis Sentinel URL" in out.stderr


def test_an_acl_user_without_the_permissions_exit_3(
    run_cli: Run, auth: Auth, redis_process: RedisProcess, prefix: str
) -> None:
    rules = SESSIONMON_RULES.format(prefix=prefix).replace("+eval ", "")
    user = add_user(redis_process, "noeval", rules)
    session, _, _ = auth.login("u1", "ann@example.com", "Ann")
    out = run_cli("logout", session.id, env_extra={"SESSIONMON_REDIS_URL": user.url})
    assert_clean_error(out, 3, "NOPERM this user has no permissions to run the 'eval' command")
    assert user.password not in out.stderr
    assert out.stdout == "" and auth.store.get_session(session.id) is not None
    wrong = {"SESSIONMON_REDIS_URL": user.url.replace(user.password, "not-the-password")}
    assert_clean_error(run_cli("blacklist", env_extra=wrong), 3, "Redis refused the login")
