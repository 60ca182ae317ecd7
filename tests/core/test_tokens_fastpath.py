"""Differential tests: the HMAC fast path (jws_fast) against plain PyJWT and the PyJWT-only codec.

The fast path may only ever accept tokens PyJWT accepts, with the same payload; everything else
must reach the PyJWT path, so ``verify`` gives identical claims or identical reasons either way.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import jwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sessionmon.core.clock import FrozenClock
from sessionmon.core.jws_fast import HmacFastPath
from sessionmon.core.keys import KeyMaterial
from sessionmon.core.tokens import TokenCodec, TokenRejected

SECRET = b"fast-path-secret-" + b"k" * 40
OTHER = b"another-secret-of-enough-length-" + b"x" * 20
NOW = time.time()


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign(header: Any, payload: Any, key: bytes = SECRET, raw: bool = False) -> str:
    """A compact token with exactly this header and payload (JSON unless ``raw`` bytes)."""
    import hashlib
    import hmac

    h = header if raw else json.dumps(header, separators=(",", ":")).encode()
    p = payload if raw else json.dumps(payload, separators=(",", ":")).encode()
    signing_input = f"{b64(h)}.{b64(p)}"
    sig = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(sig)}"


def claims(**extra: Any) -> dict[str, Any]:
    base = {
        "sub": "u1",
        "sid": "s1",
        "jti": "j1",
        "iat": int(NOW),
        "exp": int(NOW + 600),
        "typ": "access",
    }
    base.update(extra)
    return {k: v for k, v in base.items() if v is not None}


def codecs(
    algorithm: str = "HS256", issuer: str | None = None, audience: str | None = None
) -> tuple[TokenCodec, TokenCodec]:
    keys = KeyMaterial(algorithm, SECRET, SECRET, "test")
    clock = FrozenClock(NOW)
    opts = {"issuer": issuer, "audience": audience, "clock": clock, "leeway": 10}
    return TokenCodec(keys, **opts), TokenCodec(keys, fast_path=False, **opts)


def outcome(codec: TokenCodec, token: Any, typ: str = "access") -> tuple[Any, ...]:
    try:
        c = codec.verify(token, typ)
    except TokenRejected as exc:
        return ("rejected", exc.reason, exc.detail)
    return ("ok", c.sid, c.jti, c.exp, c.typ, c.sub, c.iat, c.email, c.name, c.raw)


def pyjwt_payload(token: str, issuer: str | None = None, audience: str | None = None) -> Any:
    """Plain PyJWT with the codec's options: the payload, or None when PyJWT rejects."""
    try:
        return jwt.decode(
            token,
            SECRET,
            algorithms=["HS256"],
            audience=audience,
            issuer=issuer,
            options={
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
                "verify_aud": audience is not None,
                "verify_iss": issuer is not None,
            },
        )
    except (jwt.InvalidTokenError, ValueError, TypeError):
        return None


def assert_same(token: Any, *, issuer: str | None = None, audience: str | None = None) -> None:
    fast, slow = codecs(issuer=issuer, audience=audience)
    for typ in ("access", "refresh"):
        assert outcome(fast, token, typ) == outcome(slow, token, typ)
    if isinstance(token, str):
        accepted = HmacFastPath("HS256", SECRET, issuer=issuer, audience=audience).accept(token)
        if accepted is not None:
            assert accepted == pyjwt_payload(token, issuer, audience)


def test_fast_path_is_active_and_accepts_minted_tokens() -> None:
    fast, slow = codecs()
    assert fast._fast is not None and slow._fast is None
    token, minted = fast.mint("access", sub="u1", sid="s1", ttl=60, email="a@b.test", name="A")
    assert fast._fast.accept(token) == minted.raw == pyjwt_payload(token)
    assert outcome(fast, token) == outcome(slow, token)
    assert outcome(fast, token)[0] == "ok"


