"""The operator's key actions, audited in the store: list, rotate, retire, export the JWKS.

Used by ``sessionmon keys ...`` and the monitor; neither reads key files itself.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from sessionmon.core.clock import SYSTEM_CLOCK, Clock
from sessionmon.core.errors import DatabaseError, KeySetError
from sessionmon.core.events import Event, EventKind, EventSink, NullSink
from sessionmon.core.keydir import KeyChange, KeyDirectory
from sessionmon.core.keyring import KeyEntry, KeyRing, overlap_for
from sessionmon.core.keysource import KeySource, LiveKeys, open_keys
from sessionmon.core.settings import Settings
from sessionmon.core.store import AuditRow, SessionStore


@dataclass(frozen=True)
class KeyListing:
    """The key set as of ``now``, with the overlap a ``previous`` key needs."""

    ring: KeyRing
    overlap: float
    now: float

    @property
    def entries(self) -> tuple[KeyEntry, ...]:
        return self.ring.entries

    def to_dicts(self) -> list[dict[str, Any]]:
        return [e.to_dict(self.now, self.overlap) for e in self.ring.entries]


def key_overlap(settings: Settings) -> float:
    """How long a ``previous`` key keeps verifying under ``settings``."""
    return overlap_for(settings.access_ttl, settings.refresh_ttl, settings.leeway)


def listing(keys: KeySource, settings: Settings, clock: Clock = SYSTEM_CLOCK) -> KeyListing:
    """The key set as of now (re-read, not the polled copy)."""
    return KeyListing(keys.refresh(), key_overlap(settings), clock.now())


class KeyAdmin:
    """Rotate, retire and export one settings' key set; every action leaves an audit row."""

    def __init__(
        self,
        settings: Settings,
        store: SessionStore,
        *,
        keys: KeySource | None = None,
        clock: Clock = SYSTEM_CLOCK,
        events: EventSink | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.events: EventSink = events if events is not None else NullSink()
        self.keys = keys if keys is not None else open_keys(settings, clock=clock)

    def listing(self) -> KeyListing:
        return listing(self.keys, self.settings, self.clock)

    def _directory(self, what: str) -> KeyDirectory:
        if isinstance(self.keys, LiveKeys):
            return self.keys.directory
        where = self.keys.ring().where
        raise KeySetError(
            f"cannot {what}: the key comes from {where}, a single configured key; "
            f"unset it and set SESSIONMON_KEY_DIR (or use the generated key set) to rotate keys"
        )

    def rotate(self, actor: str, reason: str | None = None) -> KeyChange:
        """``next`` -> ``current`` -> ``previous``, a new ``next`` (see ``KeyDirectory.rotate``)."""
        change = self._directory("rotate").rotate(key_overlap(self.settings))
        self.keys.refresh()
        self._audit(change, actor, reason)
        return change

    def retire(self, kid: str, actor: str, reason: str | None = None) -> KeyChange:
        """Every token signed with ``kid`` is rejected from now on (every process: within 1 s)."""
        change = self._directory("retire a key").retire(kid)
        self.keys.refresh()
        self._audit(change, actor, reason, revoked=[f"kid:{kid}"])
        return change

    def export_jwks(self, actor: str) -> dict[str, Any]:
        """The public keys of ``next``, ``current`` and ``previous``. HMAC keys have none: a
        ``KeySetError`` says so rather than giving an empty set that looks like an outage."""
        ring = self.keys.refresh()
        if ring.current.material is not None and ring.current.material.is_hmac:
            raise KeySetError(
                f"{ring.algorithm} keys are shared secrets: there are no public keys to export "
                f"(use an asymmetric algorithm such as ES256 for a JWKS)"
            )
        jwks = ring.jwks()
        kids = ", ".join(k["kid"] for k in jwks["keys"])
        self._write_audit(
            AuditRow(
                at=self.clock.now(), actor=actor, action="keys_export_jwks", outcome=f"ok: {kids}"
            ),
            what="exported the JWKS",
        )
        return jwks

    def _audit(
        self, change: KeyChange, actor: str, reason: str | None, revoked: list[str] | None = None
    ) -> None:
        row = AuditRow(
            at=self.clock.now(),
            actor=actor,
            action=change.action,
            reason=reason,
            revoked=revoked or [],
            outcome=f"ok: {change.algorithm} {change.summary()}",
        )
        # The feed says what changed (kids only) and why; never key material.
        said = f"{change.action} {change.summary()}" + (f" ({reason})" if reason else "")
        with contextlib.suppress(Exception):
            self.events.emit(Event(EventKind.KEY_ROTATION, row.at, reason=said, actor=actor))
        self._write_audit(row, what=change.summary())

    def _write_audit(self, row: AuditRow, what: str) -> None:
        try:
            self.store.write_audit([row])
        except DatabaseError as exc:
            raise type(exc)(f"done ({what}), but its audit row was not written: {exc}") from None
