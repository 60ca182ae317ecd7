"""Typed errors raised by the core, turned into banners, exit codes or status codes at the edge."""

from __future__ import annotations


class SessionmonError(Exception):
    """Base class: the message is one clear line meant for a human."""


class ConfigError(SessionmonError):
    """Bad or missing configuration (exit code 2)."""


class DatabaseError(SessionmonError):
    """The database is missing, corrupt, unreachable or unreadable (exit code 2)."""


class DatabaseMissing(DatabaseError):
    """The database file does not exist."""


class DatabaseLocked(DatabaseError):
    """The database stayed locked for longer than the busy timeout."""


class RedisUnavailable(SessionmonError):
    """Redis did not answer (exit code 3)."""


class DatabaseUnavailable(DatabaseError):
    """The database server did not answer or refused the connection."""
