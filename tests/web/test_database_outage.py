"""PostgreSQL lost under the running example app: a silent refresh (the one request that needs the
session store) answers 503 ``database_unavailable`` within the pool's timeout, requests with a valid
access token keep being served, and the app recovers by itself once the server is back."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from sessionmon.core.store import Backend
from sessionmon.core.store.url import DatabaseUrl
from tests.support.tcp_proxy import TcpProxy
from tests.web.conftest import WebServer
from tests.web.test_http_flow import get_me, login

Start = Callable[..., WebServer]
# The pool waits CONNECT_TIMEOUT (5 s) for a connection; the answer must come within that plus
# a margin for a loaded machine, never after a hang.
ANSWER_WITHIN = 12.0


@pytest.fixture
def proxied_db(db_url: DatabaseUrl) -> Iterator[tuple[str, TcpProxy]]:
    """This test's PostgreSQL schema, reached through a proxy the test can cut."""
    if db_url.backend is not Backend.POSTGRES:
        pytest.skip("PostgreSQL only: the SQLite file cannot go away over a network")
    assert db_url.url is not None
    parts = urlsplit(db_url.url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432).start()
    user = f"{parts.username}@" if parts.username else ""
    netloc = f"{user}127.0.0.1:{proxy.port}"
    yield urlunsplit(parts._replace(netloc=netloc)), proxy
    proxy.close()


def refresh_only(server: WebServer, refresh: str) -> httpx.Response:
    """A request whose access token is gone: the middleware must read the session to refresh."""
    return httpx.get(server.url + "/me", headers={"Cookie": f"refreshToken={refresh}"}, timeout=30)


def test_postgres_down_gives_503_then_recovers(
    start_webapp: Start, proxied_db: tuple[str, TcpProxy]
) -> None:
    url, proxy = proxied_db
    server = start_webapp(db=url)
    sid, access, refresh = login(server)
    assert refresh_only(server, refresh).status_code == 200

    proxy.cut()
    started = time.monotonic()
    r = refresh_only(server, refresh)
    took = time.monotonic() - started
    assert r.status_code == 503, r.text
    assert r.json() == {"error": "unavailable", "reason": "database_unavailable"}
    assert r.headers["Retry-After"].isdigit()
    assert "set-cookie" not in r.headers
    assert took < ANSWER_WITHIN, f"answered after {took:.1f}s"

    # What needs no database keeps working: a valid access token is checked against Redis only.
    me = get_me(server, access)
    assert me.status_code == 200 and me.json()["user"]["session_id"] == sid

    proxy.restore()
    deadline = time.monotonic() + 30
    while (r := refresh_only(server, refresh)).status_code != 200:
        assert r.status_code == 503, r.text
        assert time.monotonic() < deadline, "the app did not reconnect to PostgreSQL"
    assert r.json()["user"]["session_id"] == sid
    assert "accessToken" in r.cookies
    assert "Traceback" not in server.log()