def test_fast_path_refuses_short_keys_so_pyjwt_still_warns() -> None:
    assert HmacFastPath.for_codec("HS256", b"short", None, None) is None
    assert HmacFastPath.for_codec("RS256", SECRET, None, None) is None
    pem = (
        b"-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n"
        b"-----END PUBLIC KEY-----\n"
    )
    assert HmacFastPath.for_codec("HS256", pem, None, None) is None


HEADERS: list[Any] = [
    {"alg": "HS256", "typ": "JWT"},
    {"alg": "HS256"},
    {"typ": "JWT", "alg": "HS256"},
    {"alg": "none", "typ": "JWT"},
    {"alg": "HS512", "typ": "JWT"},
    {"alg": "RS256"},
    {"alg": "hs256"},
    {"alg": "HS256", "kid": "k1"},
    {"alg": "HS256", "kid": 5},
    {"alg": "HS256", "crit": ["b64"], "b64": False},
    {"alg": "HS256", "crit": ["exp"]},
    {"alg": "HS256", "b64": True},
    {"alg": "HS256", "typ": None},
    {"alg": ["HS256"]},
    {},
    ["HS256"],
    "HS256",
    None,
]


@pytest.mark.parametrize("header", HEADERS, ids=range(len(HEADERS)))
def test_headers(header: Any) -> None:
    assert_same(sign(header, claims()))


PAYLOADS: list[Any] = [
    claims(),
    claims(sub=5),
    claims(jti=7),
    claims(jti=None),
    claims(sub=None),
    claims(sid=None),
    claims(sid=3),
    claims(sessionId="s9", sid=None),
    claims(exp=None),
    claims(exp="soon"),
    claims(exp=True),
    claims(exp=int(NOW - 3600)),
    claims(iat=int(NOW + 3600)),
    claims(nbf=int(NOW + 3600)),
    claims(nbf="x"),
    claims(typ="refresh"),
    claims(typ=None),
    claims(iss="someone"),
    claims(aud="them"),
    claims(aud=["them", 3]),
    claims(email=5, name=["x"]),
    [1, 2],
    "string",
    17,
    None,
]


@pytest.mark.parametrize("payload", PAYLOADS, ids=range(len(PAYLOADS)))
def test_payloads(payload: Any) -> None:
    assert_same(sign({"alg": "HS256", "typ": "JWT"}, payload))


@pytest.mark.parametrize(
    ("issuer", "audience", "extra"),
    [
        ("iss-a", None, {"iss": "iss-a"}),
        ("iss-a", None, {"iss": "iss-b"}),
        ("iss-a", None, {}),
        ("iss-a", None, {"iss": ["iss-a"]}),
        (None, "aud-a", {"aud": "aud-a"}),
        (None, "aud-a", {"aud": ["aud-b", "aud-a"]}),
        (None, "aud-a", {"aud": ["aud-b"]}),
        (None, "aud-a", {"aud": ["aud-a", 1]}),
        (None, "aud-a", {"aud": ""}),
        (None, "aud-a", {}),
        (None, "aud-a", {"aud": {"aud-a": 1}}),
        ("iss-a", "aud-a", {"iss": "iss-a", "aud": "aud-a"}),
    ],
)
def test_issuer_and_audience(issuer: str | None, audience: str | None, extra: dict) -> None:
    assert_same(sign({"alg": "HS256"}, claims(**extra)), issuer=issuer, audience=audience)


