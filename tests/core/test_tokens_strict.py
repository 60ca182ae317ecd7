"""Issue 11's token checks: aud, null / float NumericDates, non-ASCII input, the segment a
tampered token is rejected for, the fast path's header cache. Each was accepted (or misreported)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import jwt
import jwt.api_jwt
import pytest

from sessionmon.core.clock import FrozenClock
from sessionmon.core.jws_fast import HmacFastPath
from sessionmon.core.keys import KeyMaterial
from sessionmon.core.tokens import ACCESS, Reason, TokenCodec, TokenRejected
from tests.core.forge import b64url, b64url_json

SECRET = b"strict-checks-secret-" + b"s" * 40
KEYS = KeyMaterial("HS256", SECRET, SECRET, "test")
T0 = float(int(time.time())) - 3600  # well in the past: PyJWT must be pinned to it too


def codec(*, audience: str | None = None, fast_path: bool = True, leeway: float = 10) -> TokenCodec:
    return TokenCodec(
        KEYS, leeway=leeway, audience=audience, clock=FrozenClock(T0), fast_path=fast_path
    )


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
    return base


def sign(payload: dict[str, Any], **headers: Any) -> str:
    return jwt.encode(payload, SECRET, algorithm="HS256", headers=headers or None)


def reason(c: TokenCodec, token: Any) -> tuple[Reason, str]:
    with pytest.raises(TokenRejected) as info:
        c.verify(token, ACCESS)
    return info.value.reason, info.value.detail


class _AtT0(datetime):
    @classmethod
    def now(cls, tz: Any = None) -> _AtT0:  # type: ignore[override]
        return cls.fromtimestamp(T0, tz or UTC)


def pyjwt_accepts(token: str, *, audience: str | None = None, leeway: float = 10) -> bool:
    """Plain ``jwt.decode``, every check on, with PyJWT's clock at ``T0`` as the codecs' is."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(jwt.api_jwt, "datetime", _AtT0)
        try:
            jwt.decode(token, SECRET, algorithms=["HS256"], audience=audience, leeway=leeway)
        except jwt.InvalidTokenError:
            return False
    return True


BOTH_PATHS = pytest.mark.parametrize("fast_path", [True, False], ids=["fast", "pyjwt"])


# -- aud ------------------------------------------------------------------------------------


@BOTH_PATHS
@pytest.mark.parametrize("aud", ["billing", ["billing"], ["billing", "api"], ["api", 3]])
def test_a_token_for_another_audience_is_rejected_without_an_audience_configured(
    fast_path: bool, aud: Any
) -> None:
    token = sign(claims(aud=aud))
    assert not pyjwt_accepts(token)
    assert reason(codec(fast_path=fast_path), token)[0] is Reason.BAD_SIGNATURE


@BOTH_PATHS
@pytest.mark.parametrize(
    ("aud", "ok"),
    [("api", True), (["x", "api"], True), ("billing", False), (["billing"], False), ([], False)],
)
def test_a_configured_audience_must_be_in_the_token(fast_path: bool, aud: Any, ok: bool) -> None:
    token = sign(claims(aud=aud))
    c = codec(audience="api", fast_path=fast_path)
    if ok:
        assert c.verify(token, ACCESS).sid == "s1"
    else:
        assert reason(c, token)[0] in (Reason.BAD_SIGNATURE, Reason.MISSING_CLAIM)


def test_an_empty_audience_is_what_pyjwt_accepts_too() -> None:
    token = sign(claims(aud=""))
    assert pyjwt_accepts(token)
    assert codec().verify(token, ACCESS).sid == "s1"


# -- NumericDate claims ---------------------------------------------------------------------


@BOTH_PATHS
@pytest.mark.parametrize("claim", ["nbf", "iat"])
def test_null_nbf_and_iat_are_rejected(fast_path: bool, claim: str) -> None:
    token = sign(claims(**{claim: None}))
    assert not pyjwt_accepts(token)
    assert reason(codec(fast_path=fast_path), token) == (
        Reason.MALFORMED,
        f"{claim} is not a number",
    )


