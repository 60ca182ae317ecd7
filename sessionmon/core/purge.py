"""Purging expired sessions: rows whose refresh token has expired, with one audit row; the
history of ended sessions loses its rows older than the retention at the same time."""

from __future__ import annotations

import time

from sessionmon.core.clock import SYSTEM_CLOCK, Clock
from sessionmon.core.store import AuditRow, SessionStore


def purge_expired(
    store: SessionStore,
    before: float,
    actor: str,
    *,
    dry_run: bool = False,
    clock: Clock = SYSTEM_CLOCK,
) -> int:
    """Delete the sessions whose refresh token expired before ``before`` and audit it; returns
    how many were deleted (with ``dry_run``: would be). Their tokens can no longer be used, so
    nothing is blacklisted."""
    if dry_run:
        return store.count_sessions(include_expired=True) - store.count_sessions(now=before)
    deleted = store.purge_expired(before, actor=actor)
    store.prune_history()
    if deleted:
        cutoff = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(before))
        store.write_audit(
            [
                AuditRow(
                    at=clock.now(),
                    actor=actor,
                    action="purge",
                    reason=f"refresh expired before {cutoff}",
                    outcome=f"ok: {deleted} deleted",
                )
            ]
        )
    return deleted