def test_encoding_edge_cases() -> None:
    good = sign({"alg": "HS256", "typ": "JWT"}, claims())
    h, p, s = good.split(".")
    cases = [
        good,
        f"{h}.{p}.{s}=",  # padding on an unpadded length
        f"{h}.{p}.{s[:-1]}",  # truncated signature
        f"{h}.{p}.",  # no signature
        f".{p}.{s}",
        f"{h}..{s}",
        f"{h}.{p}.{s}.",
        f"{h}.{p}",
        f" {good}",
        f"{good} ",
        f"{h}.{p}.{s.replace('_', '/').replace('-', '+')}",  # standard alphabet
        f"{h}.{p}.{s[:-1]}{chr(ord(s[-1]) ^ 1)}",  # flipped low bit (non-canonical or bad sig)
        f"{h}.{p}\n.{s}",
        f"{h}.{p}.{s}\n",
        good.encode(),
        "é" + good,
        "",
        None,
        123,
        "a" * 9000,
        sign({"alg": "HS256"}, claims(), key=OTHER),
        sign(b"\xff\xfe", json.dumps(claims()).encode(), raw=True),
        sign(
            json.dumps({"alg": "HS256"}).encode("utf-16"), json.dumps(claims()).encode(), raw=True
        ),
        sign(b'{"alg":"HS256"}', json.dumps(claims()).encode("utf-16"), raw=True),
        sign(b'{"alg":"HS256","alg":"none"}', json.dumps(claims()).encode(), raw=True),
        sign(b'{"alg":"none","alg":"HS256"}', json.dumps(claims()).encode(), raw=True),
        sign(b'{"alg":"HS256"}', b'{"sid":"a","sid":"b","exp":' + b"9" * 12 + b"}", raw=True),
        sign(b'{"alg":"HS256"}', b'{"sid":"s","exp":1e999}', raw=True),
        sign(b'{"alg":"HS256"}', b'{"sid":"s","exp":NaN}', raw=True),
        sign(b'{"alg":"HS256"}', b"[" * 5000 + b"]" * 5000, raw=True),
    ]
    # A non-canonical final character that still decodes to the same signature bytes.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(s[-1])
    for bump in (1, 2, 3):
        cases.append(f"{h}.{p}.{s[:-1]}{alphabet[(last & ~3) | ((last + bump) & 3)]}")
    for token in cases:
        assert_same(token)


def test_alg_confusion_hs256_signed_with_a_public_key_is_not_accepted() -> None:
    # A token "signed" with HMAC over a public key must never verify against an HMAC codec whose
    # secret differs: both paths reject it with the same reason.
    token = sign({"alg": "HS256"}, claims(), key=b"-----BEGIN PUBLIC KEY-----\nabc\n" * 3)
    assert_same(token)
    fast, _ = codecs()
    assert outcome(fast, token)[0] == "rejected"


ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=.+/ \n\x00é"


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    op=st.sampled_from(["replace", "insert", "delete", "truncate", "swap"]),
)
def test_random_mutations_agree(data: st.DataObject, op: str) -> None:
    fast, _ = codecs()
    token, _ = fast.mint("access", sub="u1", sid="s1", ttl=60, email="a@b.test", name="A")
    i = data.draw(st.integers(0, len(token) - 1))
    ch = data.draw(st.sampled_from(ALPHABET))
    if op == "replace":
        token = token[:i] + ch + token[i + 1 :]
    elif op == "insert":
        token = token[:i] + ch + token[i:]
    elif op == "delete":
        token = token[:i] + token[i + 1 :]
    elif op == "truncate":
        token = token[:i]
    else:
        parts = token.split(".")
        a, b = data.draw(st.sampled_from([(0, 1), (1, 2), (0, 2)]))
        parts[a], parts[b] = parts[b], parts[a]
        token = ".".join(parts)
    assert_same(token)


@settings(max_examples=150, deadline=None)
@given(
    payload=st.dictionaries(
        st.sampled_from(["sub", "sid", "jti", "exp", "iat", "nbf", "typ", "iss", "aud", "x"]),
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(-(2**40), 2**40),
            st.floats(allow_nan=True, allow_infinity=True),
            st.text(max_size=8),
            st.lists(st.text(max_size=3), max_size=2),
        ),
    ),
    issuer=st.sampled_from([None, "iss-a"]),
    audience=st.sampled_from([None, "aud-a"]),
)
def test_random_claims_agree(payload: dict, issuer: str | None, audience: str | None) -> None:
    assert_same(sign({"alg": "HS256", "typ": "JWT"}, payload), issuer=issuer, audience=audience)
