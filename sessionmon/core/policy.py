"""Session policies: refresh-token rotation and the lifetime limits of a session.

One frozen ``SessionPolicy`` per ``Auth``, built from the settings in one place
(``SessionPolicy.from_settings``). The deadlines are pure functions of a session row and the
policy, so the CLI and the monitor show exactly what the auth core enforces.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from sessionmon.core.errors import ConfigError

if TYPE_CHECKING:
    from sessionmon.core.settings import Settings
    from sessionmon.core.store.base import Session

DEFAULT_REUSE_GRACE = 10.0


class OnMaxSessions(StrEnum):
    """What a login does when its user already has ``max_sessions_per_user`` live sessions."""

    DENY = "deny"
    EVICT_OLDEST = "evict-oldest"

    @classmethod
    def parse(cls, value: object) -> OnMaxSessions:
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            choices = ", ".join(m.value for m in cls)
            raise ConfigError(f"not one of {choices}: {value!r}") from None


class Ending(StrEnum):
    """Why a policy ended a session (the ``reason`` of its audit row)."""

    IDLE = "idle"
    ABSOLUTE = "absolute"
    EVICTED = "evicted"


@dataclass(frozen=True)
class SessionPolicy:
    """Rotation and lifetime limits; ``None`` means "no limit"."""

    rotate_refresh: bool = True
    reuse_grace: float = DEFAULT_REUSE_GRACE
    idle_timeout: float | None = None
    absolute_timeout: float | None = None
    max_sessions_per_user: int | None = None
    on_max_sessions: OnMaxSessions = OnMaxSessions.DENY

    def __post_init__(self) -> None:
        if self.reuse_grace < 0:
            raise ConfigError("--reuse-grace must not be negative")
        for name in ("idle_timeout", "absolute_timeout"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be positive")
        if self.max_sessions_per_user is not None and self.max_sessions_per_user < 1:
            raise ConfigError("--max-sessions-per-user must be at least 1")

    @classmethod
    def from_settings(cls, settings: Settings) -> SessionPolicy:
        return cls(
            rotate_refresh=settings.rotate_refresh,
            reuse_grace=settings.reuse_grace,
            idle_timeout=settings.idle_timeout,
            absolute_timeout=settings.absolute_timeout,
            max_sessions_per_user=settings.max_sessions_per_user,
            on_max_sessions=settings.on_max_sessions,
        )

    def idle_deadline(self, session: Session) -> float | None:
        """When the session ends for want of requests (if nothing happens before)."""
        if self.idle_timeout is None:
            return None
        return session.last_seen_at + self.idle_timeout

    def absolute_deadline(self, session: Session) -> float | None:
        """When the session ends whatever its refreshes."""
        return self.absolute_deadline_from(session.created_at)

    def absolute_deadline_from(self, created_at: float) -> float | None:
        if self.absolute_timeout is None:
            return None
        return created_at + self.absolute_timeout

    def ending(self, session: Session, now: float) -> Ending | None:
        """The policy that ends ``session`` at ``now`` (exactly at its deadline), if any."""
        absolute = self.absolute_deadline(session)
        if absolute is not None and now >= absolute:
            return Ending.ABSOLUTE
        idle = self.idle_deadline(session)
        if idle is not None and now >= idle:
            return Ending.IDLE
        return None

    def cap(self, exp: float, created_at: float) -> float:
        """A token expiry no later than the session's absolute deadline."""
        absolute = self.absolute_deadline_from(created_at)
        return exp if absolute is None else min(exp, absolute)
