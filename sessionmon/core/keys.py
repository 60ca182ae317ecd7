"""Key material: one key for the configured algorithm, from env or files (never argv), generated,
or read back from a key directory; its ``kid`` and public JWK; the weak-secret check.

Which keys a process signs and verifies with (a key set with states) is ``core.keysource``; where
a managed key set lives on disk is ``core.keydir``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sessionmon.core.errors import ConfigError

if TYPE_CHECKING:
    from sessionmon.core.settings import Settings

ENV_PREFIX = "SESSIONMON_"
HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
PUBLIC_KEY_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA")
ALGORITHMS = HMAC_ALGORITHMS + PUBLIC_KEY_ALGORITHMS
# An HMAC secret shorter than the hash is refused (RFC 7518 3.2) unless allowed explicitly.
HMAC_MIN_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}
KID_CHARS = 16  # a kid: the first 16 hex digits of the key's RFC 7638 thumbprint


@dataclass(frozen=True)
class KeyMaterial:
    """The keys for one algorithm. ``repr`` never shows them."""

    algorithm: str
    signing_key: Any = field(repr=False)
    verifying_key: Any = field(repr=False)
    source: str = ""
    kid: str = ""

    @property
    def is_hmac(self) -> bool:
        return self.algorithm in HMAC_ALGORITHMS

    def with_kid(self) -> KeyMaterial:
        """This material with its kid set (derived from the key when it has none)."""
        return self if self.kid else replace(self, kid=derive_kid(self))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _jwk_of(material: KeyMaterial) -> dict[str, Any]:
    """The JWK members of the verifying key (for HMAC: the secret itself, never published)."""
    import jwt

    algorithm = jwt.get_algorithm_by_name(material.algorithm)
    key = material.verifying_key if material.verifying_key is not None else material.signing_key
    if material.is_hmac:
        key = key if isinstance(key, bytes) else str(key).encode()
        return {"kty": "oct", "k": _b64(key)}
    key = algorithm.prepare_key(key)  # PEM text or bytes -> a key object, as PyJWT reads it
    if hasattr(key, "public_key"):  # a private key: only its public part
        key = key.public_key()
    jwk = algorithm.to_jwk(key, as_dict=True)
    return dict(jwk)


_THUMBPRINT_MEMBERS = {
    "RSA": ("e", "kty", "n"),
    "EC": ("crv", "kty", "x", "y"),
    "OKP": ("crv", "kty", "x"),
    "oct": ("k", "kty"),
}


def derive_kid(material: KeyMaterial) -> str:
    """The first ``KID_CHARS`` hex digits of the key's RFC 7638 JWK thumbprint (SHA-256). Hex,
    not base64url: a kid never starts with "-", so ``keys retire KID`` never reads as an option."""
    jwk = _jwk_of(material)
    members = {m: jwk[m] for m in _THUMBPRINT_MEMBERS[jwk["kty"]]}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    return hashlib.sha256(canonical).hexdigest()[:KID_CHARS]


def public_jwk(material: KeyMaterial) -> dict[str, Any] | None:
    """The public JWK (with ``kid``, ``alg``, ``use``), or None for an HMAC key (no public part)."""
    if material.is_hmac or material.verifying_key is None:
        return None
    jwk = _jwk_of(material)
    return {**jwk, "kid": material.with_kid().kid, "alg": material.algorithm, "use": "sig"}


def check_secret_strength(secret: bytes, algorithm: str, what: str, *, allow_weak: bool) -> None:
    """Refuse an HMAC secret shorter than the algorithm's hash, unless ``allow_weak``."""
    need = HMAC_MIN_BYTES.get(algorithm)
    if need is None or allow_weak or len(secret) >= need:
        return
    raise ConfigError(
        f"{what} is {len(secret)} bytes; {algorithm} needs a secret of at least {need} random "
        f"bytes (or set --allow-weak-secret / SESSIONMON_ALLOW_WEAK_SECRET=1 to accept it)"
    )


