"""Revoke by query: the set a query matched is frozen into a job, then ended in batches.

A job is a directory beside the database (``sessions.db.jobs/<id>/``): ``ids`` (the matched
session ids, one per line, written once) and ``state.json`` (how far it got, rewritten atomically
after every batch).
A run that stops (Redis or the database lost, Ctrl-C) is resumed from the last finished batch: ids
already ended are found gone and skipped (never revoked twice), and every planned id is visited
(nothing missed). A batch cut short in the middle is redone; writing its blacklist keys again is
idempotent. Each session's ending is audited as ``force_logout_query``, and each run of the job
has a ``logout_query`` row saying how far it got and how it ended.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

from sessionmon.core.auth import Auth, LogoutFailed, LogoutOutcome, LogoutResult
from sessionmon.core.errors import (
    ConfigError,
    DatabaseError,
    NotDurable,
    RedisUnavailable,
    SessionmonError,
)
from sessionmon.core.events import Event, EventKind
from sessionmon.core.session_query import SessionQuery, matching_sessions
from sessionmon.core.store import AuditRow, SessionStore

if TYPE_CHECKING:
    from sessionmon.core.store.url import DatabaseUrl

ACTION = "force_logout_query"
JOB_ACTION = "logout_query"
DEFAULT_BATCH = 1000


class JobOutcome(Enum):
    """How a run of a job ended."""

    COMPLETE = "complete"  # every planned id visited
    STOPPED = "stopped"  # Redis or the database failed; resume later


@dataclass
class JobState:
    """What ``state.json`` holds."""

    job: str
    query: str
    actor: str
    reason: str | None
    planned_at: float
    total: int
    done: int = 0  # ids visited (ended or found gone)
    ended: int = 0  # sessions this job ended
    gone: int = 0  # planned ids that had ended by other means before their batch
    keys: int = 0  # blacklist keys written
    finished: bool = False


@dataclass(frozen=True)
class JobReport:
    """The state after a run, how the run ended and, if it stopped, why."""

    state: JobState
    outcome: JobOutcome
    failure: SessionmonError | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            **asdict(self.state),
            "outcome": self.outcome.value,
            "error": str(self.failure) if self.failure else None,
        }


Progress = Callable[[JobState], None]


def end_in_batches(
    auth: Auth,
    session_ids: Sequence[str],
    actor: str,
    reason: str | None,
    *,
    batch: int = DEFAULT_BATCH,
    progress: Callable[[int, int], None] | None = None,
) -> LogoutResult:
    """Force-logout exactly ``session_ids``, ``batch`` at a time, as one result. A failure stops
    it: ``error`` says how far it got (what was done before stays done and is in the result)."""
    total = LogoutResult(action="force_logout", requested=list(session_ids))
    for start in range(0, len(session_ids), batch):
        chunk = session_ids[start : start + batch]
        done = f"stopped after {start:,} of {len(session_ids):,}"
        try:
            part = auth.force_logout_many(chunk, actor, reason)
        except LogoutFailed as exc:  # Redis: nothing of this batch was revoked or deleted
            total.outcome, total.error = exc.result.outcome, f"{done}: {exc}"
            return total
        except DatabaseError as exc:  # this batch's sessions could not be read
            total.outcome, total.error = LogoutOutcome.DATABASE_UNAVAILABLE, f"{done}: {exc}"
            return total
        total.found += part.found
        total.missing += part.missing
        total.revoked.update(part.revoked)
        total.deleted += part.deleted
        total.failed += part.failed
        if not part.ok:
            total.outcome, total.error = part.outcome, f"{done}: {part.error}"
            return total
        if progress is not None:
            progress(start + len(chunk), len(session_ids))
    if total.missing:
        total.outcome = LogoutOutcome.PARTIAL if total.found else LogoutOutcome.NOT_FOUND
    return total


def jobs_dir_for(db: DatabaseUrl) -> Path:
    """Where the jobs of database ``db`` live: beside it (``sessions.db.jobs/``), or in the
    PostgreSQL database's data directory."""
    anchor = db.anchor
    return anchor.with_name(anchor.name + ".jobs")


