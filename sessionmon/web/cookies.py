"""Cookie names and attributes, a lenient ``Cookie`` header parser and ``Set-Cookie`` builders.

Plain functions over header strings: no web framework is imported here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_EXPIRED = "Thu, 01 Jan 1970 00:00:00 GMT"
_SAMESITE = ("lax", "strict", "none")


@dataclass(frozen=True)
class CookieSettings:
    """The names and attributes of the two token cookies.

    Defaults follow the original design (``accessToken`` / ``refreshToken``), made safe: HttpOnly
    always, ``SameSite=Lax``, ``Path=/``, and ``Secure`` whenever the request came over HTTPS.

    :param secure: ``None`` (default): ``Secure`` when the request came over HTTPS (see
        :meth:`over_https`); ``True``: always; ``False``: never.
    :param trust_forwarded_proto: believe ``X-Forwarded-Proto`` (only behind a proxy you run,
        that sets it): a client could send it itself otherwise.
    :param refresh_path: the ``Path`` of the refresh cookie, for an app that refreshes on one
        route only (the browser then sends the refresh token nowhere else). ``None``: ``path``,
        which the silent refresh of :class:`~sessionmon.web.SessionMiddleware` needs (it refreshes
        on any route).
    """

    access_name: str = "accessToken"
    refresh_name: str = "refreshToken"
    secure: bool | None = None
    samesite: str = "lax"
    path: str = "/"
    domain: str | None = None
    refresh_path: str | None = None
    trust_forwarded_proto: bool = False

    def __post_init__(self) -> None:
        if self.samesite.lower() not in _SAMESITE:
            raise ValueError(f"samesite must be one of {', '.join(_SAMESITE)}")
        if self.samesite.lower() == "none" and self.secure is not True:
            raise ValueError(
                "SameSite=None cookies must be Secure (browsers drop them otherwise): "
                "set secure=True"
            )
        for name in (self.access_name, self.refresh_name):
            if not name or any(c in name for c in ' ;=,"\t\r\n'):
                raise ValueError(f"not a valid cookie name: {name!r}")
        for path in (self.path, self.refresh_path):
            if path is not None and (not path.startswith("/") or any(c in path for c in ";\r\n")):
                raise ValueError(f"not a valid cookie path: {path!r}")

    def over_https(self, scope: Mapping[str, Any]) -> bool:
        """Whether the request (an ASGI scope) came over HTTPS: its own scheme, or the last
        ``X-Forwarded-Proto`` value (the one the nearest proxy set) when that proxy is trusted."""
        if scope.get("scheme") in ("https", "wss"):
            return True
        if not self.trust_forwarded_proto:
            return False
        forwarded: list[str] = [
            value.decode("latin-1")
            for key, value in scope.get("headers", [])
            if key.lower() == b"x-forwarded-proto"
        ]
        if not forwarded:
            return False
        return forwarded[-1].split(",")[-1].strip().lower() == "https"

    def path_for(self, name: str) -> str:
        """The ``Path`` attribute of cookie ``name``."""
        if name == self.refresh_name and self.refresh_path:
            return self.refresh_path
        return self.path

    def set_header(self, name: str, value: str, max_age: float, *, https: bool = False) -> str:
        """A ``Set-Cookie`` value that stores ``value`` for ``max_age`` seconds."""
        parts = [
            f"{name}={value}",
            f"Path={self.path_for(name)}",
            f"Max-Age={max(0, math.ceil(max_age))}",
        ]
        return "; ".join(parts + self._attributes(https))

    def clear_header(self, name: str, *, https: bool = False) -> str:
        """A ``Set-Cookie`` value that deletes the cookie ``name``."""
        parts = [f'{name}=""', f"Path={self.path_for(name)}", "Max-Age=0", f"Expires={_EXPIRED}"]
        return "; ".join(parts + self._attributes(https))

    def login_headers(
        self,
        access: str,
        refresh: str,
        access_ttl: float,
        refresh_ttl: float,
        *,
        https: bool = False,
    ) -> list[str]:
        """The two ``Set-Cookie`` values a login response carries."""
        return [
            self.set_header(self.access_name, access, access_ttl, https=https),
            self.set_header(self.refresh_name, refresh, refresh_ttl, https=https),
        ]

    def logout_headers(self, *, https: bool = False) -> list[str]:
        """The two ``Set-Cookie`` values that clear both token cookies."""
        return [
            self.clear_header(self.access_name, https=https),
            self.clear_header(self.refresh_name, https=https),
        ]

    def _attributes(self, https: bool) -> list[str]:
        attrs = []
        if self.domain:
            attrs.append(f"Domain={self.domain}")
        attrs.append("HttpOnly")
        attrs.append(f"SameSite={self.samesite.capitalize()}")
        if self.secure or (self.secure is None and https):
            attrs.append("Secure")
        return attrs


def parse_cookie_header(header: str) -> dict[str, str]:
    """Parse a ``Cookie`` header leniently: a bad pair is skipped, never the whole header.

    The first occurrence of a name wins (browsers send the most specific path first).
    """
    cookies: dict[str, str] = {}
    for chunk in header.split(";"):
        name, sep, value = chunk.partition("=")
        if not sep:
            continue
        name, value = name.strip(), value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        if name and name not in cookies:
            cookies[name] = value
    return cookies


def set_cookie_names(headers: list[tuple[bytes, bytes]]) -> set[str]:
    """The names of the cookies a response's ``Set-Cookie`` headers set or clear."""
    names = set()
    for key, value in headers:
        if key.lower() == b"set-cookie":
            name = value.split(b"=", 1)[0].strip()
            names.add(name.decode("latin-1"))
    return names