@BOTH_PATHS
def test_a_float_exp_is_truncated_as_pyjwt_does(fast_path: bool) -> None:
    # exp = T0 - leeway + 0.5: compared untruncated it is still valid; PyJWT compares int(exp),
    # which is exactly now - leeway: expired.
    c = codec(fast_path=fast_path, leeway=10)
    token = sign(claims(exp=T0 - 10 + 0.5))
    assert reason(c, token)[0] is Reason.EXPIRED
    # One second later is valid for both.
    assert c.verify(sign(claims(exp=T0 - 10 + 1.5)), ACCESS).sid == "s1"


@BOTH_PATHS
def test_a_float_nbf_in_the_future_is_truncated_as_pyjwt_does(fast_path: bool) -> None:
    c = codec(fast_path=fast_path, leeway=0)
    assert c.verify(sign(claims(nbf=T0 + 0.9)), ACCESS).sid == "s1"  # int(nbf) == now
    assert reason(c, sign(claims(nbf=T0 + 1.0)))[0] is Reason.NOT_YET_VALID


# -- non-ASCII input --------------------------------------------------------------------------


def test_a_lone_surrogate_is_malformed_not_an_encoding_error() -> None:
    good = sign(claims())
    for token in (good + "\udcff", "\udcff" + good[1:], good[:20] + "\udcff" + good[21:]):
        assert reason(codec(), token) == (Reason.MALFORMED, "token is not ASCII")


def test_non_ascii_text_and_bytes_are_malformed() -> None:
    good = sign(claims())
    assert reason(codec(), good.replace(".", "\u2024", 1))[0] is Reason.MALFORMED
    assert reason(codec(), good.encode() + b"\xff")[0] is Reason.MALFORMED


# -- which segment is at fault ----------------------------------------------------------------


def test_changing_the_last_signature_character_is_a_signature_problem() -> None:
    good = sign(claims())
    seen = set()
    for ch in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_":
        if ch == good[-1]:
            continue
        got = reason(codec(), good[:-1] + ch)
        seen.add(got)
        assert got[0] is Reason.BAD_SIGNATURE, got
        assert "header" not in got[1]
    # Both kinds occur: a non-canonical last character and a canonical wrong signature.
    assert seen == {
        (Reason.BAD_SIGNATURE, "signature is not valid base64url"),
        (Reason.BAD_SIGNATURE, "signature does not verify"),
    }


def test_the_segment_at_fault_is_named() -> None:
    h, p, s = sign(claims()).split(".")
    assert reason(codec(), f"{h[:-1]}!.{p}.{s}") == (Reason.MALFORMED, "unreadable header")
    assert reason(codec(), f"{h}.{p}!.{s}") == (Reason.MALFORMED, "unreadable payload")
    assert reason(codec(), f"{h}.{p}.{s}!")[0] is Reason.BAD_SIGNATURE
    bad_kid = b64url_json({"alg": "HS256", "kid": 7})
    assert reason(codec(), f"{bad_kid}.{p}.{s}")[0] is Reason.MALFORMED


# -- the fast path's header cache -------------------------------------------------------------


def test_the_header_cache_only_learns_headers_with_a_good_signature() -> None:
    fast = HmacFastPath("HS256", SECRET)
    payload = b64url(json.dumps(claims()).encode())
    forged = [
        f"{b64url_json({'alg': 'HS256', 'typ': f'x{i}'})}.{payload}.{b64url(b'0' * 32)}"
        for i in range(40)
    ]
    for token in forged:
        assert fast.accept(token) is None
    assert fast._known_headers == set()
    good = sign(claims())
    assert fast.accept(good) is not None
    assert fast._known_headers == {good.split(".")[0]}
