"""A key set as one immutable snapshot: each key's kid, state and age, which key signs, which keys
verify, and the public JWKS.

States: ``next`` (published, verifies, will sign after the next rotation), ``current`` (signs and
verifies; exactly one), ``previous`` (verifies until the longest token it could have signed has
expired), ``retired`` (verifies nothing: every token it signed is rejected).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sessionmon.core.errors import ConfigError
from sessionmon.core.keys import KeyMaterial, public_jwk

# A process sees a change of the key set within this long (keysource.LiveKeys' poll); a key that
# stopped being current may still sign for that long elsewhere.
PROPAGATION = 1.0


class KeyState(StrEnum):
    """Where a key is in its life."""

    NEXT = "next"
    CURRENT = "current"
    PREVIOUS = "previous"
    RETIRED = "retired"


VERIFYING = frozenset({KeyState.NEXT, KeyState.CURRENT, KeyState.PREVIOUS})


@dataclass(frozen=True)
class KeyEntry:
    """One key of the set. ``since``: when it entered ``state`` (``created_at`` and ``since`` are
    None for a configured key: its age is not known). ``material`` is None for a retired key
    (its file is deleted)."""

    kid: str
    algorithm: str
    state: KeyState
    created_at: float | None
    since: float | None
    material: KeyMaterial | None = field(default=None, repr=False, compare=False)

    def can_go_at(self, overlap: float) -> float | None:
        """For a ``previous`` key: when no token it signed can still be valid."""
        if self.state is not KeyState.PREVIOUS or self.since is None:
            return None
        return self.since + overlap + PROPAGATION

    def age(self, now: float) -> float | None:
        return None if self.created_at is None else max(0.0, now - self.created_at)

    def to_dict(self, now: float, overlap: float) -> dict[str, Any]:
        can_go = self.can_go_at(overlap)
        return {
            "kid": self.kid,
            "algorithm": self.algorithm,
            "state": self.state.value,
            "created_at": self.created_at,
            "since": self.since,
            "age": None if (age := self.age(now)) is None else round(age, 3),
            "can_go_at": can_go,
            "can_go_in": None if can_go is None else round(max(0.0, can_go - now), 3),
        }


def overlap_for(access_ttl: float, refresh_ttl: float, leeway: float) -> float:
    """How long a ``previous`` key must keep verifying: the longest token's life + leeway."""
    return max(access_ttl, refresh_ttl) + leeway


@dataclass(frozen=True)
class KeyRing:
    """A snapshot of the key set of one algorithm. ``managed``: False for a configured key
    (SESSIONMON_SECRET, key files), which cannot be rotated; ``where``: its source, or the key
    directory."""

    algorithm: str
    entries: tuple[KeyEntry, ...]
    managed: bool
    where: str
    _by_kid: dict[str, KeyEntry] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_kid", {e.kid: e for e in self.entries})
        current = [e for e in self.entries if e.state is KeyState.CURRENT]
        if len(current) != 1 or current[0].material is None:
            raise ConfigError(
                f"key set {self.where}: expected one current {self.algorithm} key, "
                f"found {len(current)}"
            )
        object.__setattr__(self, "_current", current[0])

    @classmethod
    def single(cls, material: KeyMaterial) -> KeyRing:
        """The key set of one configured key: it is ``current``, with its derived kid."""
        material = material.with_kid()
        entry = KeyEntry(material.kid, material.algorithm, KeyState.CURRENT, None, None, material)
        return cls(material.algorithm, (entry,), managed=False, where=material.source)

    @property
    def current(self) -> KeyEntry:
        """The key that signs."""
        current: KeyEntry = self._current  # type: ignore[attr-defined]
        return current

    def get(self, kid: str) -> KeyEntry | None:
        return self._by_kid.get(kid)

    def verifying(self, kid: str) -> KeyMaterial | None:
        """The key that verifies tokens with this kid: None when unknown or retired."""
        entry = self._by_kid.get(kid)
        if entry is None or entry.state not in VERIFYING:
            return None
        return entry.material

    def __iter__(self) -> Iterator[KeyEntry]:
        return iter(self.entries)

    def jwks(self) -> dict[str, Any]:
        """The public keys of ``next``, ``current`` and ``previous`` (none for HMAC)."""
        keys = []
        for entry in self.entries:
            if entry.state in VERIFYING and entry.material is not None:
                jwk = public_jwk(entry.material)
                if jwk is not None:
                    keys.append(jwk)
        return {"keys": keys}
