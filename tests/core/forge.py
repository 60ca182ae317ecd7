"""Hand-built JWTs for attacks PyJWT refuses to produce, and key files for the public-key codecs."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from sessionmon.core.keys import KeyMaterial, load_keys
from sessionmon.core.settings import Settings


def b64url(data: bytes) -> str:
    """Base64url without padding, as JWS uses it."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_json(obj: Any) -> str:
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def segments(token: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    """Header, payload (decoded, unverified) and the raw signature segment."""
    h, p, s = token.split(".")
    return json.loads(unb64url(h)), json.loads(unb64url(p)), s


def hs_token(header: dict[str, Any], payload: dict[str, Any], secret: bytes) -> str:
    """A JWS signed with HMAC-SHA256 by hand (PyJWT refuses PEM-looking secrets)."""
    signing_input = f"{b64url_json(header)}.{b64url_json(payload)}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(mac)}"


def unsigned_token(payload: dict[str, Any], alg: str = "none") -> str:
    """``alg: none``: header + payload + an empty signature."""
    return f"{b64url_json({'alg': alg, 'typ': 'JWT'})}.{b64url_json(payload)}."


def new_private_key(algorithm: str) -> Any:
    if algorithm.startswith(("RS", "PS")):
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if algorithm == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if algorithm == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(algorithm)


def public_pem(private: Any) -> bytes:
    return private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def write_key_files(private: Any, directory: Path) -> tuple[Path, Path]:
    """PEM files for a private key and its public key; returns (private_path, public_path)."""
    directory.mkdir(parents=True, exist_ok=True)
    priv = directory / "private.pem"
    pub = directory / "public.pem"
    priv.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    priv.chmod(0o600)
    pub.write_bytes(public_pem(private))
    return priv, pub


def key_material(algorithm: str, priv: Path | None, pub: Path | None, db: Path) -> KeyMaterial:
    """Keys loaded the way the app loads them: ``load_keys`` with the env var mapping."""
    env = {}
    if priv:
        env["SESSIONMON_PRIVATE_KEY_FILE"] = str(priv)
    if pub:
        env["SESSIONMON_PUBLIC_KEY_FILE"] = str(pub)
    return load_keys(Settings(db=db, algorithm=algorithm, redis_url="redis://unused"), env=env)
