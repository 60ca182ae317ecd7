"""The session store: one interface (``SessionStore``, ``ReadModel``), two backends.

``open_store(db)`` and ``open_reader(db)`` choose the backend from a ``DatabaseUrl`` (a path or
``sqlite:///…`` is SQLite, ``postgresql://…`` is PostgreSQL). The PostgreSQL backend is imported
only when it is used.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from sessionmon.core.clock import SYSTEM_CLOCK, Clock
from sessionmon.core.store.base import (
    AuditEntry,
    AuditRow,
    Backend,
    ReadModel,
    Session,
    SessionStore,
)
from sessionmon.core.store.order import Order, ViewQuery
from sessionmon.core.store.schema import (
    SCHEMA_VERSION,
    SEARCH_COLUMNS,
    SESSION_COLUMNS,
    SORT_CYCLE,
    SORTS,
)
from sessionmon.core.store.sqlite import SqliteStore
from sessionmon.core.store.sqlite_reader import SqliteReader
from sessionmon.core.store.url import DatabaseUrl

if TYPE_CHECKING:
    from pathlib import Path


def open_store(
    db: DatabaseUrl | str | os.PathLike[str] | Path,
    *,
    create: bool = True,
    clock: Clock = SYSTEM_CLOCK,
) -> SessionStore:
    """Open (and migrate) the store ``db`` names; raises ``DatabaseError`` / ``ConfigError``."""
    url = DatabaseUrl.parse(db)
    if url.path is not None:
        return SqliteStore(url.path, create=create, clock=clock)
    from sessionmon.core.store.postgres import PostgresStore

    return PostgresStore(url, create=create, clock=clock)


def open_reader(
    db: DatabaseUrl | str | os.PathLike[str] | Path, *, busy_timeout: float = 1.0
) -> ReadModel:
    """The monitor's read model for ``db`` (never creates or migrates anything).

    ``busy_timeout``: how long a SQLite read waits on a lock (the server's own locks apply on
    PostgreSQL)."""
    url = DatabaseUrl.parse(db)
    if url.path is not None:
        return SqliteReader(url.path, busy_timeout=busy_timeout)
    from sessionmon.core.store.postgres import PostgresReader

    return PostgresReader(url)


__all__ = [
    "SCHEMA_VERSION",
    "SEARCH_COLUMNS",
    "SESSION_COLUMNS",
    "SORTS",
    "SORT_CYCLE",
    "AuditEntry",
    "AuditRow",
    "Backend",
    "DatabaseUrl",
    "Order",
    "ReadModel",
    "Session",
    "SessionStore",
    "SqliteReader",
    "SqliteStore",
    "ViewQuery",
    "open_reader",
    "open_store",
]
