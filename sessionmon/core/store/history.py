"""Sessions that ended: how one ended, the row kept for it, and the history's filters.

An ``ended_sessions`` row is written in the same transaction that deletes the session (logout,
force-logout, revoke by query, reuse detection, a policy, eviction at login, purge). It holds who,
when, how, by whom and why, where from, and the ids and expiries of the tokens it had (never the
tokens): enough for ``doctor`` to ask whether a revoked session's tokens are still on the
blacklist. Rows older than the retention (``--history-retention``) are deleted as new endings
are written and by ``purge``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from sessionmon.core.errors import ConfigError

if TYPE_CHECKING:
    from sessionmon.core.store.base import AuditRow, Session

DEFAULT_RETENTION = 30 * 86400.0
# How often one store prunes the history while writing endings (seconds).
PRUNE_EVERY = 60.0


class EndHow(StrEnum):
    """How a session ended."""

    LOGOUT = "logout"
    FORCE_LOGOUT = "force_logout"
    FORCE_LOGOUT_QUERY = "force_logout_query"
    REUSE_DETECTED = "reuse_detected"
    IDLE = "idle"
    ABSOLUTE = "absolute"
    EVICTED = "evicted"
    EXPIRED = "expired"  # purged after its refresh token expired

    @property
    def revoked(self) -> bool:
        """True when the ending blacklisted the session's tokens (all but a purge)."""
        return self is not EndHow.EXPIRED

    @classmethod
    def parse(cls, value: str) -> EndHow:
        text = value.strip().lower().replace("-", "_")
        aliases = {"purged": cls.EXPIRED, "force_logout_user": cls.FORCE_LOGOUT}
        if text in aliases:
            return aliases[text]
        try:
            return cls(text)
        except ValueError:
            choices = ", ".join(m.value for m in cls)
            raise ConfigError(f"not a way a session ends: {value!r} (one of {choices})") from None

    @classmethod
    def of_audit(cls, action: str, reason: str | None) -> EndHow:
        """How the audit row of a deletion says the session ended."""
        if action in ("force_logout", "force_logout_user"):
            return cls.FORCE_LOGOUT
        if action == "session_ended" and reason in (cls.IDLE, cls.ABSOLUTE, cls.EVICTED):
            return cls(reason)
        for how in cls:
            if action == how.value:
                return how
        return cls.FORCE_LOGOUT


# Columns of ``ended_sessions`` after its ``id``, in order.
ENDED_COLUMNS = (
    "session_id",
    "user_id",
    "email",
    "name",
    "created_at",
    "ended_at",
    "how",
    "actor",
    "reason",
    "ip",
    "user_agent",
    "access_jti",
    "access_exp",
    "refresh_jti",
    "refresh_exp",
    "generation",
    "access_kid",
    "refresh_kid",
)


@dataclass(frozen=True)
class EndedSession:
    """One row of ``ended_sessions`` (``id`` 0 before it is written)."""

    session_id: str
    user_id: str
    email: str | None
    name: str | None
    created_at: float
    ended_at: float
    how: EndHow
    actor: str | None
    reason: str | None
    ip: str | None
    user_agent: str | None
    access_jti: str | None
    access_exp: float | None
    refresh_jti: str | None
    refresh_exp: float | None
    generation: int = 0
    access_kid: str | None = None
    refresh_kid: str | None = None
    id: int = 0

    @classmethod
    def of(
        cls, s: Session, *, ended_at: float, how: EndHow, actor: str | None, reason: str | None
    ) -> EndedSession:
        return cls(
            s.id, s.user_id, s.email, s.name, s.created_at, ended_at, how, actor, reason,
            s.ip, s.user_agent, s.access_jti, s.access_exp, s.refresh_jti, s.refresh_exp,
            s.generation, getattr(s, "access_kid", None), getattr(s, "refresh_kid", None),
        )  # fmt: skip

    @classmethod
    def of_audit(cls, s: Session, row: AuditRow) -> EndedSession:
        return cls.of(
            s, ended_at=row.at, how=EndHow.of_audit(row.action, row.reason), actor=row.actor,
            reason=row.reason,
        )  # fmt: skip

    @classmethod
    def from_row(cls, r: tuple[Any, ...]) -> EndedSession:
        """From ``id`` then ``ENDED_COLUMNS``."""
        values: dict[str, Any] = dict(zip(ENDED_COLUMNS, r[1:], strict=True))
        values["how"] = EndHow.parse(str(values["how"]))
        return cls(**values, id=int(r[0]))

    def params(self) -> list[Any]:
        return (
            [getattr(self, c) for c in ENDED_COLUMNS[:6]]
            + [self.how.value]
            + [getattr(self, c) for c in ENDED_COLUMNS[7:]]
        )

    @property
    def tokens_expire_at(self) -> float:
        """When the last token of the session stops being accepted (before the leeway)."""
        return max(self.access_exp or 0.0, self.refresh_exp or 0.0)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["how"] = self.how.value
        return out


@dataclass(frozen=True)
class HistoryQuery:
    """Ended sessions matching every filter given, newest first."""

    user: str | None = None  # user id or email (exact; email case-insensitive)
    text: str | None = None  # a substring of the email, name, user id or session id
    since: float | None = None
    until: float | None = None
    how: EndHow | None = None
    limit: int = 100
