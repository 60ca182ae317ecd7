"""Differential fuzz: ``TokenCodec.verify`` against full ``jwt.decode``, same configuration.

Any token sessionmon accepts that PyJWT (every check on, same algorithm, key, issuer, audience,
leeway and the same clock reading) rejects fails the test. sessionmon may be stricter (it requires
``exp``, a session id and ``typ``), never more lenient. The HMAC fast path is also checked against
the PyJWT-only codec: same decisions, same reasons, same claims.

At least 20,000 generated cases per run (``SESSIONMON_FUZZ_CASES`` raises it): HS256/384/512 and
ES256, with and without iss/aud, leeway 0 and 10; odd claim types (null, float, bool, string
numbers, nested, huge), header variants, wrong keys, tampered signatures, surrogates, non-ASCII and
non-UTF-8 bytes. The RNG is seeded: the seed is printed, and ``SESSIONMON_FUZZ_SEED=N`` replays a
run (ECDSA signatures differ between runs; which tokens are built does not).
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import random
import secrets
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import jwt
import jwt.api_jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sessionmon.core.clock import FrozenClock
from sessionmon.core.keys import KeyMaterial
from sessionmon.core.tokens import ACCESS, REFRESH, Claims, TokenCodec, TokenRejected

MIN_CASES = 20_000
CASES = max(MIN_CASES, int(os.environ.get("SESSIONMON_FUZZ_CASES") or MIN_CASES))
# A fixed instant with a fraction, so truncating float claims matters at the boundaries.
NOW = 1_800_000_000.25
ISSUER = "https://auth.example"
AUDIENCE = "api"


@dataclass(frozen=True)
class Config:
    algorithm: str
    issuer: str | None
    audience: str | None
    leeway: float
    signing_key: Any
    verifying_key: Any
    other_key: Any  # a key of the same kind that is not ours
    fast: TokenCodec
    slow: TokenCodec

    def describe(self) -> str:
        return f"{self.algorithm} iss={self.issuer} aud={self.audience} leeway={self.leeway:g}"


def _pem(private: ec.EllipticCurvePrivateKey) -> tuple[bytes, bytes]:
    priv = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    pub = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return priv, pub


def make_configs(rng: random.Random) -> list[Config]:
    es_priv, es_pub = _pem(ec.generate_private_key(ec.SECP256R1()))
    es_other, _ = _pem(ec.generate_private_key(ec.SECP256R1()))
    configs = []
    for algorithm in ("HS256", "HS384", "HS512", "ES256"):
        if algorithm == "ES256":
            signing, verifying, other = es_priv, es_pub, es_other
        else:
            signing = verifying = rng.randbytes(64)
            other = rng.randbytes(64)
        for issuer, audience in (
            (None, None),
            (ISSUER, AUDIENCE),
            (None, AUDIENCE),
            (ISSUER, None),
        ):
            for leeway in (0.0, 10.0):
                keys = KeyMaterial(algorithm, signing, verifying, "fuzz")
                opts: dict[str, Any] = {
                    "leeway": leeway,
                    "issuer": issuer,
                    "audience": audience,
                    "clock": FrozenClock(NOW),
                }
                configs.append(
                    Config(
                        algorithm,
                        issuer,
                        audience,
                        leeway,
                        signing,
                        verifying,
                        other,
                        TokenCodec(keys, fast_path=True, **opts),
                        TokenCodec(keys, fast_path=False, **opts),
                    )
                )
    return configs


# -- generation -------------------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), allow_nan=True).encode()


def odd_value(rng: random.Random) -> Any:
    """A JSON value of an unexpected type."""
    return rng.choice(
        [
            None,
            True,
            False,
            0,
            -1,
            "",
            "123",
            "1800000100",
            "abc",
            [1],
            [],
            {"a": 1},
            {"exp": 1},
            [[["deep"]]],
            10**20,
            10**400,
            1e308,
            -1e308,
            float("nan"),
            float("inf"),
            0.5,
            "\u00e9",
        ]
    )


def time_value(rng: random.Random, leeway: float) -> Any:
    """A NumericDate near a boundary (exp's and nbf/iat's, with the leeway), or an odd value."""
    base = int(NOW)
    roll = rng.random()
    if roll < 0.45:
        return base + rng.randint(-int(leeway) - 3, int(leeway) + 3)
    if roll < 0.7:
        return (
            NOW
            + rng.choice([-leeway, leeway, 0])
            + rng.choice([-1.5, -1, -0.75, -0.5, 0.5, 0.75, 1])
        )
    if roll < 0.8:
        return base + rng.randint(-(10**6), 10**6)
    return odd_value(rng)


def audience_value(rng: random.Random) -> Any:
    return rng.choice(
        [
            AUDIENCE,
            [AUDIENCE],
            ["x", AUDIENCE],
            [AUDIENCE, 1],
            [AUDIENCE, None],
            "billing",
            ["billing"],
            "",
            [],
            None,
            0,
            5,
            True,
            False,
            {"a": AUDIENCE},
            {},
            [[AUDIENCE]],
            "API",
        ]
    )


def issuer_value(rng: random.Random) -> Any:
    return rng.choice([ISSUER, ISSUER + "/", "https://evil.example", "", None, 1, [ISSUER], True])


def claims_for(rng: random.Random, cfg: Config) -> tuple[dict[str, Any], str]:
    """A payload, valid for ``cfg`` to start with, with some claims changed; and the typ asked."""
    typ = rng.choice([ACCESS, REFRESH])
    payload: dict[str, Any] = {
        "sub": "u1",
        "sid": "s1",
        "jti": "j" + str(rng.randint(0, 10**6)),
        "iat": int(NOW) - rng.randint(0, 100),
        "exp": int(NOW) + rng.randint(1, 600),
        "typ": typ,
    }
    if cfg.issuer is not None or rng.random() < 0.1:
        payload["iss"] = ISSUER
    if cfg.audience is not None:
        payload["aud"] = rng.choice([AUDIENCE, [AUDIENCE], ["x", AUDIENCE]])
    for _ in range(rng.choice([0, 1, 1, 2, 2, 3, 4])):
        claim = rng.choice(
            [
                "exp",
                "exp",
                "iat",
                "nbf",
                "nbf",
                "aud",
                "aud",
                "iss",
                "sub",
                "jti",
                "sid",
                "typ",
                "drop",
                "extra",
            ]
        )
        if claim in ("exp", "iat", "nbf"):
            payload[claim] = time_value(rng, cfg.leeway)
        elif claim == "aud":
            payload["aud"] = audience_value(rng)
        elif claim == "iss":
            payload["iss"] = issuer_value(rng)
        elif claim in ("sub", "jti", "sid", "typ"):
            payload[claim] = rng.choice([odd_value(rng), "x", ACCESS, REFRESH])
        elif claim == "drop" and payload:
            payload.pop(rng.choice(sorted(payload)))
        else:
            payload[rng.choice(["email", "name", "sessionId", "x", "nested"])] = odd_value(rng)
    asked = typ if rng.random() < 0.9 else (REFRESH if typ == ACCESS else ACCESS)
    return payload, asked


def header_for(rng: random.Random, cfg: Config) -> bytes:
    header: dict[str, Any] = {"alg": cfg.algorithm, "typ": "JWT"}
    roll = rng.random()
    if roll < 0.75:
        return dumps(header)
    variant = rng.choice(
        [
            "no-typ",
            "kid",
            "kid-int",
            "crit",
            "crit-b64",
            "b64",
            "alg",
            "typ",
            "extra",
            "dup",
            "array",
        ]
    )
    if variant == "no-typ":
        del header["typ"]
    elif variant == "kid":
        header["kid"] = "k1"
    elif variant == "kid-int":
        header["kid"] = 7
    elif variant == "crit":
        header["crit"] = rng.choice([["exp"], [], "b64", [1]])
    elif variant == "crit-b64":
        header.update(crit=["b64"], b64=rng.choice([True, False]))
    elif variant == "b64":
        header["b64"] = False
    elif variant == "alg":
        header["alg"] = rng.choice(["none", "HS256", "HS512", "ES256", "RS256", "", None, 1])
    elif variant == "typ":
        header["typ"] = odd_value(rng)
    elif variant == "extra":
        header["x5u"] = "https://evil.example/k"
    elif variant == "dup":
        return dumps(header)[:-1] + b',"alg":"none"}'
    else:
        return dumps([header])
    return dumps(header)


def sign(cfg: Config, signing_input: bytes, key: Any, algorithm: str | None = None) -> bytes:
    alg = jwt.get_algorithm_by_name(algorithm or cfg.algorithm)
    return alg.sign(signing_input, alg.prepare_key(key))


def mutate(rng: random.Random, token: str) -> str | bytes:
    """One tampering of a finished token (signature, characters, encoding)."""
    op = rng.choice(
        [
            "last-sig",
            "char",
            "surrogate",
            "non-ascii",
            "bytes",
            "pad",
            "dot",
            "truncate",
            "swap",
            "space",
            "sig-strip",
        ]
    )
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    if op == "last-sig":
        return token[:-1] + rng.choice(alphabet)
    if op == "char":
        i = rng.randrange(len(token))
        return token[:i] + rng.choice(alphabet + ".=+/") + token[i + 1 :]
    if op == "surrogate":
        i = rng.randrange(len(token) + 1)
        return token[:i] + rng.choice(["\udcff", "\ud800", "\udc80"]) + token[i:]
    if op == "non-ascii":
        i = rng.randrange(len(token) + 1)
        return token[:i] + rng.choice(["\u00e9", "\u2024", "\uff0e", "\x00"]) + token[i:]
    if op == "bytes":
        raw = token.encode()
        i = rng.randrange(len(raw) + 1)
        return raw[:i] + rng.choice([b"\xff", b"\xc3(", b"\x80", b"\xed\xb3\xbf"]) + raw[i:]
    if op == "pad":
        h, p, s = token.split(".")
        return ".".join([h, p + rng.choice(["=", "==", "==="]), s])
    if op == "dot":
        return token + "." if rng.random() < 0.5 else token.replace(".", "..", 1)
    if op == "truncate":
        return token[: rng.randrange(len(token))]
    if op == "swap":
        h, p, s = token.split(".")
        return ".".join([p, h, s])
    if op == "space":
        return rng.choice([" ", "\n", "\t"]) + token if rng.random() < 0.5 else token + "\n"
    h, p, _ = token.split(".")
    return f"{h}.{p}."


def make_token(rng: random.Random, cfg: Config) -> tuple[str | bytes, str, str]:
    """(token, typ to verify as, what was done) for one case."""
    payload, typ = claims_for(rng, cfg)
    header = header_for(rng, cfg)
    how = "claims"
    roll = rng.random()
    if roll < 0.04:
        body = rng.choice([b"[1,2]", b'"x"', b"42", b"null", b"{", b"\xff\xfe", b'{"a":1,}'])
        how = "raw payload"
    else:
        body = dumps(payload)
    signing_input = f"{b64(header)}.{b64(body)}".encode()
    key, how_signed = cfg.signing_key, "signed"
    roll = rng.random()
    if roll < 0.05:
        key, how_signed = cfg.other_key, "other key"
    signature = sign(cfg, signing_input, key)
    if roll > 0.97 and cfg.algorithm.startswith("HS"):
        # Signed with another HMAC strength over our key (alg confusion within HMAC).
        other = rng.choice([a for a in ("HS256", "HS384", "HS512") if a != cfg.algorithm])
        signature, how_signed = sign(cfg, signing_input, cfg.signing_key, other), f"as {other}"
    token = f"{signing_input.decode()}.{b64(signature)}"
    if rng.random() < 0.25:
        return mutate(rng, token), typ, f"{how}, {how_signed}, mutated"
    return token, typ, f"{how}, {how_signed}"


# -- oracles ----------------------------------------------------------------------------------


class _FrozenDatetime(datetime):
    """PyJWT's clock for this test: ``datetime.now()`` at exactly ``NOW``."""

    @classmethod
    def now(cls, tz: Any = None) -> _FrozenDatetime:  # type: ignore[override]
        return cls.fromtimestamp(NOW, tz or UTC)


