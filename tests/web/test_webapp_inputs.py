"""The example app's own inputs over real HTTP: body type, size and shape; cross-site POSTs;
logout when the session row is gone; cookie attributes (Secure, SameSite, refresh path)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable

import httpx
import pytest

from sessionmon.core.store import SessionStore
from sessionmon.core.tokens import Reason
from tests.web.conftest import WebServer

Start = Callable[..., WebServer]
LOGIN = {"email": "ann@example.com"}


def post(server: WebServer, path: str, **kwargs: object) -> httpx.Response:
    return httpx.post(server.url + path, timeout=10, **kwargs)  # type: ignore[arg-type]


def assert_error(r: httpx.Response, status: int, reason: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["reason"] == reason and body["error"] and body["detail"], body
    assert "Traceback" not in r.text


def raw_exchange(server: WebServer, head: bytes, body_chunks: list[bytes]) -> bytes:
    """Send a request by hand (headers, then body chunks, stopping if the server answered) and
    return what the server sent before closing or within 10 s."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(head)
        for chunk in body_chunks:
            try:
                sock.sendall(chunk)
            except OSError:
                break  # the server answered and closed: it stopped reading
        data = b""
        deadline = time.monotonic() + 10
        while b"\r\n\r\n" not in data or not _complete(data):
            if time.monotonic() > deadline:
                break
            try:
                part = sock.recv(65536)
            except OSError:
                break
            if not part:
                break
            data += part
        return data


def _complete(data: bytes) -> bool:
    head, _, body = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":", 1)[1])
    return False


def status_and_json(data: bytes) -> tuple[int, dict[str, object]]:
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


# -- bodies -----------------------------------------------------------------------------------


