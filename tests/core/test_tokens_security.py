"""Attacks on the token codec: alg none, key confusion, tampering, type swaps, size, key files."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest

from sessionmon.core.auth import Auth
from sessionmon.core.clock import FrozenClock
from sessionmon.core.errors import ConfigError
from sessionmon.core.keys import KeyMaterial
from sessionmon.core.tokens import ACCESS, REFRESH, Reason, TokenCodec, TokenRejected
from tests.core.forge import (
    b64url_json,
    hs_token,
    key_material,
    new_private_key,
    segments,
    unsigned_token,
    write_key_files,
)


def payload(**extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {
        "sub": "u1",
        "sid": "s1",
        "jti": "j1",
        "iat": now,
        "exp": now + 600,
        "typ": "access",
        "email": "ann@example.com",
        "name": "Ann",
        **extra,
    }


def reason(codec: TokenCodec, token: Any, typ: str = ACCESS) -> Reason:
    with pytest.raises(TokenRejected) as info:
        codec.verify(token, typ)
    return info.value.reason


@pytest.fixture(scope="module")
def rsa_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_key_files(new_private_key("RS256"), tmp_path_factory.mktemp("rsa"))


@pytest.fixture
def rs256(rsa_files: tuple[Path, Path], tmp_path: Path, clock: FrozenClock) -> TokenCodec:
    priv, pub = rsa_files
    return TokenCodec(key_material("RS256", priv, pub, tmp_path / "s.db"), clock=clock)


# -- alg: none -------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE", ""])
def test_alg_none_is_rejected(codec: TokenCodec, rs256: TokenCodec, alg: str) -> None:
    token = unsigned_token(payload(), alg)
    assert token.endswith(".")
    assert reason(codec, token) is Reason.BAD_SIGNATURE
    assert reason(rs256, token) is Reason.BAD_SIGNATURE


def test_alg_none_with_a_signature_copied_from_a_real_token(codec: TokenCodec) -> None:
    real, _ = codec.mint(ACCESS, sub="u1", sid="s1", ttl=600)
    forged = unsigned_token(payload(sub="admin")) + real.split(".")[2]
    assert reason(codec, forged) is Reason.BAD_SIGNATURE


def test_alg_none_never_authenticates(auth: Auth) -> None:
    session, _, _ = auth.login("u1", "ann@example.com", "Ann")
    forged = unsigned_token(payload(sid=session.id))
    result = auth.authenticate(forged)
    assert not result.ok and result.reason is Reason.BAD_SIGNATURE and result.claims is None


# -- key confusion ---------------------------------------------------------------------------


def test_hs256_signed_with_the_rs256_public_key_is_rejected(
    rs256: TokenCodec, rsa_files: tuple[Path, Path]
) -> None:
    pem = rsa_files[1].read_bytes()
    assert b"BEGIN PUBLIC KEY" in pem
    # The classic attack: the verifier's public key used as the HMAC secret.
    for secret in (pem, pem.strip(), pem.replace(b"\n", b"\r\n")):
        forged = hs_token({"alg": "HS256", "typ": "JWT"}, payload(), secret)
        assert reason(rs256, forged) is Reason.BAD_SIGNATURE
    # Same HMAC but claiming RS256 in the header: the signature does not verify.
    lying = hs_token({"alg": "RS256", "typ": "JWT"}, payload(), pem)
    assert reason(rs256, lying) is Reason.BAD_SIGNATURE


def test_rs256_token_is_rejected_by_an_hs256_codec(codec: TokenCodec, rs256: TokenCodec) -> None:
    token, _ = rs256.mint(ACCESS, sub="u1", sid="s1", ttl=600)
    assert reason(codec, token) is Reason.BAD_SIGNATURE


def test_token_from_another_rsa_key_is_rejected(rs256: TokenCodec) -> None:
    other = new_private_key("RS256")
    token = jwt.encode(payload(), other, algorithm="RS256")
    assert reason(rs256, token) is Reason.BAD_SIGNATURE


# -- tampering -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        {"email": "admin@example.com"},
        {"sub": "admin"},
        {"exp": 4_000_000_000},
        {"typ": "access", "sid": "someone-else"},
    ],
)
def test_tampered_payload_keeps_signature(codec: TokenCodec, change: dict[str, Any]) -> None:
    token, _ = codec.mint(ACCESS, sub="u1", sid="s1", ttl=600, email="ann@example.com")
    header, _, sig = token.split(".")
    claims = segments(token)[1] | change
    tampered = f"{header}.{b64url_json(claims)}.{sig}"
    assert tampered != token
    assert reason(codec, tampered) is Reason.BAD_SIGNATURE


def test_tampered_header_keeps_signature(codec: TokenCodec) -> None:
    token, _ = codec.mint(ACCESS, sub="u1", sid="s1", ttl=600)
    _, body, sig = token.split(".")
    tampered = f"{b64url_json({'alg': 'HS256', 'typ': 'JWT', 'kid': 'x'})}.{body}.{sig}"
    assert reason(codec, tampered) is Reason.UNKNOWN_KEY  # no key "x"
    kid = codec.keys.kid
    tampered = f"{b64url_json({'alg': 'HS256', 'kid': kid, 'x': 1})}.{body}.{sig}"
    assert reason(codec, tampered) is Reason.BAD_SIGNATURE


def test_truncated_signature(codec: TokenCodec) -> None:
    token, _ = codec.mint(ACCESS, sub="u1", sid="s1", ttl=600)
    assert reason(codec, token[:-4]) in (Reason.BAD_SIGNATURE, Reason.MALFORMED)
    assert reason(codec, token.rsplit(".", 1)[0] + ".") is Reason.BAD_SIGNATURE


# -- type confusion --------------------------------------------------------------------------


def test_refresh_token_used_as_access_token(codec: TokenCodec, auth: Auth) -> None:
    _, access, refresh = auth.login("u1", "ann@example.com", "Ann")
    assert reason(codec, refresh, ACCESS) is Reason.WRONG_TYPE
    assert reason(codec, access, REFRESH) is Reason.WRONG_TYPE
    as_access = auth.authenticate(refresh)
    assert not as_access.ok and as_access.reason is Reason.WRONG_TYPE
    as_refresh = auth.refresh(access)
    assert not as_refresh.ok and as_refresh.reason is Reason.WRONG_TYPE
    # An access token in the refresh slot never mints anything.
    both_access = auth.authenticate("garbage", access)
    assert not both_access.ok and both_access.new_access_token is None


# -- missing claims --------------------------------------------------------------------------


@pytest.mark.parametrize("claim", ["exp", "sid"])
def test_missing_claims_even_with_a_good_signature(codec: TokenCodec, claim: str) -> None:
    body = payload()
    del body[claim]
    token = jwt.encode(body, codec.keys.signing_key, algorithm="HS256")
    with pytest.raises(TokenRejected) as info:
        codec.verify(token)
    assert info.value.reason is Reason.MISSING_CLAIM and claim in info.value.detail


# -- size ------------------------------------------------------------------------------------


def test_9_kib_token_is_too_large_before_decoding(codec: TokenCodec) -> None:
    nine_kib = 9 * 1024
    signed = jwt.encode(payload(name="x" * nine_kib), codec.keys.signing_key, algorithm="HS256")
    assert reason(codec, signed) is Reason.TOO_LARGE
    # Garbage of that size is not even parsed: too_large, not malformed.
    assert reason(codec, "x" * nine_kib) is Reason.TOO_LARGE
    assert reason(codec, "a." * (nine_kib // 2) + "b") is Reason.TOO_LARGE
    assert reason(codec, b"\x00" * nine_kib) in (Reason.TOO_LARGE, Reason.MALFORMED)
    assert reason(codec, ("x" * nine_kib).encode()) is Reason.TOO_LARGE


# -- public-key algorithms through key files -------------------------------------------------


@pytest.mark.parametrize("algorithm", ["RS256", "ES256", "EdDSA"])
def test_public_key_round_trip(algorithm: str, tmp_path: Path, clock: FrozenClock) -> None:
    priv, pub = write_key_files(new_private_key(algorithm), tmp_path / "keys")
    keys = key_material(algorithm, priv, pub, tmp_path / "s.db")
    assert keys.algorithm == algorithm
    assert "PRIVATE" not in repr(keys)  # repr never shows key material
    codec = TokenCodec(keys, clock=clock)
    token, minted = codec.mint(ACCESS, sub="u1", sid="s1", ttl=60, email="a@b.c")
    assert segments(token)[0]["alg"] == algorithm
    assert codec.verify(token) == minted

    verifier = TokenCodec(key_material(algorithm, None, pub, tmp_path / "s.db"), clock=clock)
    assert verifier.keys.signing_key is None
    assert verifier.verify(token).jti == minted.jti
    with pytest.raises(ConfigError, match="SESSIONMON_PRIVATE_KEY_FILE"):
        verifier.mint(ACCESS, sub="u1", sid="s1", ttl=60)

    # A token of the same algorithm from a different key pair does not verify.
    stranger = TokenCodec(
        key_material(
            algorithm,
            *write_key_files(new_private_key(algorithm), tmp_path / "other"),
            tmp_path / "s.db",
        ),
        clock=clock,
    )
    foreign, _ = stranger.mint(ACCESS, sub="u1", sid="s1", ttl=60)
    assert reason(verifier, foreign) is Reason.UNKNOWN_KEY  # its kid is not ours
    # Without a kid it is checked against our current key, and fails there.
    unnamed = jwt.encode(segments(foreign)[1], stranger.keys.signing_key, algorithm=algorithm)
    assert reason(verifier, unnamed) is Reason.BAD_SIGNATURE
    # And an HS256 token made with the public key file as its secret is refused.
    forged = hs_token({"alg": "HS256"}, json.loads(json.dumps(minted.raw)), pub.read_bytes())
    assert reason(verifier, forged) is Reason.BAD_SIGNATURE


def test_private_key_file_alone_can_sign_and_verify(tmp_path: Path, clock: FrozenClock) -> None:
    priv, _ = write_key_files(new_private_key("ES256"), tmp_path / "keys")
    codec = TokenCodec(key_material("ES256", priv, None, tmp_path / "s.db"), clock=clock)
    token, minted = codec.mint(REFRESH, sub="u1", sid="s1", ttl=60)
    assert codec.verify(token, REFRESH) == minted


def test_hs256_codec_keys_are_not_in_repr(keys: KeyMaterial) -> None:
    assert keys.signing_key.decode() not in repr(keys)
