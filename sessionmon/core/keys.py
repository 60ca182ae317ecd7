"""Key material: the keys for the configured algorithm, from env or files (never argv), or a secret
generated once beside the embedded default's database (mode 0600)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sessionmon.core.errors import ConfigError, DatabaseMissing

if TYPE_CHECKING:
    from sessionmon.core.settings import Settings

ENV_PREFIX = "SESSIONMON_"
HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
PUBLIC_KEY_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA")
ALGORITHMS = HMAC_ALGORITHMS + PUBLIC_KEY_ALGORITHMS


@dataclass(frozen=True)
class KeyMaterial:
    """The keys for one algorithm. ``repr`` never shows them."""

    algorithm: str
    signing_key: Any = field(repr=False)
    verifying_key: Any = field(repr=False)
    source: str = ""


def _read_key_file(path: Path, what: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from None
    if not data.strip():
        raise ConfigError(f"{what} {path} is empty")
    return data


def secret_path_for(db: Path) -> Path:
    """Where the generated secret for the embedded default lives (beside the DB, mode 0600)."""
    return db.with_name(db.name + ".secret")


def _generated_secret(db: Path) -> bytes:
    path = secret_path_for(db)
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48).encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process won the race
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as fh:
        fh.write(secret)
    return secret


def load_keys(
    settings: Settings, env: Mapping[str, str] | None = None, *, may_generate: bool = True
) -> KeyMaterial:
    """Load the signing and verifying keys for the configured algorithm.

    ``may_generate=False``: when the secret would be generated beside a database that does not
    exist, raise ``DatabaseMissing`` instead of creating anything beside a mistyped path.
    """
    env = os.environ if env is None else env
    alg = settings.algorithm
    if alg in HMAC_ALGORITHMS:
        secret_env = env.get(ENV_PREFIX + "SECRET")
        file_env = env.get(ENV_PREFIX + "SECRET_FILE")
        secret_file = Path(file_env).expanduser() if file_env else settings.secret_file
        if secret_env:
            secret, source = secret_env.encode(), "SESSIONMON_SECRET"
        elif secret_file:
            secret, source = _read_key_file(secret_file, "secret file").strip(), str(secret_file)
        elif settings.embedded or secret_path_for(settings.db.anchor).is_file():
            # The secret generated beside the DB is used whenever no secret is configured; it
            # is only ever created for the embedded default.
            path = secret_path_for(settings.db.anchor)
            if not may_generate and not path.is_file():
                raise DatabaseMissing(
                    f"database not found: {settings.db} (no secret is configured, and the "
                    f"generated one lives beside the database)"
                )
            secret, source = _generated_secret(settings.db.anchor), str(path)
        else:
            raise ConfigError(
                f"no signing secret for {alg}: set SESSIONMON_SECRET or SESSIONMON_SECRET_FILE"
            )
        return KeyMaterial(alg, secret, secret, source)

    priv_env = env.get(ENV_PREFIX + "PRIVATE_KEY_FILE")
    pub_env = env.get(ENV_PREFIX + "PUBLIC_KEY_FILE")
    priv_path = Path(priv_env).expanduser() if priv_env else settings.private_key_file
    pub_path = Path(pub_env).expanduser() if pub_env else settings.public_key_file
    if not priv_path and not pub_path:
        raise ConfigError(
            f"no key for {alg}: set SESSIONMON_PRIVATE_KEY_FILE (to sign) "
            f"and/or SESSIONMON_PUBLIC_KEY_FILE (to verify)"
        )
    from cryptography.hazmat.primitives import serialization

    private = public = None
    if priv_path:
        try:
            private = serialization.load_pem_private_key(
                _read_key_file(priv_path, "private key file"), password=None
            )
        except (ValueError, TypeError) as exc:
            raise ConfigError(
                f"private key file {priv_path} is not a PEM private key: {exc}"
            ) from None
        public = private.public_key()
    if pub_path:
        try:
            public = serialization.load_pem_public_key(_read_key_file(pub_path, "public key file"))
        except (ValueError, TypeError) as exc:
            raise ConfigError(
                f"public key file {pub_path} is not a PEM public key: {exc}"
            ) from None
    # A key of another type (an EC key for RS256, ...) is a configuration error now, not a
    # TypeError on the first mint or "bad_signature" for every token.
    import jwt

    for key, key_path in ((private, priv_path), (public, pub_path)):
        if key is None:
            continue
        try:
            jwt.get_algorithm_by_name(alg).prepare_key(key)
        except (jwt.InvalidKeyError, TypeError, ValueError):
            raise ConfigError(
                f"key file {key_path} holds a {type(key).__name__}, not a key for {alg}"
            ) from None
    return KeyMaterial(alg, private, public, str(priv_path or pub_path))
