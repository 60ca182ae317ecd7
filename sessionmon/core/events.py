"""The activity feed's events: what the core does, as it happens, in every process.

An event never carries a token: only ids, the user, the reason and the client's address. The core
sends events to an ``EventSink``; ``sessionmon.core.event_stream`` writes them to a capped Redis
Stream that every process appends to and the monitor and ``sessionmon events`` read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol


class EventKind(StrEnum):
    """What happened."""

    LOGIN = "login"
    REFRESH = "refresh"  # a silent refresh issued a new access token
    ROTATION = "rotation"  # a refresh token was rotated (a new generation)
    LOGOUT = "logout"  # the user logged out
    FORCE_LOGOUT = "force_logout"  # an operator ended sessions
    REJECTION = "rejection"  # a token was refused (``reason`` says why)
    REUSE_DETECTED = "reuse_detected"  # an old refresh token came back: the family is revoked
    SESSION_ENDED = "session_ended"  # a lifetime policy ended a session (``reason``)
    KEY_ROTATION = "key_rotation"  # ``reason``: rotate or retire (with the kid)
    LOGOUT_JOB = "logout_job"  # a revoke-by-query job ran (``count``: sessions it ended)
    DOCTOR_REPAIR = "doctor_repair"


# Kinds that end sessions: the activity view's "revocations" (``count`` sessions each).
REVOCATION_KINDS = frozenset(
    {EventKind.LOGOUT, EventKind.FORCE_LOGOUT, EventKind.REUSE_DETECTED, EventKind.SESSION_ENDED}
)


@dataclass(frozen=True)
class Event:
    """One entry of the feed. ``id`` is the stream id (empty until written and read back)."""

    kind: EventKind
    at: float
    session_id: str | None = None
    user_id: str | None = None
    email: str | None = None
    reason: str | None = None
    actor: str | None = None
    ip: str | None = None
    count: int = 1  # how many sessions (or tokens) it was about
    id: str = ""

    def fields(self) -> dict[str, str]:
        """The stream entry's fields (``None`` left out)."""
        out = {"kind": self.kind.value, "at": repr(self.at)}
        for name in _OPTIONAL:
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.count != 1:
            out["count"] = str(self.count)
        return out

    @classmethod
    def from_entry(cls, entry_id: str, data: Mapping[str, str]) -> Event | None:
        """The event of a stream entry; ``None`` for an entry this version cannot read."""
        try:
            kind = EventKind(data["kind"])
            at = float(data["at"])
            count = int(data.get("count", "1"))
        except (KeyError, ValueError):
            return None
        opt = {k: data.get(k) for k in _OPTIONAL}
        return cls(kind, at, count=count, id=entry_id, **opt)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, **self.fields(), "count": self.count, "at": self.at}


_OPTIONAL = ("session_id", "user_id", "email", "reason", "actor", "ip")


class EventSink(Protocol):
    """Where the core sends its events."""

    def emit(self, event: Event) -> None: ...


class NullSink:
    """No feed (events off, or no Redis to write to)."""

    def emit(self, event: Event) -> None:
        return None