@pytest.fixture
def pyjwt_at_now(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """PyJWT reads the time from ``datetime.now`` in ``jwt.api_jwt``: pin it to ``NOW``."""
    monkeypatch.setattr(jwt.api_jwt, "datetime", _FrozenDatetime)
    assert datetime.now(tz=UTC).timestamp() != NOW  # only PyJWT's view changed
    yield


def pyjwt_decode(cfg: Config, token: str | bytes) -> dict[str, Any] | None:
    """Full ``jwt.decode`` (every default check on) with cfg's settings; None when it rejects."""
    try:
        return jwt.decode(
            token,
            cfg.verifying_key,
            algorithms=[cfg.algorithm],
            issuer=cfg.issuer,
            audience=cfg.audience,
            leeway=cfg.leeway,
        )
    except Exception:  # any exception from PyJWT is a rejection
        return None


def outcome(codec: TokenCodec, token: str | bytes, typ: str) -> Claims | TokenRejected:
    try:
        return codec.verify(token, typ)
    except TokenRejected as exc:
        return exc


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, allow_nan=True, default=str)


def describe(token: str | bytes) -> str:
    """The decoded header and payload of a test token (it is not a secret), for a failure."""
    text = token.decode("utf-8", "backslashreplace") if isinstance(token, bytes) else token
    parts = text.split(".")
    out = []
    for part in parts[:2]:
        try:
            out.append(
                base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)).decode("utf-8", "replace")
            )
        except Exception:  # a mangled segment: show it raw
            out.append(repr(part[:60]))
    return (
        " . ".join(out)
        + f" (sha256 {hashlib.sha256(text.encode('utf-8', 'surrogatepass')).hexdigest()[:12]})"
    )