def _read_key_file(path: Path, what: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from None
    if not data.strip():
        raise ConfigError(f"{what} {path} is empty")
    return data


def secret_path_for(db: Path) -> Path:
    """Where versions before key sets generated the HMAC secret (beside the DB, mode 0600);
    a key directory created next to such a file adopts it as its current key."""
    return db.with_name(db.name + ".secret")


def configured_key(settings: Settings, env: Mapping[str, str] | None = None) -> KeyMaterial | None:
    """The one key configured for the algorithm (``SESSIONMON_SECRET``, a secret file, key
    files), or None when none is configured."""
    env = os.environ if env is None else env
    alg = settings.algorithm
    if alg in HMAC_ALGORITHMS:
        secret_env = env.get(ENV_PREFIX + "SECRET")
        file_env = env.get(ENV_PREFIX + "SECRET_FILE")
        secret_file = Path(file_env).expanduser() if file_env else settings.secret_file
        if secret_env:
            secret, source, what = secret_env.encode(), "SESSIONMON_SECRET", "SESSIONMON_SECRET"
        elif secret_file:
            secret = _read_key_file(secret_file, "secret file").strip()
            source, what = str(secret_file), f"secret file {secret_file}"
        else:
            return None
        check_secret_strength(secret, alg, what, allow_weak=settings.allow_weak_secret)
        return KeyMaterial(alg, secret, secret, source).with_kid()

    priv_env = env.get(ENV_PREFIX + "PRIVATE_KEY_FILE")
    pub_env = env.get(ENV_PREFIX + "PUBLIC_KEY_FILE")
    priv_path = Path(priv_env).expanduser() if priv_env else settings.private_key_file
    pub_path = Path(pub_env).expanduser() if pub_env else settings.public_key_file
    if not priv_path and not pub_path:
        return None
    private = public = None
    if priv_path:
        private = load_private_pem(_read_key_file(priv_path, "private key file"), priv_path)
        public = private.public_key()
    if pub_path:
        from cryptography.hazmat.primitives import serialization

        try:
            public = serialization.load_pem_public_key(_read_key_file(pub_path, "public key file"))
        except (ValueError, TypeError) as exc:
            raise ConfigError(
                f"public key file {pub_path} is not a PEM public key: {exc}"
            ) from None
    for key, key_path in ((private, priv_path), (public, pub_path)):
        if key is not None:
            check_key_type(key, alg, f"key file {key_path}")
    return KeyMaterial(alg, private, public, str(priv_path or pub_path)).with_kid()


def load_private_pem(data: bytes, path: Path) -> Any:
    """A PEM private key (unencrypted), or a ``ConfigError`` naming ``path``."""
    from cryptography.hazmat.primitives import serialization

    try:
        return serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"private key file {path} is not a PEM private key: {exc}") from None


def check_key_type(key: Any, algorithm: str, what: str) -> None:
    """A key of another type (an EC key for RS256, ...) is a configuration error now, not a
    TypeError on the first mint or "bad_signature" for every token."""
    import jwt

    try:
        jwt.get_algorithm_by_name(algorithm).prepare_key(key)
    except (jwt.InvalidKeyError, TypeError, ValueError):
        raise ConfigError(
            f"{what} holds a {type(key).__name__}, not a key for {algorithm}"
        ) from None


def generate_key(algorithm: str, source: str = "generated") -> KeyMaterial:
    """A new random key for ``algorithm`` (HMAC: 64 random bytes, base64url text; RSA 2048;
    EC on the algorithm's curve; Ed25519), with its kid."""
    if algorithm in HMAC_ALGORITHMS:
        secret = secrets.token_urlsafe(64).encode()
        return KeyMaterial(algorithm, secret, secret, source).with_kid()
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    private: Any
    if algorithm.startswith(("RS", "PS")):
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif algorithm == "ES256":
        private = ec.generate_private_key(ec.SECP256R1())
    elif algorithm == "ES384":
        private = ec.generate_private_key(ec.SECP384R1())
    elif algorithm == "EdDSA":
        private = ed25519.Ed25519PrivateKey.generate()
    else:
        raise ConfigError(f"cannot generate a key for {algorithm}")
    return KeyMaterial(algorithm, private, private.public_key(), source).with_kid()


def key_bytes(material: KeyMaterial) -> bytes:
    """What a key directory stores for ``material``: the secret, or the private key as PEM."""
    if material.is_hmac:
        key = material.signing_key
        return key if isinstance(key, bytes) else str(key).encode()
    from cryptography.hazmat.primitives import serialization

    data: bytes = material.signing_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return data


def key_from_bytes(algorithm: str, data: bytes, path: Path, kid: str) -> KeyMaterial:
    """A stored key read back (the inverse of ``key_bytes``); its kid must match."""
    if algorithm in HMAC_ALGORITHMS:
        secret = data.strip()
        material = KeyMaterial(algorithm, secret, secret, str(path))
    else:
        private = load_private_pem(data, path)
        check_key_type(private, algorithm, f"key file {path}")
        material = KeyMaterial(algorithm, private, private.public_key(), str(path))
    material = material.with_kid()
    if material.kid != kid:
        raise ConfigError(f"key file {path} holds key {material.kid}, not {kid}")
    return material


def load_keys(
    settings: Settings, env: Mapping[str, str] | None = None, *, may_generate: bool = True
) -> KeyMaterial:
    """The current signing key of the configured algorithm (see ``keysource.open_keys``)."""
    from sessionmon.core.keysource import open_keys

    material = open_keys(settings, env, may_generate=may_generate).ring().current.material
    assert material is not None  # a KeyRing's current key always has its material
    return material
