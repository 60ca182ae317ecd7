"""Hypothesis: whatever comes in as a token, verify raises only TokenRejected; auth never raises."""

from __future__ import annotations

import json
import time
from typing import Any

import jwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sessionmon.core.auth import Auth
from sessionmon.core.keys import KeyMaterial
from sessionmon.core.tokens import ACCESS, REFRESH, Claims, TokenCodec, TokenRejected
from tests.core.forge import b64url, b64url_json, unsigned_token

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# One valid token per run: mutations start from real signed material.
_KEYS = KeyMaterial("HS256", b"fuzz-secret-" + b"k" * 40, b"fuzz-secret-" + b"k" * 40, "fuzz")
_CODEC = TokenCodec(_KEYS, leeway=10)
_VALID, _ = _CODEC.mint(ACCESS, sub="u1", sid="s1", ttl=3600, email="a@b.c", name="A")
_REFRESH, _ = _CODEC.mint(REFRESH, sub="u1", sid="s1", ttl=3600)
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ \x00é"


def verify_outcome(codec: TokenCodec, token: Any, typ: str = ACCESS) -> Claims | TokenRejected:
    """The only two allowed outcomes of ``verify``."""
    try:
        return codec.verify(token, typ)
    except TokenRejected as exc:
        assert exc.reason.value and isinstance(exc.detail, str)
        return exc


@st.composite
def mutated_tokens(draw: st.DrawFn) -> str:
    token = draw(st.sampled_from([_VALID, _REFRESH]))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "swap", "realg", "truncate"]))
        if op == "flip" and token:
            i = draw(st.integers(0, len(token) - 1))
            token = token[:i] + draw(st.sampled_from(_ALPHABET)) + token[i + 1 :]
        elif op == "insert":
            i = draw(st.integers(0, len(token)))
            token = token[:i] + draw(st.text(_ALPHABET, min_size=1, max_size=5)) + token[i:]
        elif op == "delete" and token:
            i = draw(st.integers(0, len(token) - 1))
            token = token[:i] + token[i + draw(st.integers(1, 5)) :]
        elif op == "swap":
            parts = token.split(".")
            token = ".".join(draw(st.permutations(parts)))
        elif op == "realg":
            parts = token.split(".")
            header = {
                "alg": draw(
                    st.sampled_from(
                        ["none", "None", "NONE", "HS384", "HS512", "RS256", "ES256", "EdDSA", ""]
                    )
                    | st.integers()
                    | st.none()
                ),
                "typ": "JWT",
            }
            parts[0] = b64url_json(header)
            token = ".".join(parts)
        elif op == "truncate":
            token = token[: draw(st.integers(0, len(token)))]
    return token


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=10**300, max_value=10**400)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=6,
)


@st.composite
def signed_payloads(draw: st.DrawFn) -> str:
    """Well-signed tokens whose claims have arbitrary JSON values."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": "u1",
        "sid": "s1",
        "jti": "j1",
        "iat": now,
        "exp": now + 60,
        "typ": "access",
    }
    for name in draw(st.lists(st.sampled_from([*claims, "nbf", "sessionId", "email"]))):
        claims[name] = draw(json_values)
    for name in draw(st.lists(st.sampled_from(list(claims)), max_size=2)):
        claims.pop(name, None)
    body = json.dumps(claims, allow_nan=True).encode()
    return jwt.api_jws.encode(body, _KEYS.signing_key, algorithm="HS256")


@FUZZ
@given(st.text(max_size=300) | st.binary(max_size=300))
def test_arbitrary_text_and_bytes_are_rejected(token: str | bytes) -> None:
    result = verify_outcome(_CODEC, token)
    assert isinstance(result, TokenRejected)


@FUZZ
@given(st.lists(st.text(_ALPHABET, max_size=40) | st.binary(max_size=30).map(b64url), max_size=5))
def test_arbitrary_dotted_segments_are_rejected(parts: list[str]) -> None:
    assert isinstance(verify_outcome(_CODEC, ".".join(parts)), TokenRejected)


@FUZZ
@given(mutated_tokens(), st.sampled_from([ACCESS, REFRESH]))
def test_mutated_tokens_never_raise_anything_else(token: str, typ: str) -> None:
    result = verify_outcome(_CODEC, token, typ)
    if isinstance(result, Claims):
        # Only a token whose signed content is unchanged may pass (base64 slack bits aside).
        assert (
            token.split(".")[:2] == _VALID.split(".")[:2]
            or token.split(".")[:2] == (_REFRESH.split(".")[:2])
        )


@FUZZ
@given(st.sampled_from(["none", "None", "NONE", "nonE"]), json_values)
def test_unsigned_tokens_are_always_rejected(alg: str, extra: Any) -> None:
    payload = {"sub": "u1", "sid": "s1", "exp": int(time.time()) + 60, "typ": "access"}
    payload["x"] = extra
    assert isinstance(verify_outcome(_CODEC, unsigned_token(payload, alg)), TokenRejected)


@FUZZ
@given(signed_payloads(), st.sampled_from([ACCESS, REFRESH]))
def test_signed_tokens_with_odd_claims_never_raise_anything_else(token: str, typ: str) -> None:
    result = verify_outcome(_CODEC, token, typ)
    if isinstance(result, Claims):
        assert isinstance(result.sid, str) and result.sid
        assert isinstance(result.exp, float) and result.typ == typ


@pytest.fixture
def fuzz_auth(auth: Auth) -> Auth:
    auth.codec = TokenCodec(_KEYS, leeway=10, clock=auth.clock)
    return auth


@FUZZ
@given(
    st.none() | st.text(max_size=200) | mutated_tokens() | signed_payloads(),
    st.none() | st.text(max_size=200) | mutated_tokens() | signed_payloads(),
)
def test_authenticate_always_returns_a_reason_for_garbage(
    fuzz_auth: Auth, access: str | None, refresh: str | None
) -> None:
    result = fuzz_auth.authenticate(access, refresh)
    if result.ok:
        assert result.user is not None and result.reason is None
    else:
        assert result.reason is not None and result.user is None
        assert result.new_access_token is None
