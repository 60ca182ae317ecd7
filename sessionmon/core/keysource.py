"""Which key set a process signs and verifies with, kept current across processes.

- A configured key (``SESSIONMON_SECRET``, a secret file, key files) is a set of one ``current``
  key with a derived kid (``StaticKeys``): existing deployments behave as before.
- Otherwise the set lives in a key directory (``SESSIONMON_KEY_DIR``, or ``<db>.keys`` beside the
  database of the embedded default, PostgreSQL's data-dir anchor included), generated on first
  use. ``LiveKeys`` re-reads it when ``state.json`` changed: at most one ``stat`` per ``POLL``
  on the request path, so a rotation or retirement done by any process is seen within 1 s.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from typing import Protocol

from sessionmon.core.clock import SYSTEM_CLOCK, Clock
from sessionmon.core.errors import ConfigError, DatabaseMissing
from sessionmon.core.keydir import KeyDirectory, Signature, key_dir_for
from sessionmon.core.keyring import KeyRing
from sessionmon.core.keys import (
    HMAC_ALGORITHMS,
    KeyMaterial,
    check_secret_strength,
    configured_key,
    secret_path_for,
)
from sessionmon.core.settings import Settings

POLL = 0.5  # seconds between two looks at state.json (a change is seen within 1 s)


class KeySource(Protocol):
    """Gives the key set to sign and verify with."""

    def ring(self) -> KeyRing:
        """The key set as of at most ``POLL`` ago (cheap: called per token)."""
        ...

    def refresh(self) -> KeyRing:
        """The key set as of now (a token with an unknown kid asks this before failing)."""
        ...

    def due(self) -> bool:
        """True when the next ``ring()`` may read files (False: it answers from memory)."""
        ...


class StaticKeys:
    """A key set that never changes (a configured key, or tests)."""

    def __init__(self, ring: KeyRing) -> None:
        self._ring = ring

    def ring(self) -> KeyRing:
        return self._ring

    def refresh(self) -> KeyRing:
        return self._ring

    def due(self) -> bool:
        return False


class LiveKeys:
    """The key set of a directory, re-read when it changes (checked at most every ``poll`` s)."""

    def __init__(self, directory: KeyDirectory, poll: float = POLL) -> None:
        self.directory = directory
        self.poll = poll
        self._lock = threading.Lock()
        self._cache: dict[str, KeyMaterial] = {}
        self._sig: Signature | None
        self._sig, self._ring = directory.load(self._cache)
        self._checked = time.monotonic()

    def ring(self) -> KeyRing:
        if time.monotonic() - self._checked < self.poll:
            return self._ring
        return self.refresh()

    def due(self) -> bool:
        """True when the next ``ring()`` looks at the directory (a ``stat``, maybe a re-read)."""
        return time.monotonic() - self._checked >= self.poll

    def refresh(self) -> KeyRing:
        with self._lock:
            self._checked = time.monotonic()
            if self.directory.signature() != self._sig:
                # A damaged or vanished set raises ConfigError: fail closed (every call raises
                # until it is readable again), never keep trusting keys that may be retired.
                try:
                    self._sig, self._ring = self.directory.load(self._cache)
                except Exception:
                    self._checked = float("-inf")
                    raise
            return self._ring


def key_directory(settings: Settings, clock: Clock = SYSTEM_CLOCK) -> KeyDirectory | None:
    """The key directory ``settings`` use: ``key_dir``, or the default beside the database when
    it is the embedded default or already exists; None when none applies."""
    if settings.key_dir is not None:
        return KeyDirectory(settings.key_dir, settings.algorithm, clock)
    anchor = settings.db.anchor
    default = key_dir_for(anchor)
    if settings.embedded or default.is_dir() or secret_path_for(anchor).is_file():
        return KeyDirectory(default, settings.algorithm, clock, make_parents=True)
    return None


def _legacy_secret(settings: Settings) -> KeyMaterial | None:
    """The HMAC secret earlier versions generated beside the database, adopted as the first
    current key so that tokens already issued (they carry no kid) stay valid."""
    path = secret_path_for(settings.db.anchor)
    if settings.key_dir is not None or settings.algorithm not in HMAC_ALGORITHMS:
        return None
    try:
        secret = path.read_bytes().strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read secret file {path}: {exc.strerror}") from None
    check_secret_strength(
        secret, settings.algorithm, f"secret file {path}", allow_weak=settings.allow_weak_secret
    )
    return KeyMaterial(settings.algorithm, secret, secret, str(path))


def open_keys(
    settings: Settings,
    env: Mapping[str, str] | None = None,
    *,
    may_generate: bool = True,
    clock: Clock = SYSTEM_CLOCK,
) -> KeySource:
    """The key source of ``settings``.

    ``may_generate=False``: when the key set would be generated beside a database that does not
    exist, raise ``DatabaseMissing`` instead of creating anything beside a mistyped path.
    """
    env = os.environ if env is None else env
    configured = configured_key(settings, env)
    if configured is not None:
        if settings.key_dir is not None:
            raise ConfigError(
                f"both {configured.source} and a key directory ({settings.key_dir}) are "
                f"configured: use one of the two"
            )
        return StaticKeys(KeyRing.single(configured))
    directory = key_directory(settings, clock)
    if directory is None:
        alg = settings.algorithm
        if alg in HMAC_ALGORITHMS:
            raise ConfigError(
                f"no signing secret for {alg}: set SESSIONMON_SECRET or SESSIONMON_SECRET_FILE "
                f"(or SESSIONMON_KEY_DIR for a rotating key set)"
            )
        raise ConfigError(
            f"no key for {alg}: set SESSIONMON_PRIVATE_KEY_FILE (to sign) and/or "
            f"SESSIONMON_PUBLIC_KEY_FILE (to verify), or SESSIONMON_KEY_DIR for a rotating key set"
        )
    if not directory.has_current():
        if not may_generate and settings.key_dir is None:
            raise DatabaseMissing(
                f"database not found: {settings.db} (no key is configured, and the generated "
                f"key set lives beside the database)"
            )
        legacy = _legacy_secret(settings)
        if directory.ensure(adopt=legacy) and legacy is not None:
            # The secret now lives in the key directory only: retiring it there retires it.
            secret_path_for(settings.db.anchor).unlink(missing_ok=True)
    return LiveKeys(directory)
