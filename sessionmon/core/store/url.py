"""Where the sessions are: ``--db`` / ``SESSIONMON_DB`` parsed once into a ``DatabaseUrl``.

- a path, or ``sqlite:///relative/path`` / ``sqlite:////absolute/path`` (SQLAlchemy's form): SQLite;
- ``postgresql://user[:password]@host[:port]/db[?options]`` (also ``postgres://``): PostgreSQL;
- any other ``scheme://`` is a ``ConfigError``, never a relative file path.

``str()`` of a ``DatabaseUrl`` never shows a password. For PostgreSQL, ``anchor`` is a path in the
data directory (one per server and database) beside which the embedded Redis and a generated
secret live, as they live beside the SQLite file.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

from sessionmon.core.errors import ConfigError
from sessionmon.core.store.base import Backend
from sessionmon.core.urls import mask_url

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
_POSTGRES_SCHEMES = ("postgresql", "postgres")


def _data_home() -> Path:
    value = os.environ.get("XDG_DATA_HOME")
    return (Path(value) if value else Path.home() / ".local/share") / "sessionmon"


@dataclass(frozen=True)
class DatabaseUrl:
    """A parsed ``--db`` value."""

    backend: Backend
    path: Path | None = None  # SQLite
    url: str = ""  # PostgreSQL conninfo URL, password included: never display it

    @classmethod
    def parse(cls, value: str | os.PathLike[str] | DatabaseUrl) -> DatabaseUrl:
        if isinstance(value, DatabaseUrl):
            return value
        if isinstance(value, os.PathLike):
            return cls(Backend.SQLITE, Path(value).expanduser())
        text = str(value).strip()
        if not text:
            raise ConfigError("--db: empty value (give a path or a postgresql:// URL)")
        match = _SCHEME.match(text)
        if match is None:
            return cls(Backend.SQLITE, Path(text).expanduser())
        scheme = match.group(1).lower()
        if scheme == "sqlite":
            rest = text[len("sqlite://") :]
            if not rest.startswith("/") or rest == "/":
                raise ConfigError(
                    f"--db {text}: write sqlite:///relative/path or sqlite:////absolute/path"
                )
            return cls(Backend.SQLITE, Path(rest[1:]).expanduser())
        if scheme in _POSTGRES_SCHEMES:
            parts = urlsplit(text)
            if not parts.hostname and "host=" not in parts.query:
                raise ConfigError(f"--db {mask_url(text)}: no host in the PostgreSQL URL")
            if not parts.path.strip("/"):
                raise ConfigError(f"--db {mask_url(text)}: no database name in the PostgreSQL URL")
            return cls(Backend.POSTGRES, url=text)
        raise ConfigError(
            f"--db {mask_url(text)}: unknown scheme {scheme}:// "
            "(use a path, sqlite:///path or postgresql://user@host:port/db)"
        )

    @property
    def is_sqlite(self) -> bool:
        return self.backend is Backend.SQLITE

    @property
    def display(self) -> str:
        """Safe to print: the path, or the URL with its password masked."""
        return str(self.path) if self.path is not None else mask_url(self.url)

    def __str__(self) -> str:
        return self.display

    @property
    def anchor(self) -> Path:
        """The path beside which the embedded Redis and a generated secret live."""
        if self.path is not None:
            return self.path
        parts = urlsplit(self.url)
        # One directory per server, port, database and user; the password takes no part.
        ident = f"{parts.username or ''}@{parts.hostname or ''}:{parts.port or 5432}{parts.path}"
        digest = hashlib.sha256(ident.encode()).hexdigest()[:12]
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", (parts.path.strip("/") or "db"))[:40]
        return _data_home() / f"postgres-{name}-{digest}" / "sessions"

    def exists(self) -> bool:
        """For SQLite, whether the file exists; a server's database is taken to exist (opening it
        says otherwise)."""
        return self.path.exists() if self.path is not None else True


def application_name(url: DatabaseUrl) -> str:
    """How sessionmon's connections name themselves in ``pg_stat_activity``: the URL's
    ``application_name`` parameter, or ``sessionmon``."""
    for key, value in parse_qsl(urlsplit(url.url).query):
        if key == "application_name" and value:
            return value
    return "sessionmon"


def with_search_path(url: str, schema: str) -> str:
    """A PostgreSQL ``url`` whose connections use ``schema`` (``options=-csearch_path=...``)."""
    parts = urlsplit(url)
    option = "options=" + quote(f"-csearch_path={schema}", safe="")
    query = "&".join(p for p in (parts.query, option) if p)
    return urlunsplit(parts._replace(query=query))
