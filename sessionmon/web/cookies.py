"""Cookie names and attributes, a lenient ``Cookie`` header parser and ``Set-Cookie`` builders.

Plain functions over header strings: no web framework is imported here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

_EXPIRED = "Thu, 01 Jan 1970 00:00:00 GMT"
_SAMESITE = ("lax", "strict", "none")


@dataclass(frozen=True)
class CookieSettings:
    """The names and attributes of the two token cookies.

    Defaults follow the original design (``accessToken`` / ``refreshToken``), made safe: HttpOnly
    always, ``SameSite=Lax``, ``Path=/``. Set ``secure=True`` when the site is served over HTTPS.
    """

    access_name: str = "accessToken"
    refresh_name: str = "refreshToken"
    secure: bool = False
    samesite: str = "lax"
    path: str = "/"
    domain: str | None = None

    def __post_init__(self) -> None:
        if self.samesite.lower() not in _SAMESITE:
            raise ValueError(f"samesite must be one of {', '.join(_SAMESITE)}")
        if self.samesite.lower() == "none" and not self.secure:
            raise ValueError("SameSite=None cookies must be Secure (browsers drop them otherwise)")
        for name in (self.access_name, self.refresh_name):
            if not name or any(c in name for c in ' ;=,"\t\r\n'):
                raise ValueError(f"not a valid cookie name: {name!r}")

    def set_header(self, name: str, value: str, max_age: float) -> str:
        """A ``Set-Cookie`` value that stores ``value`` for ``max_age`` seconds."""
        parts = [f"{name}={value}", f"Path={self.path}", f"Max-Age={max(0, math.ceil(max_age))}"]
        return "; ".join(parts + self._attributes())

    def clear_header(self, name: str) -> str:
        """A ``Set-Cookie`` value that deletes the cookie ``name``."""
        parts = [f'{name}=""', f"Path={self.path}", "Max-Age=0", f"Expires={_EXPIRED}"]
        return "; ".join(parts + self._attributes())

    def login_headers(
        self, access: str, refresh: str, access_ttl: float, refresh_ttl: float
    ) -> list[str]:
        """The two ``Set-Cookie`` values a login response carries."""
        return [
            self.set_header(self.access_name, access, access_ttl),
            self.set_header(self.refresh_name, refresh, refresh_ttl),
        ]

    def logout_headers(self) -> list[str]:
        """The two ``Set-Cookie`` values that clear both token cookies."""
        return [self.clear_header(self.access_name), self.clear_header(self.refresh_name)]

    def _attributes(self) -> list[str]:
        attrs = []
        if self.domain:
            attrs.append(f"Domain={self.domain}")
        attrs.append("HttpOnly")
        attrs.append(f"SameSite={self.samesite.capitalize()}")
        if self.secure:
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
