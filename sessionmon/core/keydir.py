"""A managed key set in a directory: the state of every key, one file per key, the public JWKS.

Layout (the directory is mode 0700; every file but ``jwks.json`` mode 0600)::

    state.json            {"version": 1, "keys": [{kid, algorithm, state, created_at, since}]}
    <alg>-<kid>.key       the HMAC secret, or the private key as PEM (PKCS#8); deleted on retire
    jwks.json             the public keys of next, current and previous (mode 0644; HMAC: none)
    .lock                 flock'ed by every change (rotate, retire, first generation)

``state.json`` is replaced atomically (write, fsync, rename), so a reader sees the old or the new
set, never half of one; ``signature()`` (inode, mtime, size) tells a reader cheaply that it changed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sessionmon.core.clock import SYSTEM_CLOCK, Clock
from sessionmon.core.errors import ConfigError, KeySetError
from sessionmon.core.keyring import PROPAGATION, KeyEntry, KeyRing, KeyState
from sessionmon.core.keys import KeyMaterial, generate_key, key_bytes, key_from_bytes

STATE_FILE = "state.json"
JWKS_FILE = "jwks.json"
LOCK_FILE = ".lock"
FORMAT_VERSION = 1
_STATE_ORDER = {KeyState.NEXT: 0, KeyState.CURRENT: 1, KeyState.PREVIOUS: 2, KeyState.RETIRED: 3}

Signature = tuple[int, int, int]


def key_dir_for(anchor: Path) -> Path:
    """The key directory of the embedded default: beside the database (or PostgreSQL's anchor)."""
    return anchor.with_name(anchor.name + ".keys")


@dataclass
class Record:
    """One key's line in ``state.json``."""

    kid: str
    algorithm: str
    state: KeyState
    created_at: float
    since: float

    @classmethod
    def parse(cls, raw: Any, where: Path) -> Record:
        try:
            return cls(
                str(raw["kid"]),
                str(raw["algorithm"]),
                KeyState(raw["state"]),
                float(raw["created_at"]),
                float(raw["since"]),
            )
        except (KeyError, TypeError, ValueError):
            raise ConfigError(f"key set {where} is damaged: bad key entry {raw!r:.80}") from None

    def to_json(self) -> dict[str, Any]:
        return {
            "kid": self.kid,
            "algorithm": self.algorithm,
            "state": self.state.value,
            "created_at": self.created_at,
            "since": self.since,
        }


@dataclass(frozen=True)
class KeyChange:
    """What a rotation or retirement did (for the audit row and the command's output)."""

    action: str
    algorithm: str
    kid: str  # the key the operator named (retire) or the new current key (rotate)
    changes: list[tuple[str, str, str]] = field(default_factory=list)  # (kid, from, to)

    def summary(self) -> str:
        return ", ".join(f"{kid} {old}->{new}" for kid, old, new in self.changes)


class KeyDirectory:
    """The key sets kept in ``path`` (one per algorithm). ``make_parents``: create missing parent
    directories (beside the database: yes; a directory the operator named: no, a typo must not
    create a fresh key set somewhere)."""

    def __init__(
        self,
        path: Path,
        algorithm: str,
        clock: Clock = SYSTEM_CLOCK,
        *,
        make_parents: bool = False,
    ) -> None:
        self.path = path
        self.algorithm = algorithm
        self.clock = clock
        self.make_parents = make_parents

    @property
    def state_path(self) -> Path:
        return self.path / STATE_FILE

    def _key_path(self, algorithm: str, kid: str) -> Path:
        return self.path / f"{algorithm}-{kid}.key"

    # -- reading -----------------------------------------------------------------------------

    def signature(self) -> Signature | None:
        """A cheap fingerprint of ``state.json``: changes whenever the set is written."""
        try:
            st = os.stat(self.state_path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def read_state(self) -> tuple[Signature | None, list[Record]]:
        """Every record, with the signature of the file they were read from."""
        try:
            fd = os.open(self.state_path, os.O_RDONLY)
        except FileNotFoundError:
            return None, []
        except OSError as exc:
            raise ConfigError(f"cannot read key set {self.state_path}: {exc.strerror}") from None
        with os.fdopen(fd, "rb") as fh:
            st = os.fstat(fh.fileno())
            data = fh.read()
        try:
            doc = json.loads(data)
            raw_keys = doc["keys"]
            if not isinstance(raw_keys, list):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            raise ConfigError(f"key set {self.state_path} is damaged (not a key list)") from None
        records = [Record.parse(r, self.state_path) for r in raw_keys]
        return (st.st_ino, st.st_mtime_ns, st.st_size), records

    def has_current(self) -> bool:
        _, records = self.read_state()
        return any(r.algorithm == self.algorithm and r.state is KeyState.CURRENT for r in records)

    def load(self, cache: dict[str, KeyMaterial] | None = None) -> tuple[Signature | None, KeyRing]:
        """The key set of this algorithm; ``cache`` (kid -> material) spares re-reading files."""
        sig, records = self.read_state()
        return sig, self._ring(records, {} if cache is None else cache)

    def _ring(self, records: list[Record], cache: dict[str, KeyMaterial]) -> KeyRing:
        entries = []
        for r in records:
            if r.algorithm != self.algorithm:
                continue
            material = None
            if r.state is not KeyState.RETIRED:
                material = cache.get(r.kid)
                if material is None:
                    path = self._key_path(r.algorithm, r.kid)
                    try:
                        data = path.read_bytes()
                    except OSError as exc:
                        raise ConfigError(
                            f"cannot read key {r.kid} ({path}): {exc.strerror}"
                        ) from None
                    material = key_from_bytes(r.algorithm, data, path, r.kid)
                    cache[r.kid] = material
            entries.append(KeyEntry(r.kid, r.algorithm, r.state, r.created_at, r.since, material))
        entries.sort(key=lambda e: (_STATE_ORDER[e.state], -(e.since or 0.0)))
        return KeyRing(self.algorithm, tuple(entries), managed=True, where=str(self.path))

    # -- writing -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[list[Record]]:
        """Hold the directory's lock; yields the records to change (written back on success)."""
        try:
            if self.make_parents:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.mkdir(mode=0o700, exist_ok=True)
        except FileNotFoundError:
            raise ConfigError(
                f"cannot create key directory {self.path}: {self.path.parent} does not exist"
            ) from None
        except OSError as exc:
            raise ConfigError(f"cannot create key directory {self.path}: {exc.strerror}") from None
        fd = os.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            _, records = self.read_state()
            before = [r.to_json() for r in records]
            yield records
            if [r.to_json() for r in records] != before:
                self._write_state(records)
            for r in records:  # a retired key's file goes once the state says so
                if r.state is KeyState.RETIRED:
                    with contextlib.suppress(FileNotFoundError):
                        self._key_path(r.algorithm, r.kid).unlink()
        finally:
            os.close(fd)  # releases the lock

    def _write_file(self, path: Path, data: bytes, mode: int) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fd, mode)  # whatever the umask
            fh.write(data)
            fh.flush()
            os.fsync(fd)
        os.replace(tmp, path)

    def _write_state(self, records: list[Record]) -> None:
        doc = {"version": FORMAT_VERSION, "keys": [r.to_json() for r in records]}
        # The public set first: a verifier reading jwks.json never misses a key that signs. It
        # holds the public keys of every algorithm kept here.
        jwks: dict[str, list[Any]] = {"keys": []}
        for alg in sorted({r.algorithm for r in records}):
            if any(r.algorithm == alg and r.state is KeyState.CURRENT for r in records):
                other = KeyDirectory(self.path, alg, self.clock)
                jwks["keys"] += other._ring(records, {}).jwks()["keys"]
        self._write_file(self.path / JWKS_FILE, json.dumps(jwks, indent=2).encode(), 0o644)
        self._write_file(self.state_path, json.dumps(doc, indent=2).encode(), 0o600)
        dir_fd = os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def _add_key(self, records: list[Record], material: KeyMaterial, state: KeyState) -> None:
        now = self.clock.now()
        path = self._key_path(material.algorithm, material.kid)
        self._write_file(path, key_bytes(material), 0o600)
        records.append(Record(material.kid, material.algorithm, state, now, now))

    def _mine(self, records: list[Record], state: KeyState) -> list[Record]:
        return [r for r in records if r.algorithm == self.algorithm and r.state is state]

    def ensure(self, adopt: KeyMaterial | None = None) -> bool:
        """Generate this algorithm's key set (a current and a next key) when it has none;
        ``adopt``: use this key as the current one. True when keys were generated."""
        with self._locked() as records:
            if self._mine(records, KeyState.CURRENT):
                return False
            current = adopt.with_kid() if adopt is not None else generate_key(self.algorithm)
            self._add_key(records, current, KeyState.CURRENT)
            self._add_key(records, generate_key(self.algorithm), KeyState.NEXT)
            return True

    def rotate(self, overlap: float) -> KeyChange:
        """``next`` becomes ``current``, ``current`` becomes ``previous``, a new ``next`` is
        generated; ``previous`` keys whose overlap is over are retired."""
        now = self.clock.now()
        with self._locked() as records:
            currents = self._mine(records, KeyState.CURRENT)
            if len(currents) != 1:
                raise KeySetError(f"no current {self.algorithm} key in {self.path}")
            current = currents[0]
            changes: list[tuple[str, str, str]] = []
            for r in self._mine(records, KeyState.PREVIOUS):
                if r.since + overlap + PROPAGATION <= now:
                    self._retire(r, now)
                    changes.append((r.kid, "previous", "retired"))
            nxt = self._mine(records, KeyState.NEXT)
            if not nxt:  # the next key was retired: the new current one is made now
                self._add_key(records, generate_key(self.algorithm), KeyState.NEXT)
                nxt = self._mine(records, KeyState.NEXT)
            promoted = max(nxt, key=lambda r: r.since)
            current.state, current.since = KeyState.PREVIOUS, now
            changes.append((current.kid, "current", "previous"))
            promoted.state, promoted.since = KeyState.CURRENT, now
            changes.append((promoted.kid, "next", "current"))
            new_next = generate_key(self.algorithm)
            self._add_key(records, new_next, KeyState.NEXT)
            changes.append((new_next.kid, "-", "next"))
            return KeyChange("keys_rotate", self.algorithm, promoted.kid, changes)

    def retire(self, kid: str) -> KeyChange:
        """Retire key ``kid``: every token it signed is rejected from now on. Retiring the next
        key generates a new one; the current key cannot be retired (rotate first)."""
        now = self.clock.now()
        with self._locked() as records:
            matches = [r for r in records if r.algorithm == self.algorithm and r.kid == kid]
            if not matches:
                raise KeySetError(
                    f"no {self.algorithm} key with kid {kid!r} (see sessionmon keys ls)"
                )
            (record,) = matches
            if record.state is KeyState.CURRENT:
                raise KeySetError(
                    f"{kid} is the current key: run `sessionmon keys rotate` first, then retire it"
                )
            if record.state is KeyState.RETIRED:
                raise KeySetError(f"{kid} is already retired")
            changes = [(kid, record.state.value, "retired")]
            was_next = record.state is KeyState.NEXT
            self._retire(record, now)
            if was_next:
                new_next = generate_key(self.algorithm)
                self._add_key(records, new_next, KeyState.NEXT)
                changes.append((new_next.kid, "-", "next"))
            return KeyChange("keys_retire", self.algorithm, kid, changes)

    @staticmethod
    def _retire(record: Record, now: float) -> None:
        record.state, record.since = KeyState.RETIRED, now