def test_login_body_type_shape_and_nesting(start_webapp: Start, store: SessionStore) -> None:
    server = start_webapp()
    # Valid JSON, nested far deeper than the parser recurses (under the 16 KiB cap): was a 500.
    deep = b"[" * 8000 + b"]" * 8000
    assert_error(post(server, "/login", content=deep, headers=_json()), 400, "bad_json")
    nested = b'{"email": ' + b'{"a": ' * 2000 + b"1" + b"}" * 2000 + b"}"
    assert len(nested) < 16384
    assert_error(post(server, "/login", content=nested, headers=_json()), 400, "bad_json")
    assert_error(post(server, "/login", content=b"{nope", headers=_json()), 400, "bad_json")
    assert_error(post(server, "/login", content=b"\xff\xfe{", headers=_json()), 400, "bad_json")
    for body in ([], ["a@b"], {"email": 3}, {"email": "no-at"}, {"email": "a@b", "name": 7}):
        assert_error(post(server, "/login", json=body), 400, "bad_shape")

    # A cross-site form can send text/plain (or a form) without a preflight: refused.
    as_text = {"content": json.dumps(LOGIN), "headers": {"Content-Type": "text/plain"}}
    assert_error(post(server, "/login", **as_text), 415, "not_json")
    assert_error(post(server, "/login", data={"email": "a@b.c"}), 415, "not_json")
    assert_error(post(server, "/login", content=json.dumps(LOGIN)), 415, "not_json")
    assert store.count_sessions(include_expired=True) == 0  # nothing got in

    ok = post(
        server,
        "/login",
        content=json.dumps(LOGIN),
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert ok.status_code == 200, ok.text
    assert server.alive and "Traceback" not in server.log() and "RecursionError" not in server.log()


def _json() -> dict[str, str]:
    return {"Content-Type": "application/json"}


def test_a_declared_20_mb_body_is_refused_before_it_is_read(start_webapp: Start) -> None:
    server = start_webapp(max_body="4096")
    head = (
        b"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 20971520\r\n\r\n"
    )
    started = time.monotonic()
    data = raw_exchange(server, head, [b'{"email": "' + b"a" * 1000])
    status, body = status_and_json(data)
    assert status == 413 and body["reason"] == "body_too_large", data[:300]
    assert time.monotonic() - started < 5  # it did not wait for the 20 MB
    assert server.alive


def test_a_chunked_body_is_cut_off_at_the_cap(start_webapp: Start) -> None:
    server = start_webapp(max_body="4096")
    head = (
        b"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"a" * 1024
    framed = b"%x\r\n%s\r\n" % (len(chunk), chunk)
    # 20 MB on offer; the server answers after a little over 4 KiB.
    data = raw_exchange(server, head, [framed] * 20 * 1024)
    status, body = status_and_json(data)
    assert status == 413 and body["reason"] == "body_too_large", data[:300]
    assert server.alive and httpx.get(server.url + "/").status_code == 200


async def test_read_json_never_holds_more_than_the_cap() -> None:
    from sessionmon.web.body import BadBody, read_json

    pulled = 0

    async def twenty_mb():  # type: ignore[no-untyped-def]
        nonlocal pulled
        for _ in range(20 * 16):
            pulled += 1
            yield b" " * 65536

    with pytest.raises(BadBody) as info:
        await read_json([(b"content-type", b"application/json")], twenty_mb(), limit=100_000)
    assert info.value.status_code == 413
    assert pulled == 2  # 128 KiB read of 20 MB: it stopped at the first chunk over the cap


# -- cross-site requests ----------------------------------------------------------------------


def test_cross_site_posts_are_refused(start_webapp: Start, store: SessionStore) -> None:
    server = start_webapp(allowed_origins="https://app.example.com")
    own = server.url
    r = post(server, "/login", json=LOGIN, headers={"Sec-Fetch-Site": "cross-site"})
    assert_error(r, 403, "cross_site_request")
    r = post(server, "/login", json=LOGIN, headers={"Sec-Fetch-Site": "same-site"})
    assert_error(r, 403, "cross_site_request")
    r = post(server, "/login", json=LOGIN, headers={"Origin": "https://evil.example"})
    assert_error(r, 403, "cross_site_request")
    assert_error(
        post(server, "/login", json=LOGIN, headers={"Origin": "null"}), 403, "cross_site_request"
    )

    # A logged-in user: a cross-site form cannot log them out.
    login = post(
        server, "/login", json=LOGIN, headers={"Origin": own, "Sec-Fetch-Site": "same-origin"}
    )
    assert login.status_code == 200, login.text
    sid = login.json()["user"]["session_id"]
    access, refresh = login.cookies["accessToken"], login.cookies["refreshToken"]
    jar = {"Cookie": f"accessToken={access}; refreshToken={refresh}"}
    r = post(
        server,
        "/logout",
        headers={**jar, "Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"},
    )
    assert_error(r, 403, "cross_site_request")
    assert "set-cookie" not in r.headers  # cookies untouched
    assert store.get_session(sid) is not None
    assert httpx.get(server.url + "/me", headers=jar).status_code == 200

    # Same origin (with or without Fetch Metadata), the allowed origin, and non-browser clients.
    assert post(server, "/login", json=LOGIN, headers={"Origin": own}).status_code == 200
    r = post(server, "/login", json=LOGIN, headers={"Sec-Fetch-Site": "none"})
    assert r.status_code == 200
    r = post(
        server,
        "/login",
        json=LOGIN,
        headers={"Origin": "https://app.example.com", "Sec-Fetch-Site": "cross-site"},
    )
    assert r.status_code == 200
    assert post(server, "/login", json=LOGIN).status_code == 200  # curl, scripts
    # GET is never blocked.
    assert (
        httpx.get(server.url + "/me", headers={**jar, "Sec-Fetch-Site": "cross-site"}).status_code
        == 200
    )
    r = post(server, "/logout", headers={**jar, "Origin": own, "Sec-Fetch-Site": "same-origin"})
    assert r.status_code == 200 and r.json()["logged_out"] is True


# -- logout -----------------------------------------------------------------------------------


def test_logout_with_the_session_row_gone_still_revokes_the_tokens(
    start_webapp: Start, store: SessionStore
) -> None:
    server = start_webapp()
    login = post(server, "/login", json=LOGIN)
    sid = login.json()["user"]["session_id"]
    access, refresh = login.cookies["accessToken"], login.cookies["refreshToken"]
    jar = {"Cookie": f"accessToken={access}; refreshToken={refresh}"}
    session = store.get_session(sid)
    assert session is not None
    store.delete_sessions_with_audit([sid], [])  # purged (or an older backup restored)
    assert httpx.get(server.url + "/me", headers=jar).status_code == 200

    r = post(server, "/logout", headers=jar)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["logged_out"] is True and body["revoked"] == 3 and body["deleted"] == 0
    assert body["outcome"] == "revoked_no_row"
    for headers in (
        jar,
        {"Authorization": f"Bearer {access}"},
        {"Cookie": f"refreshToken={refresh}"},
    ):
        r = httpx.get(server.url + "/me", headers=headers)
        assert r.status_code == 401 and r.json()["reason"] == Reason.REVOKED.value

    # The row comes back from a backup: the session stays logged out.
    store.insert_session(session)
    r = httpx.get(server.url + "/me", headers={"Cookie": f"refreshToken={refresh}"})
    assert r.status_code == 401 and r.json()["reason"] == Reason.REVOKED.value
    [row] = [a for a in store.audit(session_id=sid) if a.action == "logout"]
    assert row.outcome == "revoked_no_row" and len(row.revoked) == 3


def test_logout_without_a_usable_token_does_not_claim_success(start_webapp: Start) -> None:
    server = start_webapp()
    r = post(server, "/logout")
    assert r.status_code == 200 and r.json() == {"logged_out": False, "reason": "no_token"}
    r = post(server, "/logout", headers={"Cookie": "accessToken=a.b.c"})
    assert r.json() == {"logged_out": False, "reason": "malformed"}


# -- cookies ----------------------------------------------------------------------------------


def cookie_attrs(r: httpx.Response) -> dict[str, set[str]]:
    out = {}
    for header in r.headers.get_list("set-cookie"):
        name = header.split("=", 1)[0]
        out[name] = set(header.split("; ")[1:])
    return out


def test_cookies_over_plain_http_behind_an_untrusted_proxy(start_webapp: Start) -> None:
    server = start_webapp(args=("--no-proxy-headers",))
    r = post(server, "/login", json=LOGIN, headers={"X-Forwarded-Proto": "https"})
    attrs = cookie_attrs(r)
    for name in ("accessToken", "refreshToken"):
        assert {"HttpOnly", "SameSite=Lax", "Path=/"} <= attrs[name]
        assert "Secure" not in attrs[name]  # a client's X-Forwarded-Proto is not believed


def test_cookies_behind_a_trusted_proxy_are_secure(start_webapp: Start) -> None:
    server = start_webapp(
        args=("--no-proxy-headers",),
        trusted_proxy="1",
        cookie_samesite="strict",
        refresh_cookie_path="/",
    )
    r = post(server, "/login", json=LOGIN, headers={"X-Forwarded-Proto": "https"})
    attrs = cookie_attrs(r)
    for name in ("accessToken", "refreshToken"):
        assert {"HttpOnly", "SameSite=Strict", "Secure"} <= attrs[name]
    plain = cookie_attrs(post(server, "/login", json=LOGIN))
    assert "Secure" not in plain["accessToken"]
    jar = {"Cookie": f"accessToken={r.cookies['accessToken']}", "X-Forwarded-Proto": "https"}
    logout = cookie_attrs(post(server, "/logout", headers=jar))
    assert {"Secure", "Max-Age=0"} <= logout["accessToken"]


def test_the_refresh_cookie_can_be_scoped_to_a_path(start_webapp: Start) -> None:
    server = start_webapp(refresh_cookie_path="/auth/refresh", cookie_secure="1")
    r = post(server, "/login", json=LOGIN)
    attrs = cookie_attrs(r)
    assert {"Path=/", "Secure"} <= attrs["accessToken"]
    assert {"Path=/auth/refresh", "Secure", "HttpOnly"} <= attrs["refreshToken"]
    cleared = cookie_attrs(post(server, "/logout", headers={"Cookie": "accessToken=x"}))
    assert "Path=/auth/refresh" in cleared["refreshToken"]  # cleared where it was set


def test_bad_web_settings_stop_the_app_with_one_line(start_webapp: Start) -> None:
    with pytest.raises(AssertionError, match=r"SameSite=None cookies must be Secure"):
        start_webapp(cookie_samesite="none")