class LogoutJob:
    """One planned revocation on disk."""

    def __init__(self, directory: Path, state: JobState) -> None:
        self.directory = directory
        self.state = state

    # -- planning and loading --------------------------------------------------------------------

    @classmethod
    def plan(
        cls,
        root: Path,
        store: SessionStore,
        query: SessionQuery,
        *,
        actor: str,
        reason: str | None,
        now: float,
    ) -> LogoutJob:
        """Freeze the sessions ``query`` matches now into a new job under ``root``."""
        job_id = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now)) + "-" + secrets.token_hex(3)
        directory = root / job_id
        directory.mkdir(parents=True, mode=0o700)
        total = 0
        with open(directory / "ids", "w", encoding="ascii", opener=_private) as out:
            for s in matching_sessions(store, query, now):
                out.write(s.id + "\n")
                total += 1
        state = JobState(job_id, query.describe(), actor, reason, now, total)
        job = cls(directory, state)
        job._save()
        return job

    def discard(self) -> None:
        """Remove a job that has nothing to do (a query that matched no session)."""
        for name in ("ids", "state.json", "lock"):
            (self.directory / name).unlink(missing_ok=True)
        self.directory.rmdir()

    @classmethod
    def load(cls, root: Path, job_id: str) -> LogoutJob:
        """The job ``job_id`` (a ``ConfigError`` naming the jobs directory if there is none)."""
        if not job_id or "/" in job_id or job_id.startswith("."):
            raise ConfigError(f"not a job id: {job_id!r}")
        directory = root / job_id
        try:
            data = json.loads((directory / "state.json").read_text())
            return cls(directory, JobState(**data))
        except FileNotFoundError:
            raise ConfigError(f"no logout job {job_id} in {root}") from None
        except (OSError, ValueError, TypeError) as exc:
            raise ConfigError(f"logout job {job_id} is unreadable: {exc}") from None

    def ids(self) -> list[str]:
        with open(self.directory / "ids", encoding="ascii") as f:
            return [line.rstrip("\n") for line in f if line.strip()]

    # -- running ---------------------------------------------------------------------------------

    def run(
        self, auth: Auth, *, batch: int = DEFAULT_BATCH, progress: Progress | None = None
    ) -> JobReport:
        """End the remaining sessions batch by batch; stop (state saved) on a Redis or database
        failure. Only one process runs a job at a time."""
        if batch < 1:
            raise ConfigError("the batch size must be at least 1")
        with self._exclusive():
            ids = self.ids()
            st = self.state
            failure: SessionmonError | None = None
            while st.done < len(ids):
                chunk = ids[st.done : st.done + batch]
                try:
                    self._end(auth, chunk)
                except (RedisUnavailable, DatabaseError, NotDurable) as exc:
                    failure = exc
                    break
                if progress is not None:
                    progress(st)
            st.finished = failure is None
            self._save()
            now = auth.clock.now()
            counts = f"{st.ended} ended, {st.gone} gone, {st.done}/{st.total} visited"
            outcome = f"ok: {counts}" if failure is None else f"stopped ({counts}): {failure}"
            with contextlib.suppress(DatabaseError):
                auth.store.write_audit([self._audit_row(now, outcome)])
            with contextlib.suppress(Exception):  # the feed never fails the job
                auth.events.emit(
                    Event(
                        EventKind.LOGOUT_JOB,
                        now,
                        reason=f"job {st.job}: {outcome}",
                        actor=st.actor,
                        count=st.ended,
                    )
                )
        return JobReport(
            st, JobOutcome.COMPLETE if failure is None else JobOutcome.STOPPED, failure
        )

    def _end(self, auth: Auth, chunk: list[str]) -> None:
        st = self.state
        sessions = auth.store.get_sessions(chunk)
        ended = 0
        if sessions:
            reason = st.reason or f"query: {st.query}"
            result = auth.end_sessions(sessions, ACTION, st.actor, reason)
            # Not durable (on the master only), or revoked with the rows left: a resume redoes
            # this batch (writing its keys again is idempotent).
            if result.outcome is LogoutOutcome.NOT_DURABLE:
                raise NotDurable(result.error or result.outcome.value)
            if result.outcome is LogoutOutcome.REDIS_PARTIAL:  # a resume redoes the rest
                raise RedisUnavailable(result.error or result.outcome.value)
            if not result.ok:
                raise DatabaseError(result.error or "the session rows were not deleted")
            st.keys += len(result.revoked)
            ended = result.deleted
        st.ended += ended
        st.gone += len(chunk) - ended  # ended meanwhile by a logout, a purge or another job
        st.done += len(chunk)
        self._save()

    # -- files -----------------------------------------------------------------------------------

    def _save(self) -> None:
        path = self.directory / "state.json"
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8", opener=_private) as f:
            json.dump(asdict(self.state), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        with open(self.directory / "lock", "a", opener=_private) as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ConfigError(
                    f"logout job {self.state.job} is running in another process"
                ) from None
            yield

    def _audit_row(self, now: float, outcome: str) -> AuditRow:
        st = self.state
        detail = f"job {st.job}: {st.query}"
        return AuditRow(
            at=now,
            actor=st.actor,
            action=JOB_ACTION,
            reason=f"{st.reason}; {detail}" if st.reason else detail,
            outcome=outcome,
        )


def _private(path: str, flags: int) -> int:
    return os.open(path, flags, 0o600)
