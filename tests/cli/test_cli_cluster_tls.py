"""The console script on a TLS-only Redis Cluster (``redis+cluster://...?tls=1``, client
certificates required, TLS on the cluster bus): logout, check and the blacklist listing work with
the CA and client certificate; each wrong TLS setting is one line, exit 3, never "revoked"."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator

import pytest

from sessionmon.core.auth import Auth
from sessionmon.core.blacklist import Blacklist, connect
from sessionmon.core.redis_client import TlsFiles
from sessionmon.core.store import SessionStore
from sessionmon.core.tokens import TokenCodec
from tests.cli.test_cli import assert_clean_error
from tests.redis_acl import SESSIONMON_CLUSTER_RULES, add_cluster_user
from tests.redis_cluster import RedisClusterProcesses
from tests.redis_tls import Certificates, tls_binary

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def tls_cluster(
    certs: Certificates, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RedisClusterProcesses]:
    tls_binary()  # skipped, saying why, without a redis-server
    cluster = RedisClusterProcesses(tmp_path_factory.mktemp("tls-cluster"), masters=3, tls=certs)
    yield cluster.start()
    cluster.stop()


def cluster_env(
    cluster: RedisClusterProcesses, ca: str = "ca.crt", client: str | None = "client", **extra: str
) -> dict[str, str]:
    assert cluster.tls is not None
    env = {
        "SESSIONMON_REDIS_URL": cluster.url,
        "SESSIONMON_REDIS_CA_FILE": str(cluster.tls.path(ca)),
    }
    if client is not None:
        env["SESSIONMON_REDIS_CERT_FILE"] = str(cluster.tls.path(f"{client}.crt"))
        env["SESSIONMON_REDIS_KEY_FILE"] = str(cluster.tls.path(f"{client}.key"))
    return env | extra


@pytest.fixture
def tls_auth(
    tls_cluster: RedisClusterProcesses, store: SessionStore, codec: TokenCodec, prefix: str
) -> Iterator[Auth]:
    """``Auth`` whose blacklist is on the TLS cluster (what the console script then reads)."""
    certs = tls_cluster.tls
    assert certs is not None
    files = TlsFiles(certs.path("ca.crt"), certs.path("client.crt"), certs.path("client.key"))
    client = connect(tls_cluster.url, tls=files)
    yield Auth(store, Blacklist(client, prefix=prefix), codec, access_ttl=60, refresh_ttl=3600)
    client.close()


def test_logout_check_and_list_on_a_tls_cluster(
    run_cli: Run, tls_auth: Auth, tls_cluster: RedisClusterProcesses
) -> None:
    env = cluster_env(tls_cluster)
    session, access, _ = tls_auth.login("u1", "ann@example.com", "Ann")
    valid = run_cli("check", "--json", input=access, env_extra=env)
    assert valid.returncode == 0 and json.loads(valid.stdout)["valid"] is True, valid.stderr
    out = run_cli("logout", session.id, "--json", env_extra=env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["outcome"] == "ok"
    assert tls_auth.blacklist.is_revoked(None, session.id)
    rejected = run_cli("check", "--json", input=access, env_extra=env)
    assert rejected.returncode == 1, rejected.stderr
    assert json.loads(rejected.stdout) | {"claims": None} == {
        **json.loads(rejected.stdout),
        "valid": False,
        "reason": "revoked",
        "claims": None,
    }
    listed = run_cli("blacklist", "--json", env_extra=env)
    assert listed.returncode == 0, listed.stderr
    keys = {entry["key"] for entry in json.loads(listed.stdout)}
    assert tls_auth.blacklist.sid_key(session.id) in keys
    check = run_cli("blacklist", "--check", env_extra=env)
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.startswith("ok: redis+cluster://127.0.0.1:"), check.stdout


@pytest.mark.parametrize(
    ("how", "needle"),
    [
        ("unknown CA", "TLS handshake failed: 127.0.0.1:"),
        ("no client certificate", "client certificate: --redis-cert-file, --redis-key-file)"),
        ("client certificate of another CA", "--redis-cert-file, --redis-key-file)"),
        ("no ?tls=1", "TLS-only nodes need ?tls=1 and --redis-ca-file"),
    ],
)
def test_tls_cluster_mistakes_are_one_line_exit_3(
    run_cli: Run, tls_auth: Auth, tls_cluster: RedisClusterProcesses, how: str, needle: str
) -> None:
    env = {
        "unknown CA": cluster_env(tls_cluster, ca="other-ca.crt"),
        "no client certificate": cluster_env(tls_cluster, client=None),
        "client certificate of another CA": cluster_env(tls_cluster, client="stranger"),
        "no ?tls=1": {"SESSIONMON_REDIS_URL": tls_cluster.url.removesuffix("?tls=1")},
    }[how]
    session, access, _ = tls_auth.login("u1", "ann@example.com", "Ann")
    out = run_cli("logout", session.id, env_extra=env)
    assert_clean_error(out, 3, needle)
    assert out.stdout == ""  # nothing reported revoked
    assert tls_auth.store.get_session(session.id) is not None
    assert not tls_auth.blacklist.is_revoked(None, session.id)
    if how == "unknown CA":
        assert "no CA of --redis-ca-file" in out.stderr
        checked = run_cli("check", input=access, env_extra=env)
        assert_clean_error(checked, 3, "no CA of --redis-ca-file")
        assert checked.stdout == ""  # neither "valid" nor "revoked"


def test_an_acl_user_lacking_a_cluster_permission_exit_3(
    run_cli: Run, tls_auth: Auth, tls_cluster: RedisClusterProcesses, prefix: str
) -> None:
    rules = SESSIONMON_CLUSTER_RULES.replace(" +command", "").format(prefix=prefix)
    url = add_cluster_user(tls_cluster.nodes, "nocommand", rules)
    session, _, _ = tls_auth.login("u1", "ann@example.com", "Ann")
    out = run_cli(
        "logout", session.id, env_extra=cluster_env(tls_cluster, SESSIONMON_REDIS_URL=url)
    )
    assert_clean_error(out, 3, "NOPERM this user has no permissions to run the 'command' command")
    assert url.split("@")[0].rpartition(":")[2] not in out.stderr  # the password
    assert out.stdout == "" and tls_auth.store.get_session(session.id) is not None
    good = add_cluster_user(
        tls_cluster.nodes, "sessionmon", SESSIONMON_CLUSTER_RULES.format(prefix=prefix)
    )
    done = run_cli(
        "logout", session.id, env_extra=cluster_env(tls_cluster, SESSIONMON_REDIS_URL=good)
    )
    assert done.returncode == 0, done.stderr
