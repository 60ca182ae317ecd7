"""URLs safe to show: passwords masked (Redis, PostgreSQL, any ``scheme://user:password@host``)."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def mask_url(url: str | None) -> str:
    """``url`` with the password (in the authority or a ``password=`` option) as ``***``."""
    if not url:
        return ""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    query = "&".join(
        f"{name}=***" if "password" in name.lower() else f"{name}={value}" if value else name
        for name, _, value in (item.partition("=") for item in parts.query.split("&") if item)
    )
    if parts.password is None:
        return url if query == parts.query else urlunsplit(parts._replace(query=query))
    # Keep what follows the "@" verbatim (brackets of an IPv6 host, the port).
    netloc = f"{parts.username or ''}:***@{parts.netloc.rpartition('@')[2]}"
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
