"""Moving sessions, audit rows and the ended-session history between stores (SQLite to
PostgreSQL, or back).

Rows are read in id order, in batches, and each batch is written in one transaction with its ids
kept, so an interrupted copy leaves a prefix of each table behind and ``resume`` continues after
the destination's largest ids. Rows already there are left as they are. The final count check
compares the three tables; a source that was written to during the copy shows up there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sessionmon.core.errors import DatabaseError
from sessionmon.core.store.base import SessionStore

BATCH = 5_000


@dataclass(frozen=True)
class CopyProgress:
    """Where a copy is: ``table`` is "sessions", "audit" or "history"."""

    table: str
    done: int
    total: int


@dataclass(frozen=True)
class CopyReport:
    """What a copy did and whether both stores now hold the same number of rows."""

    sessions_copied: int
    audit_copied: int
    source_sessions: int
    source_audit: int
    dest_sessions: int
    dest_audit: int
    ended_copied: int = 0
    source_ended: int = 0
    dest_ended: int = 0

    @property
    def counts_match(self) -> bool:
        source = (self.source_sessions, self.source_audit, self.source_ended)
        return source == (self.dest_sessions, self.dest_audit, self.dest_ended)


def copy_store(
    source: SessionStore,
    dest: SessionStore,
    *,
    resume: bool = False,
    batch: int = BATCH,
    progress: Callable[[CopyProgress], None] | None = None,
) -> CopyReport:
    """Copy every session, audit row and ended session of ``source`` into ``dest``.

    Refuses (``DatabaseError``) a destination that already holds rows unless ``resume``: then the
    copy goes on after the destination's largest session id, audit id and ended-session id.
    """
    if source.location == dest.location:
        raise DatabaseError("--from and --to are the same database")
    total_sessions = source.count_sessions(include_expired=True)
    total_audit = source.audit_count()
    have_sessions = dest.count_sessions(include_expired=True)
    total_ended = source.ended_count()
    have_audit = dest.audit_count()
    have_ended = dest.ended_count()
    if (have_sessions or have_audit or have_ended) and not resume:
        raise DatabaseError(
            f"the destination {dest.display} already holds {have_sessions} sessions, "
            f"{have_audit} audit rows and {have_ended} ended sessions (use --resume to continue "
            "an interrupted copy)"
        )
    last_id = dest.last_session_id() if resume else None
    last_audit = _last_audit_id(dest) if resume else 0
    last_ended = dest.last_ended_id() if resume else 0
    sessions_copied = audit_copied = ended_copied = 0
    done = have_sessions if resume else 0
    while rows := source.iter_session_batches(last_id, batch):
        dest.copy_in(rows, [])
        sessions_copied += len(rows)
        done += len(rows)
        last_id = rows[-1].id
        if progress:
            progress(CopyProgress("sessions", done, total_sessions))
    done = have_audit if resume else 0
    while entries := source.iter_audit_batches(last_audit, batch):
        dest.copy_in([], entries)
        audit_copied += len(entries)
        done += len(entries)
        last_audit = entries[-1].id
        if progress:
            progress(CopyProgress("audit", done, total_audit))
    done = have_ended if resume else 0
    while ended := source.iter_ended_batches(last_ended, batch):
        dest.copy_in([], [], ended)
        ended_copied += len(ended)
        done += len(ended)
        last_ended = ended[-1].id
        if progress:
            progress(CopyProgress("history", done, total_ended))
    return CopyReport(
        sessions_copied=sessions_copied,
        audit_copied=audit_copied,
        source_sessions=source.count_sessions(include_expired=True),
        source_audit=source.audit_count(),
        dest_sessions=dest.count_sessions(include_expired=True),
        dest_audit=dest.audit_count(),
        ended_copied=ended_copied,
        source_ended=source.ended_count(),
        dest_ended=dest.ended_count(),
    )


def _last_audit_id(store: SessionStore) -> int:
    newest = store.audit(limit=1)
    return newest[0].id if newest else 0
