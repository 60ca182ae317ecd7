"""The example app's JWKS over real HTTP, checked by a standard verifier (PyJWT's PyJWKClient)
across a rotation, and a retirement seen by every worker process within a second."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from tests.support.waiting import wait_until
from tests.web.conftest import WebServer
from tests.web.test_http_flow import assert_401, get_me, login

Start = Callable[..., WebServer]
SCRIPT = Path(sys.executable).parent / "sessionmon"


def cli(server: WebServer, *args: str) -> subprocess.CompletedProcess[str]:
    """``sessionmon ARGS`` with the server's own environment (same DB, Redis, key directory)."""
    return subprocess.run(
        [str(SCRIPT), *args], capture_output=True, text=True, env=server.env, timeout=60
    )


def header(token: str) -> dict[str, Any]:
    return jwt.get_unverified_header(token)


def verify_with(client: jwt.PyJWKClient, token: str) -> dict[str, Any]:
    """What a third-party verifier does: the key by kid from the JWKS, then a full decode."""
    key = client.get_signing_key_from_jwt(token)
    claims: dict[str, Any] = jwt.decode(token, key.key, algorithms=["ES256"])
    return claims


def test_jwks_verifies_access_tokens_across_a_rotation_and_a_retirement(
    start_webapp: Start, tmp_path: Path
) -> None:
    server = start_webapp(workers=2, secret="", algorithm="ES256", key_dir=str(tmp_path / "keys"))
    url = server.url + "/.well-known/jwks.json"
    r = httpx.get(url)
    assert r.status_code == 200 and "max-age=" in r.headers["cache-control"]
    published = {k["kid"] for k in r.json()["keys"]}
    assert len(published) == 2  # current and next
    assert all("d" not in k for k in r.json()["keys"])  # public keys only

    client = jwt.PyJWKClient(url)  # default caching: fetched once, kept 5 minutes
    sid, before, _ = login(server)
    old_kid = header(before)["kid"]
    assert old_kid in published
    assert verify_with(client, before)["sid"] == sid

    proc = cli(server, "keys", "rotate", "--reason", "test")
    assert proc.returncode == 0, proc.stderr
    # Every worker signs with the new key within a second (both are asked: 2 workers).
    wait_until(
        lambda: all(header(login(server)[1])["kid"] != old_kid for _ in range(6)),
        "the workers to sign with the new current key",
        timeout=3.0,
    )
    _, after, _ = login(server)
    new_kid = header(after)["kid"]
    assert new_kid in published  # it was published as `next` before it signed anything
    # The cached key set already holds it: no refetch needed; the old token still verifies.
    assert verify_with(client, after)["typ"] == "access"
    assert verify_with(client, before)["sid"] == sid
    assert get_me(server, before).status_code == 200  # previous: still good at the app
    now_published = {k["kid"] for k in httpx.get(url).json()["keys"]}
    assert {old_kid, new_kid} <= now_published and len(now_published) == 3

    proc = cli(server, "keys", "retire", old_kid)
    assert proc.returncode == 0, proc.stderr
    took = wait_until(
        lambda: all(get_me(server, before).status_code == 401 for _ in range(6)),
        "every worker to reject tokens of the retired key",
        timeout=3.0,
    )
    assert took < 1.5
    assert_401(get_me(server, before), "unknown_key")
    assert get_me(server, after).status_code == 200
    assert old_kid not in {k["kid"] for k in httpx.get(url).json()["keys"]}


def test_jwks_of_an_hmac_key_set_is_empty(start_webapp: Start) -> None:
    server = start_webapp()  # SESSIONMON_SECRET: a configured HS256 key
    r = httpx.get(server.url + "/.well-known/jwks.json")
    assert r.status_code == 200 and r.json() == {"keys": []}
    _, access, _ = login(server)
    assert header(access)["kid"]  # a configured key has a derived kid, set in every token
    proc = cli(server, "keys", "export-jwks")
    assert proc.returncode == 2 and "no public keys" in proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stdout == ""


def test_a_weak_secret_stops_the_app_at_startup(
    db_path: Path, redis_url: str, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    import anyio

    from examples.webapp import create_app
    from sessionmon.core.errors import ConfigError
    from sessionmon.core.settings import Settings

    settings = Settings(db=db_path, redis_url=redis_url, prefix=prefix)
    with (
        pytest.MonkeyPatch.context() as mp,
        pytest.raises(ConfigError, match="SESSIONMON_SECRET is 8 bytes"),
    ):
        mp.setenv("SESSIONMON_SECRET", "changeme")
        app = create_app(settings)

        async def start() -> None:
            async with app.router.lifespan_context(app):
                pass

        anyio.run(start)
    assert "cannot start: SESSIONMON_SECRET is 8 bytes" in caplog.text
    assert "changeme" not in caplog.text
