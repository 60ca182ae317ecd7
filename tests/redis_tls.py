"""Certificates made with ``openssl`` and a TLS-only ``redis-server`` (``--port 0 --tls-port``)
that requires client certificates, for the ``rediss://`` tests."""

from __future__ import annotations

import contextlib
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.redis_server import free_port, system_redis_server, wait_for


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _ca(directory: Path, name: str) -> None:
    _openssl("genrsa", "-out", f"{name}.key", "2048", cwd=directory)
    _openssl(
        "req", "-x509", "-new", "-key", f"{name}.key", "-sha256", "-days", "2",
        "-subj", f"/CN=sessionmon test {name}", "-out", f"{name}.crt", cwd=directory,
    )  # fmt: skip


def _signed(directory: Path, name: str, ca: str, ext: str) -> None:
    """``name``.crt/.key signed by ``ca`` with the extensions ``ext`` (an openssl ext file)."""
    (directory / f"{name}.ext").write_text(ext)
    _openssl("genrsa", "-out", f"{name}.key", "2048", cwd=directory)
    _openssl(
        "req", "-new", "-key", f"{name}.key", "-subj", f"/CN=sessionmon {name}",
        "-out", f"{name}.csr", cwd=directory,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
        "-CAcreateserial", "-days", "2", "-sha256", "-extfile", f"{name}.ext",
        "-out", f"{name}.crt", cwd=directory,
    )  # fmt: skip


SERVER_EXT = "subjectAltName = IP:127.0.0.1\nextendedKeyUsage = serverAuth\n"
CLIENT_EXT = "extendedKeyUsage = clientAuth\n"


@dataclass(frozen=True)
class Certificates:
    """A CA, a server certificate for 127.0.0.1 and a client certificate it signed; another CA
    (that signed nothing the server trusts) and a client certificate of that other CA."""

    directory: Path

    def path(self, name: str) -> Path:
        return self.directory / name

    def server_args(self, port: int, auth_clients: str = "yes") -> tuple[str, ...]:
        """redis-server options: TLS only on ``port`` (``--port 0``), this CA's server
        certificate, TLS between nodes (cluster bus, replication, sentinels' links: the
        client certificate on their outgoing side, the server one has serverAuth only)."""
        c = self.path
        return (
            "--port", "0", "--tls-port", str(port),
            "--tls-cert-file", str(c("server.crt")), "--tls-key-file", str(c("server.key")),
            "--tls-client-cert-file", str(c("client.crt")),
            "--tls-client-key-file", str(c("client.key")),
            "--tls-ca-cert-file", str(c("ca.crt")), "--tls-auth-clients", auth_clients,
            "--tls-replication", "yes", "--tls-cluster", "yes",
        )  # fmt: skip

    def client_options(self, client: str | None = "client") -> dict[str, Any]:
        """redis-py's options of a TLS client trusting this CA (and presenting ``client``)."""
        out: dict[str, Any] = {"ssl": True, "ssl_ca_certs": str(self.path("ca.crt"))}
        if client is not None:
            out["ssl_certfile"] = str(self.path(f"{client}.crt"))
            out["ssl_keyfile"] = str(self.path(f"{client}.key"))
        return out

    def cli_args(self) -> tuple[str, ...]:
        """``redis-cli`` options of the same client."""
        c = self.path
        return (
            "--tls", "--cacert", str(c("ca.crt")),
            "--cert", str(c("client.crt")), "--key", str(c("client.key")),
        )  # fmt: skip

    @classmethod
    def make(cls, directory: Path) -> Certificates:
        directory.mkdir(parents=True, exist_ok=True)
        _ca(directory, "ca")
        _ca(directory, "other-ca")
        _signed(directory, "server", "ca", SERVER_EXT)
        _signed(directory, "client", "ca", CLIENT_EXT)
        _signed(directory, "stranger", "other-ca", CLIENT_EXT)
        return cls(directory)


class TlsRedis:
    """The machine's redis-server, TLS only on a free loopback port, client certificates
    required (``--tls-auth-clients yes``)."""

    def __init__(self, binary: str, certs: Certificates, workdir: Path) -> None:
        self.binary = binary
        self.certs = certs
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, host: str = "127.0.0.1") -> str:
        return f"rediss://{host}:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1",
            port=self.port,
            ssl=True,
            ssl_ca_certs=str(self.certs.path("ca.crt")),
            ssl_certfile=str(self.certs.path("client.crt")),
            ssl_keyfile=str(self.certs.path("client.key")),
            socket_timeout=5,
        )

    def start(self) -> TlsRedis:
        self.workdir.mkdir(parents=True, exist_ok=True)
        c = self.certs.path
        with open(self.workdir / "redis.log", "ab") as log:
            self.proc = subprocess.Popen(
                [
                    self.binary, "--port", "0", "--tls-port", str(self.port),
                    "--bind", "127.0.0.1", "--dir", str(self.workdir),
                    "--save", "", "--appendonly", "yes",
                    "--tls-cert-file", str(c("server.crt")), "--tls-key-file", str(c("server.key")),
                    "--tls-ca-cert-file", str(c("ca.crt")), "--tls-auth-clients", "yes",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        client = self.client()
        try:
            wait_for(lambda: self._pings(client), "the TLS redis-server to answer")
        finally:
            client.close()
        return self

    def _pings(self, client: redis.Redis) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            log = (self.workdir / "redis.log").read_text(errors="replace")[-2000:]
            if "tls" in log.lower() and ("not supported" in log or "compile" in log.lower()):
                # A redis-server built without TLS: say so, do not fake a TLS server.
                pytest.skip(f"{self.binary} was built without TLS: {log.strip().splitlines()[-1]}")
            raise AssertionError(f"redis-server with TLS exited:\n{log}")
        with contextlib.suppress(redis.RedisError):
            return bool(client.ping())
        return False

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None


def tls_binary() -> str:
    """The machine's redis-server (skipped when there is none)."""
    binary = system_redis_server()
    if binary is None:
        pytest.skip("no redis-server on PATH")
    return binary


def tls_env(server: TlsRedis, ca: str = "ca.crt", client: str | None = "client", **extra: str):
    """``SESSIONMON_*`` variables for ``server``: the CA and (unless None) a client certificate."""
    env = {
        "SESSIONMON_REDIS_URL": server.url(),
        "SESSIONMON_REDIS_CA_FILE": str(server.certs.path(ca)),
    }
    if client is not None:
        env["SESSIONMON_REDIS_CERT_FILE"] = str(server.certs.path(f"{client}.crt"))
        env["SESSIONMON_REDIS_KEY_FILE"] = str(server.certs.path(f"{client}.key"))
    return env | extra
