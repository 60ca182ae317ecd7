"""TokenCodec: claims, every rejection reason, leeway on both sides, iss/aud, Express interop."""

from __future__ import annotations

import hashlib
import time
from typing import Any

import jwt
import pytest

from sessionmon.core.auth import Auth
from sessionmon.core.clock import FrozenClock
from sessionmon.core.keys import KeyMaterial
from sessionmon.core.store import SqliteStore
from sessionmon.core.tokens import (
    ACCESS,
    MAX_TOKEN_BYTES,
    REFRESH,
    Reason,
    TokenCodec,
    TokenRejected,
    new_id,
    redact,
)
from tests.conftest import TEST_SECRET
from tests.core.forge import segments

T0 = float(int(time.time()))  # a whole second, so exp/iat arithmetic is exact


@pytest.fixture
def frozen(clock: FrozenClock) -> FrozenClock:
    clock.set(T0)
    return clock


def sign(payload: dict[str, Any], secret: str = TEST_SECRET, **headers: Any) -> str:
    return jwt.encode(payload, secret, algorithm="HS256", headers=headers or None)


def claims(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "sub": "u1",
        "sid": "s1",
        "jti": "j1",
        "iat": int(T0),
        "exp": int(T0) + 60,
        "typ": "access",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def rejected(codec: TokenCodec, token: Any, typ: str = ACCESS) -> TokenRejected:
    with pytest.raises(TokenRejected) as info:
        codec.verify(token, typ)
    return info.value


# -- minting --------------------------------------------------------------------------------


def test_access_token_carries_every_claim(codec: TokenCodec, frozen: FrozenClock) -> None:
    token, minted = codec.mint(
        ACCESS, sub="42", sid="sess-1", ttl=900, email="ann@example.com", name="Ann"
    )
    _, payload, _ = segments(token)
    assert set(payload) == {"sub", "sid", "jti", "iat", "exp", "typ", "email", "name"}
    assert payload["typ"] == "access" and payload["sid"] == "sess-1" and payload["sub"] == "42"
    assert payload["iat"] == int(T0) and payload["exp"] == int(T0) + 900
    verified = codec.verify(token, ACCESS)
    assert verified == minted
    assert (verified.email, verified.name, verified.exp, verified.iat) == (
        "ann@example.com",
        "Ann",
        T0 + 900,
        T0,
    )
    assert verified.public() == payload


def test_refresh_token_has_no_profile_claims(codec: TokenCodec, frozen: FrozenClock) -> None:
    token, minted = codec.mint(REFRESH, sub="42", sid="sess-1", ttl=3600, email="x@y.z")
    _, payload, _ = segments(token)
    assert set(payload) == {"sub", "sid", "jti", "iat", "exp", "typ"}
    assert codec.verify(token, REFRESH).jti == minted.jti == payload["jti"]


def test_every_token_gets_its_own_jti(codec: TokenCodec) -> None:
    jtis = {codec.mint(ACCESS, sub="1", sid="s", ttl=60)[1].jti for _ in range(50)}
    assert len(jtis) == 50
    assert all(len(j) >= 22 for j in jtis)  # 128 random bits, URL-safe


def test_ids_never_look_like_command_line_options() -> None:
    ids = [new_id() for _ in range(5000)]  # ~1 in 64 would start with "-" by chance
    assert not any(i.startswith("-") for i in ids)
    assert all(len(i) == 22 for i in ids) and len(set(ids)) == len(ids)


def test_redact_never_shows_the_whole_token(codec: TokenCodec) -> None:
    token, _ = codec.mint(ACCESS, sub="1", sid="s", ttl=60)
    label = redact(token)
    assert token not in label and token.split(".")[2] not in label
    assert str(len(token)) in label
    assert redact(None) == redact("") == "<none>"


# -- one test per rejection reason ----------------------------------------------------------


@pytest.mark.parametrize(
    "token",
    [
        "",
        None,
        12345,
        "not a token",
        "a.b",
        "a.b.c.d",
        "....",
        "abc.def.ghi",
        "eyJhbGciOiJIUzI1NiJ9.%%%.sig",
        "W10.e30.",  # [] header
        b"\xff\xfe.\x00.x",
    ],
)
def test_malformed(codec: TokenCodec, token: Any) -> None:
    assert rejected(codec, token).reason is Reason.MALFORMED


def test_malformed_when_payload_is_not_an_object(codec: TokenCodec) -> None:
    token = jwt.api_jws.encode(b"[1, 2]", TEST_SECRET, algorithm="HS256")
    assert rejected(codec, token).reason is Reason.MALFORMED


def test_bad_signature_other_secret(codec: TokenCodec, frozen: FrozenClock) -> None:
    token = sign(claims(), secret="someone-elses-secret-of-good-length-1234")
    exc = rejected(codec, token)
    assert exc.reason is Reason.BAD_SIGNATURE
    assert exc.claims is None  # nothing from an unverified token leaks out


@pytest.mark.filterwarnings("ignore:The HMAC key")
def test_bad_signature_other_hmac_algorithm(codec: TokenCodec, frozen: FrozenClock) -> None:
    token = jwt.encode(claims(), TEST_SECRET, algorithm="HS512")
    assert rejected(codec, token).reason is Reason.BAD_SIGNATURE


def test_header_without_alg_is_not_accepted(codec: TokenCodec, frozen: FrozenClock) -> None:
    assert rejected(codec, f"e30.{sign(claims()).split('.')[1]}.").reason is (Reason.BAD_SIGNATURE)


def test_expired(codec: TokenCodec, frozen: FrozenClock) -> None:
    token, _ = codec.mint(ACCESS, sub="1", sid="s", ttl=60)
    frozen.advance(60 + codec.leeway)
    exc = rejected(codec, token)
    assert exc.reason is Reason.EXPIRED
    assert exc.claims is not None and exc.claims.sid == "s"  # signature was good


def test_wrong_type(codec: TokenCodec, frozen: FrozenClock) -> None:
    refresh, _ = codec.mint(REFRESH, sub="1", sid="s", ttl=60)
    assert rejected(codec, refresh, ACCESS).reason is Reason.WRONG_TYPE
    access, _ = codec.mint(ACCESS, sub="1", sid="s", ttl=60)
    assert rejected(codec, access, REFRESH).reason is Reason.WRONG_TYPE
    assert rejected(codec, sign(claims(typ="id")), ACCESS).reason is Reason.WRONG_TYPE


@pytest.mark.parametrize("missing", ["exp", "sid", "typ"])
def test_missing_claim(codec: TokenCodec, frozen: FrozenClock, missing: str) -> None:
    exc = rejected(codec, sign(claims(**{missing: None})))
    assert exc.reason is Reason.MISSING_CLAIM
    assert missing in exc.detail


def test_empty_sid_is_missing(codec: TokenCodec, frozen: FrozenClock) -> None:
    assert rejected(codec, sign(claims(sid=""))).reason is Reason.MISSING_CLAIM


@pytest.mark.parametrize(
    "override",
    [{"exp": "soon"}, {"exp": True}, {"exp": 10**400}, {"sid": 7}, {"iat": "now"}, {"nbf": [1]}],
)
def test_claims_of_the_wrong_kind_are_malformed(
    codec: TokenCodec, frozen: FrozenClock, override: dict[str, Any]
) -> None:
    assert rejected(codec, sign(claims(**override))).reason is Reason.MALFORMED


def test_too_large(codec: TokenCodec, frozen: FrozenClock) -> None:
    token = sign(claims(name="x" * MAX_TOKEN_BYTES))
    assert len(token) > MAX_TOKEN_BYTES
    assert rejected(codec, token).reason is Reason.TOO_LARGE


@pytest.mark.parametrize("claim", ["nbf", "iat"])
def test_not_yet_valid(codec: TokenCodec, frozen: FrozenClock, claim: str) -> None:
    token = sign(claims(**{claim: int(T0) + 3600}))
    assert rejected(codec, token).reason is Reason.NOT_YET_VALID


def test_revoked_and_session_not_found(auth: Auth, store: SqliteStore, clock: FrozenClock) -> None:
    """The two reasons that need the blacklist and the store, through ``Auth``."""
    session, access, refresh = auth.login("u1", "ann@example.com", "Ann")
    other, _, refresh_other = auth.login("u2", "bob@example.com", "Bob")
    store.delete_sessions_with_audit([other.id], [])
    clock.advance(auth.access_ttl + auth.codec.leeway + 1)
    gone = auth.authenticate(None, refresh_other)
    assert gone.reason is Reason.SESSION_NOT_FOUND and not gone.ok

    clock.set(session.created_at)
    auth.force_logout(session.id, actor="test")
    assert auth.authenticate(access).reason is Reason.REVOKED
    assert auth.authenticate(None, refresh).reason is Reason.REVOKED


def test_every_reason_is_covered() -> None:
    covered = {
        "malformed",
        "bad_signature",
        "expired",
        "wrong_type",
        "missing_claim",
        "revoked",
        "session_not_found",
        "too_large",
        "not_yet_valid",
        "unknown_key",  # tests/core/test_keys.py
        "no_token",  # a request without any token (auth-level, not a token rejection)
        # Silent refresh with rotation and lifetime policies: tests/core/test_rotation.py and
        # tests/core/test_policies.py.
        "refresh_reused",
        "bad_generation",
        "future_generation",
        "idle_timeout",
        "absolute_timeout",
    }
    assert {r.value for r in Reason} == covered


# -- the leeway on both sides ---------------------------------------------------------------


def test_leeway_on_expiry(codec: TokenCodec, frozen: FrozenClock) -> None:
    token, c = codec.mint(ACCESS, sub="1", sid="s", ttl=60)
    frozen.set(c.exp + codec.leeway - 1)  # past exp, within the leeway: still good
    assert codec.verify(token).jti == c.jti
    frozen.set(c.exp + codec.leeway)
    assert rejected(codec, token).reason is Reason.EXPIRED


@pytest.mark.parametrize("claim", ["nbf", "iat"])
def test_leeway_on_not_before(codec: TokenCodec, frozen: FrozenClock, claim: str) -> None:
    lee = int(codec.leeway)
    assert codec.verify(sign(claims(**{claim: int(T0) + lee}))).sid == "s1"
    assert rejected(codec, sign(claims(**{claim: int(T0) + lee + 1}))).reason is (
        Reason.NOT_YET_VALID
    )


def test_zero_leeway(keys: KeyMaterial, frozen: FrozenClock) -> None:
    strict = TokenCodec(keys, leeway=0, clock=frozen)
    token, c = strict.mint(ACCESS, sub="1", sid="s", ttl=60)
    frozen.set(c.exp - 0.001)
    strict.verify(token)
    frozen.set(c.exp)
    assert rejected(strict, token).reason is Reason.EXPIRED
    frozen.set(T0)
    assert rejected(strict, sign(claims(nbf=int(T0) + 1))).reason is Reason.NOT_YET_VALID


# -- iss / aud ------------------------------------------------------------------------------


@pytest.fixture
def scoped(keys: KeyMaterial, frozen: FrozenClock) -> TokenCodec:
    return TokenCodec(keys, leeway=10, issuer="https://auth.example", audience="api", clock=frozen)


def test_iss_and_aud_minted_and_checked(scoped: TokenCodec) -> None:
    token, _ = scoped.mint(ACCESS, sub="1", sid="s", ttl=60)
    _, payload, _ = segments(token)
    assert payload["iss"] == "https://auth.example" and payload["aud"] == "api"
    assert scoped.verify(token).sid == "s"


@pytest.mark.parametrize(
    ("override", "reason"),
    [
        ({"iss": "https://evil.example", "aud": "api"}, Reason.BAD_SIGNATURE),
        ({"iss": "https://auth.example", "aud": "other-api"}, Reason.BAD_SIGNATURE),
        ({"aud": "api"}, Reason.MISSING_CLAIM),
        ({"iss": "https://auth.example"}, Reason.MISSING_CLAIM),
    ],
)
def test_iss_and_aud_rejections(
    scoped: TokenCodec, override: dict[str, Any], reason: Reason
) -> None:
    exc = rejected(scoped, sign(claims(**override)))
    assert exc.reason is reason


def test_unscoped_codec_does_not_mint_iss_or_aud(codec: TokenCodec) -> None:
    _, payload, _ = segments(codec.mint(ACCESS, sub="1", sid="s", ttl=60)[0])
    assert "iss" not in payload and "aud" not in payload


# -- Express interop ------------------------------------------------------------------------


def test_session_id_claim_is_accepted_as_sid(codec: TokenCodec, frozen: FrozenClock) -> None:
    token = sign(claims(sid=None, sessionId="express-sess"))
    assert codec.verify(token).sid == "express-sess"


def test_token_without_jti_is_identified_by_its_sha256(
    codec: TokenCodec, frozen: FrozenClock
) -> None:
    token = sign(claims(jti=None))
    assert codec.verify(token).jti == hashlib.sha256(token.encode()).hexdigest()
    other = sign(claims(jti=None, name="other"))
    assert codec.verify(other).jti != codec.verify(token).jti


def test_untyped_token_needs_require_typ_off(keys: KeyMaterial, frozen: FrozenClock) -> None:
    # As the Express design issues them: {email, name, valid, sessionId}, no typ, no jti.
    express = sign(
        {"email": "a@b.c", "name": "A", "valid": True, "sessionId": "s9", "exp": int(T0) + 5}
    )
    strict = TokenCodec(keys, clock=frozen)
    exc = rejected(strict, express)
    assert exc.reason is Reason.MISSING_CLAIM and "typ" in exc.detail

    lenient = TokenCodec(keys, require_typ=False, clock=frozen)
    c = lenient.verify(express, ACCESS)
    assert (c.typ, c.sid, c.email, c.name) == ("access", "s9", "a@b.c", "A")
    # An explicit typ is still checked when require_typ is off.
    refresh = sign(claims(typ="refresh"))
    assert rejected(lenient, refresh, ACCESS).reason is Reason.WRONG_TYPE