# -- the test ---------------------------------------------------------------------------------


def test_sessionmon_never_accepts_what_pyjwt_rejects(
    pyjwt_at_now: None, capsys: pytest.CaptureFixture[str]
) -> None:
    seed = int(os.environ.get("SESSIONMON_FUZZ_SEED") or secrets.randbits(32))
    with capsys.disabled():
        print(f"\ndifferential fuzz: {CASES} cases, SESSIONMON_FUZZ_SEED={seed}")
    rng = random.Random(seed)
    configs = make_configs(rng)
    stats: Counter[str] = Counter()
    failures: list[str] = []

    def fail(msg: str) -> None:
        failures.append(msg)

    for case in range(CASES):
        cfg = configs[case % len(configs)] if case < len(configs) else rng.choice(configs)
        token, typ, how = make_token(rng, cfg)
        fast = outcome(cfg.fast, token, typ)
        slow = outcome(cfg.slow, token, typ)
        where = f"case {case} [{cfg.describe()}; {how}; verify as {typ}]: {describe(token)}"

        # The fast path changes nothing: same decision, same reason, same claims.
        if isinstance(fast, Claims) != isinstance(slow, Claims):
            fail(f"fast path and PyJWT path disagree ({fast!r} vs {slow!r}) at {where}")
        elif isinstance(fast, TokenRejected) and isinstance(slow, TokenRejected):
            if (fast.reason, fast.detail) != (slow.reason, slow.detail):
                fail(f"fast/slow reasons differ ({fast} vs {slow}) at {where}")
        elif (
            isinstance(fast, Claims)
            and isinstance(slow, Claims)
            and canonical(fast.raw) != canonical(slow.raw)
        ):
            fail(f"fast/slow claims differ at {where}")

        reference = pyjwt_decode(cfg, token)
        for result in (fast, slow):
            if isinstance(result, Claims):
                stats["accepted"] += 1
                if reference is None:
                    fail(f"sessionmon accepts what PyJWT rejects at {where}")
                elif canonical(reference) != canonical(result.raw):
                    fail(f"accepted with other claims than PyJWT's at {where}")
                assert isinstance(result.exp, float) and math.isfinite(result.exp)
            else:
                stats[f"rejected:{result.reason.value}"] += 1
        if reference is not None:
            stats["pyjwt accepted"] += 1
        if len(failures) >= 20:
            break

    with capsys.disabled():
        print("differential fuzz outcomes:", dict(sorted(stats.items())))
    assert not failures, f"SESSIONMON_FUZZ_SEED={seed}\n" + "\n".join(failures)
    # Not vacuous: plenty of tokens pass, and every kind of rejection is exercised.
    total = sum(v for k, v in stats.items() if k != "pyjwt accepted")
    assert total == 2 * CASES
    assert stats["accepted"] > total * 0.15, stats
    for reason in (
        "malformed",
        "bad_signature",
        "expired",
        "not_yet_valid",
        "missing_claim",
        "wrong_type",
    ):
        assert stats[f"rejected:{reason}"] > 50, (reason, stats)


def test_the_generator_covers_what_the_issue_lists() -> None:
    """Surrogates, non-UTF-8 bytes, tampered signatures, null/float/bool/string/nested claims."""
    rng = random.Random(1)
    configs = make_configs(rng)
    seen: Counter[str] = Counter()
    checks: dict[str, Callable[[Any], bool]] = {
        "surrogate": lambda t: isinstance(t, str) and any(0xD800 <= ord(c) <= 0xDFFF for c in t),
        "non-utf8": lambda t: isinstance(t, bytes) and _not_utf8(t),
    }
    for _ in range(3000):
        cfg = rng.choice(configs)
        token, _, how = make_token(rng, cfg)
        for name, check in checks.items():
            seen[name] += check(token)
        seen["mutated"] += how.endswith("mutated")
        seen["other key"] += "other key" in how
    assert all(seen[k] > 5 for k in ("surrogate", "non-utf8", "mutated", "other key")), seen


def _not_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False
