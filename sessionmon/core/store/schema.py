"""The sessions table as every backend and every reader sees it: columns, sorts, filter, version.

Defined once here; the SQLite and PostgreSQL backends build their DDL, their indexes and their
queries from these names, and the monitor offers exactly these sorts.
"""

from __future__ import annotations

from dataclasses import dataclass

# Both backends migrate to this version (their migration lists have this many steps).
# Version 4 is the key ids' (access_kid, refresh_kid on sessions); version 5 the history of
# ended sessions (``ended_sessions``, see ``store.history``); version 6 SQLite's deferred
# trigram-index deletes for bulk endings (``store.sqlite_search``; nothing on PostgreSQL).
SCHEMA_VERSION = 6
HISTORY_VERSION = 5

SESSION_COLUMNS = (
    "id",
    "user_id",
    "email",
    "name",
    "created_at",
    "last_seen_at",
    "ip",
    "user_agent",
    "access_jti",
    "access_exp",
    "refresh_jti",
    "refresh_exp",
    "refresh_count",
    "source",
    # Version 3: refresh-token rotation. ``generation`` is the live refresh token's generation
    # (``refresh_jti`` its id); ``prev_refresh_jti`` the one it replaced (accepted again within the
    # reuse-grace window, for the same successor pair); ``rotated_at`` / ``rotated_ip`` /
    # ``rotated_ua``: when and from where the last rotation came (the successor's ``iat``).
    "generation",
    "prev_refresh_jti",
    "rotated_at",
    "rotated_ip",
    "rotated_ua",
    # Version 4: the ``kid`` of the key that signed the live access and refresh tokens, and the
    # last ``ROTATION_HISTORY`` rotations as a JSON list (oldest first; see ``RotationRecord``).
    "access_kid",
    "refresh_kid",
    "rotations",
)

# How many rotations a session row keeps (appended by the rotation's compare-and-set itself).
ROTATION_HISTORY = 10

AUDIT_COLUMNS = (
    "id",
    "at",
    "actor",
    "action",
    "session_id",
    "user_id",
    "email",
    "reason",
    "revoked",
    "outcome",
    "detail",  # version 3: a JSON object with what else the action recorded (or NULL)
)

# ended_sessions' indexes (both backends): (name, columns).
ENDED_INDEXES = (
    ("ended_by_at", "ended_at"),
    ("ended_by_user", "user_id, ended_at"),
    ("ended_by_email", "email, ended_at"),
    ("ended_by_refresh_exp", "refresh_exp"),
)

# The monitor's filter: a case-insensitive substring of any of these columns.
SEARCH_COLUMNS = ("email", "name", "id", "ip")
# Shorter filters cannot use a trigram index (SQLite FTS5 trigram, PostgreSQL pg_trgm).
TRIGRAM = 3


@dataclass(frozen=True)
class Sort:
    """One order the monitor offers.

    ``keys`` are the ORDER BY columns before the backend's row key (SQLite's rowid, PostgreSQL's
    ``seq``), which comes last so ties are stable. Each backend has a covering index on exactly
    ``keys`` + row key, so a live list (``WHERE refresh_exp > now``) reads that index only. Only
    the first key may be NULL (``refresh_exp`` of a live row never is); NULLs sort first in
    ascending order on both backends.
    """

    name: str
    keys: tuple[str, ...]
    descending: bool  # the natural direction (newest first for times of the past)
    label: str


SORTS: dict[str, Sort] = {
    s.name: s
    for s in (
        Sort("access_exp", ("access_exp", "refresh_exp"), False, "access expiry"),
        Sort("refresh_exp", ("refresh_exp",), False, "refresh expiry"),
        Sort("last_seen_at", ("last_seen_at", "refresh_exp"), True, "last seen"),
        Sort("created_at", ("created_at", "refresh_exp"), True, "age"),
        Sort("email", ("email", "refresh_exp"), False, "email"),
    )
}
SORT_CYCLE = tuple(SORTS)

# Every column a where clause or an ORDER BY may name: a query is built only from these.
ORDER_COLUMNS = frozenset(c for s in SORTS.values() for c in s.keys)
