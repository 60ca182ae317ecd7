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


class DatabaseEmpty(DatabaseError):
    """The database file has 0 bytes and the caller may not initialise it (a reader)."""


class DatabaseCorrupt(DatabaseError):
    """The file is not a SQLite database, or ``PRAGMA quick_check`` found damage."""


class DatabaseLocked(DatabaseError):
    """The database stayed locked for longer than the busy timeout."""


class RedisUnavailable(SessionmonError):
    """Redis did not answer (exit code 3)."""


class DatabaseUnavailable(DatabaseError):
    """The database server did not answer or refused the connection."""


class TooManySessions(SessionmonError):
    """A login was refused: the user is at ``--max-sessions-per-user`` (``--on-max-sessions
    deny``). Nothing was created."""

    def __init__(self, user_id: str, limit: int) -> None:
        super().__init__(f"user {user_id} already has {limit} live sessions (the limit)")
        self.user_id = user_id
        self.limit = limit


class KeySetError(ConfigError):
    """A key-set operation that cannot be done: an unknown kid, retiring the current key,
    rotating a key that comes from the configuration (exit code 2)."""


class RedisMayEvict(RedisUnavailable):
    """Redis may evict blacklist keys (a ``maxmemory-policy`` other than ``noeviction`` with a
    ``maxmemory`` limit) and the operator did not allow it: revocations are refused (exit 3)."""


class RevocationIncomplete(RedisUnavailable):
    """A Redis Cluster took some sessions' revocations and not others (a node down): ``ttls``
    are the keys written (key -> TTL), every session's keys all or none (exit code 3)."""

    def __init__(self, ttls: dict[str, int], cause: str) -> None:
        super().__init__(f"part of the revocation was not written: {cause}")
        self.ttls = ttls
        self.cause = cause


class NotDurable(SessionmonError):
    """A revocation is on the Redis master only: fewer replicas than asked hold it (exit 4)."""


class RevocationNotDurable(NotDurable):
    """The keys were written on the master but fewer replicas than asked acknowledged them.

    ``ttls`` are the keys written (key -> TTL), ``acked`` / ``wanted`` the replica counts.
    """

    def __init__(self, ttls: dict[str, int], acked: int, wanted: int) -> None:
        super().__init__(
            f"not durable: {acked} of {wanted} replica{'s' if wanted != 1 else ''} "
            f"acknowledged the revocation in time"
        )
        self.ttls = ttls
        self.acked = acked
        self.wanted = wanted
