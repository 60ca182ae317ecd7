"""Mint and verify JWTs with PyJWT. Every rejection carries a machine-readable reason.

Verification pins the one configured algorithm, picks the key by the header's ``kid`` (see
``core.keysource``: unknown or retired kid -> ``unknown_key``; no kid -> the current key), checks
expiry itself against the injectable clock (with the leeway), requires ``exp`` and a session id,
and checks ``typ``. Minting signs with the current key and sets ``kid`` in the header.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import secrets
import threading
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import jwt

from sessionmon.core.clock import SYSTEM_CLOCK, Clock
from sessionmon.core.jws_fast import HmacFastPath
from sessionmon.core.keyring import KeyRing, KeyState
from sessionmon.core.keys import KeyMaterial
from sessionmon.core.keysource import KeySource, StaticKeys

MAX_TOKEN_BYTES = 8 * 1024
VERIFIED_MEMO = 8192  # tokens verify_from_memory remembers, per codec

ACCESS = "access"
REFRESH = "refresh"


class Reason(StrEnum):
    """Why a token (or a request) was rejected."""

    MALFORMED = "malformed"
    BAD_SIGNATURE = "bad_signature"
    EXPIRED = "expired"
    WRONG_TYPE = "wrong_type"
    MISSING_CLAIM = "missing_claim"
    REVOKED = "revoked"
    SESSION_NOT_FOUND = "session_not_found"
    TOO_LARGE = "too_large"
    NOT_YET_VALID = "not_yet_valid"
    UNKNOWN_KEY = "unknown_key"  # the kid names no key of the set, or a retired one
    NO_TOKEN = "no_token"  # a request that presented no token at all (not a token rejection)
    # Refresh-token rotation (see core.auth): an old refresh token came back (the family is
    # revoked); a generation claim that is not one this session issued; one it has not reached.
    REFRESH_REUSED = "refresh_reused"
    BAD_GENERATION = "bad_generation"
    FUTURE_GENERATION = "future_generation"
    # Session lifetime policies ended the session at this refresh.
    IDLE_TIMEOUT = "idle_timeout"
    ABSOLUTE_TIMEOUT = "absolute_timeout"


class TokenRejected(Exception):
    """A token failed verification. ``claims`` is set when the signature was good."""

    def __init__(self, reason: Reason, detail: str = "", claims: Claims | None = None) -> None:
        self.reason = reason
        self.detail = detail
        self.claims = claims
        # The decoded payload when the signature verified (the token is ours, but e.g. of the
        # wrong type); None when it was never trusted.
        self.verified_payload: dict[str, Any] | None = None
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)


@dataclass(frozen=True)
class Claims:
    """The verified claims of a token, with the session id and token id normalised."""

    sid: str
    jti: str
    exp: float
    typ: str
    sub: str | None = None
    iat: float | None = None
    email: str | None = None
    name: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)
    gen: int | None = None  # a refresh token's generation (None: absent or not an integer >= 0)
    # The signing key's kid: set by ``mint`` (verification leaves it None; not compared).
    kid: str | None = field(default=None, compare=False)

    def public(self) -> dict[str, Any]:
        """The claims as decoded (safe to print: no signature, no token)."""
        return dict(self.raw)


def token_fingerprint(token: str) -> str:
    """SHA-256 of the token text: the id of a token that has no ``jti``."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def redact(token: str | None) -> str:
    """A short, safe label for a token in logs: never the whole token."""
    if not token:
        return "<none>"
    return f"{token[:10]}…({len(token)} chars)"


def new_id(nbytes: int = 16) -> str:
    """A random URL-safe id (128 bits by default), never starting with ``-``.

    An id such as ``-ojgY0...`` would be read as an option by a command line (``logout ID``).
    """
    while (value := secrets.token_urlsafe(nbytes)).startswith("-"):
        pass
    return value


class TokenCodec:
    """Mints and verifies access and refresh tokens for one algorithm and its key set (one
    ``KeyMaterial``: a set of that one current key)."""

    def __init__(
        self,
        keys: KeyMaterial | KeySource,
        *,
        leeway: float = 10.0,
        issuer: str | None = None,
        audience: str | None = None,
        require_typ: bool = True,
        clock: Clock = SYSTEM_CLOCK,
        fast_path: bool = True,
    ) -> None:
        self.key_source: KeySource = (
            StaticKeys(KeyRing.single(keys)) if isinstance(keys, KeyMaterial) else keys
        )
        self.algorithm = self.key_source.ring().algorithm
        self.leeway = float(leeway)
        self.issuer = issuer
        self.audience = audience
        self.require_typ = require_typ
        self.clock = clock
        self._jwt = jwt.PyJWT()
        # Only the configured algorithm is ever accepted: never "none", never a mix of HMAC
        # and public-key algorithms that would read the same key in two ways.
        self._algorithms = [self.algorithm]
        self._decode_options: dict[str, Any] = {
            "verify_signature": True,
            "verify_exp": False,  # checked below against the injectable clock
            "verify_nbf": False,
            "verify_iat": False,
            # Always on: with no audience configured, PyJWT rejects a token that names one.
            "verify_aud": True,
            "verify_iss": issuer is not None,
            "verify_sub": True,
            "verify_jti": True,
            "require": [],
        }
        # Accept-only shortcut for HMAC tokens (see jws_fast): anything it does not accept goes
        # through PyJWT below, so every rejection and its reason are PyJWT's. One per kid; only
        # the current key's is used.
        self._fast_on = fast_path
        self._fast_paths: dict[str, HmacFastPath | None] = {}
        # verify_from_memory: token -> (the fast path that accepted it, typ, claims, exp, the
        # latest of nbf / iat), oldest first.
        self._verified: dict[str, tuple[HmacFastPath, str, Claims, int, int]] = {}
        self._verified_lock = threading.Lock()

    @property
    def keys(self) -> KeyMaterial:
        """The current (signing) key."""
        material = self.key_source.ring().current.material
        assert material is not None  # KeyRing guarantees it
        return material

    @property
    def _fast(self) -> HmacFastPath | None:
        """The fast path of the current key (None when off or not HMAC)."""
        if not self._fast_on:
            return None
        current = self.key_source.ring().current
        try:
            return self._fast_paths[current.kid]
        except KeyError:
            pass
        assert current.material is not None
        fast = HmacFastPath.for_codec(
            self.algorithm,
            current.material.verifying_key,
            self.issuer,
            self.audience,
            kid=current.kid,
        )
        if len(self._fast_paths) >= 8:  # rotations: keep the map small
            self._fast_paths.clear()
        self._fast_paths[current.kid] = fast
        return fast

    def _verifying_key(self, header: dict[str, Any]) -> Any:
        """The key for this header's ``kid`` (no kid: the current key)."""
        kid = header.get("kid")
        ring = self.key_source.ring()
        if kid is None:
            return self.keys.verifying_key
        material = ring.verifying(kid)
        if material is None and ring.get(kid) is None:
            # Maybe another process rotated since we last looked: look again, now.
            ring = self.key_source.refresh()
            material = ring.verifying(kid)
        if material is None:
            known = ring.get(kid) is not None
            raise TokenRejected(
                Reason.UNKNOWN_KEY, "the key that signed it is retired" if known else "unknown kid"
            )
        return material.verifying_key

    # -- minting -------------------------------------------------------------------------------

    def mint(
        self,
        typ: str,
        *,
        sub: str,
        sid: str,
        ttl: float,
        email: str | None = None,
        name: str | None = None,
        now: float | None = None,
        exp: float | None = None,
        jti: str | None = None,
        gen: int | None = None,
        kid: str | None = None,
    ) -> tuple[str, Claims]:
        """Sign a token of type ``typ``; returns the token and its claims (``kid`` set).

        ``jti``, ``now`` and ``exp`` given: the same claims as a token minted before with them
        (a rotation's successor pair minted again; ``kid``: with the key that signed it then, if
        it is still the current or a previous key, else with the current key). ``gen``: the
        refresh token's generation."""
        ring = self.key_source.ring()
        current = ring.current
        if kid is not None and kid != current.kid:
            entry = ring.get(kid)
            if (
                entry is not None
                and entry.state is KeyState.PREVIOUS
                and entry.material is not None
                and entry.material.signing_key is not None
            ):
                current = entry
        assert current.material is not None
        if current.material.signing_key is None:
            from sessionmon.core.errors import ConfigError

            raise ConfigError(
                "cannot mint tokens: no private key (set SESSIONMON_PRIVATE_KEY_FILE)"
            )
        now = self.clock.now() if now is None else now
        iat = int(now)
        expires = int(now + ttl) if exp is None else int(exp)
        payload: dict[str, Any] = {
            "sub": sub,
            "sid": sid,
            "jti": jti or new_id(),
            "iat": iat,
            "exp": expires,
            "typ": typ,
        }
        if typ == ACCESS:
            payload["email"] = email
            payload["name"] = name
        if gen is not None:
            payload["gen"] = gen
        if self.issuer:
            payload["iss"] = self.issuer
        if self.audience:
            payload["aud"] = self.audience
        token = self._jwt.encode(
            payload,
            current.material.signing_key,
            algorithm=self.algorithm,
            headers={"kid": current.kid},
        )
        return token, self._claims(payload, token, typ, current.kid)

    # -- verification ----------------------------------------------------------------------------

    def decode(self, token: Any) -> dict[str, Any]:
        """Check size, header, signature, ``iss`` / ``aud`` / ``sub`` / ``jti``; return the raw
        payload (no time checks)."""
        if isinstance(token, bytes):
            try:
                token = token.decode("ascii")
            except UnicodeDecodeError:
                raise TokenRejected(Reason.MALFORMED, "token is not ASCII") from None
        if not isinstance(token, str) or not token:
            raise TokenRejected(Reason.MALFORMED, "no token")
        if len(token) > MAX_TOKEN_BYTES:
            raise TokenRejected(Reason.TOO_LARGE, f"token is over {MAX_TOKEN_BYTES} bytes")
        # A compact JWS is base64url and dots. Anything else (a lone surrogate from invalid UTF-8
        # on stdin, say) is malformed here, before a library tries to encode it.
        if not token.isascii():
            raise TokenRejected(Reason.MALFORMED, "token is not ASCII")
        if token.count(".") != 2:
            raise TokenRejected(Reason.MALFORMED, "not a JWS compact token")
        fast = self._fast
        if fast is not None:
            payload = fast.accept(token)
            if payload is not None:
                return payload
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            reason, detail = _unreadable(token)
            raise TokenRejected(reason, detail) from None
        alg = header.get("alg") if isinstance(header, dict) else None
        if alg != self.algorithm:
            raise TokenRejected(Reason.BAD_SIGNATURE, "algorithm not accepted")
        verifying_key = self._verifying_key(header)
        if verifying_key is None:
            from sessionmon.core.errors import ConfigError

            raise ConfigError(
                "cannot verify tokens: no public key (set SESSIONMON_PUBLIC_KEY_FILE)"
            )
        try:
            payload = self._jwt.decode(
                token,
                verifying_key,
                algorithms=self._algorithms,
                options=self._decode_options,  # type: ignore[arg-type]
                audience=self.audience,
                issuer=self.issuer,
            )
        except jwt.InvalidSignatureError:
            raise TokenRejected(Reason.BAD_SIGNATURE, "signature does not verify") from None
        except jwt.InvalidAlgorithmError:
            raise TokenRejected(Reason.BAD_SIGNATURE, "algorithm not accepted") from None
        except jwt.MissingRequiredClaimError as exc:
            raise TokenRejected(Reason.MISSING_CLAIM, f"missing claim {exc.claim}") from None
        except (jwt.InvalidAudienceError, jwt.InvalidIssuerError) as exc:
            raise TokenRejected(Reason.BAD_SIGNATURE, f"not issued for us ({exc})") from None
        except jwt.InvalidKeyError:
            raise TokenRejected(Reason.BAD_SIGNATURE, "key not usable for this token") from None
        except jwt.exceptions.InvalidSubjectError:
            raise TokenRejected(Reason.MALFORMED, "sub is not a string") from None
        except jwt.exceptions.InvalidJTIError:
            raise TokenRejected(Reason.MALFORMED, "jti is not a string") from None
        except (jwt.InvalidTokenError, ValueError, TypeError, json.JSONDecodeError):
            raise TokenRejected(Reason.MALFORMED, "payload is not a JSON object") from None
        if not isinstance(payload, dict):
            raise TokenRejected(Reason.MALFORMED, "payload is not a JSON object")
        return payload

    def verify(self, token: Any, expected_typ: str = ACCESS) -> Claims:
        """Verify ``token`` as a token of ``expected_typ``; raises ``TokenRejected``."""
        payload = self.decode(token)
        try:
            return self._check_claims(payload, token, expected_typ)
        except TokenRejected as exc:
            exc.verified_payload = payload  # the signature did verify
            raise

    def verify_from_memory(self, token: str, expected_typ: str = ACCESS) -> Claims | None:
        """``verify`` for a token the HMAC fast path accepts with the current key, while the key
        set needs no look at its files; ``None`` for anything else (a rejection, another key, a
        public-key algorithm, a key directory due for a look): then call ``verify``. Never reads
        a file (an async server may call it on its event loop).

        A token accepted here is remembered (the last ``VERIFIED_MEMO`` of them) with the fast
        path that accepted it: presented again while that is still the current key's, only its
        time claims are checked again (the signature and the other claims cannot have changed).
        """
        if self.key_source.due() or not self._fast_on:
            return None
        fast = self._fast
        if fast is None or not isinstance(token, str):
            return None
        known = self._verified.get(token)
        if known is not None:
            by, typ, claims, expires, not_before = known
            if by is fast and typ == expected_typ:
                now = self.clock.now()
                if expires > now - self.leeway and not_before <= now + self.leeway:
                    return claims
                return None
        if len(token) > MAX_TOKEN_BYTES or not token.isascii() or token.count(".") != 2:
            return None
        payload = fast.accept(token)
        if payload is None:
            return None
        try:
            claims = self._check_claims(payload, token, expected_typ)
        except TokenRejected:
            return None
        # The same numbers _check_claims compared (all present and finite, or it had raised).
        exp = _seconds(payload["exp"])
        latest_start = max(
            (_seconds(payload[c]) or 0 for c in ("nbf", "iat") if c in payload), default=0
        )
        if exp is not None:
            with self._verified_lock:
                verified = self._verified
                while len(verified) >= VERIFIED_MEMO:
                    del verified[next(iter(verified))]
                verified[token] = (fast, expected_typ, claims, exp, latest_start)
        return claims

    def _check_claims(self, payload: dict[str, Any], token: str, expected_typ: str) -> Claims:
        now = self.clock.now()

        exp = payload.get("exp")
        if exp is None:
            raise TokenRejected(Reason.MISSING_CLAIM, "missing claim exp")
        expires = _seconds(exp)
        if expires is None:
            raise TokenRejected(Reason.MALFORMED, "exp is not a number")
        sid = payload.get("sid", payload.get("sessionId"))
        if sid is None or sid == "":
            raise TokenRejected(Reason.MISSING_CLAIM, "missing claim sid")
        if not isinstance(sid, str):
            raise TokenRejected(Reason.MALFORMED, "sid is not a string")

        typ = payload.get("typ")
        if typ is None:
            if self.require_typ:
                raise TokenRejected(Reason.MISSING_CLAIM, "missing claim typ")
            typ = expected_typ  # interop: untyped tokens, as the Express design issues them
        elif typ != expected_typ:
            article = "an" if expected_typ == ACCESS else "a"
            raise TokenRejected(
                Reason.WRONG_TYPE, f"expected {article} {expected_typ} token, got {typ!r}"
            )

        # As PyJWT does: a present nbf / iat (even null) must be a number, compared as int().
        for claim in ("nbf", "iat"):
            if claim not in payload:
                continue
            value = _seconds(payload[claim])
            if value is None:
                raise TokenRejected(Reason.MALFORMED, f"{claim} is not a number")
            if value > now + self.leeway:
                raise TokenRejected(Reason.NOT_YET_VALID, f"{claim} is in the future")

        claims = self._claims(payload, token, typ)
        if expires <= now - self.leeway:
            raise TokenRejected(Reason.EXPIRED, "token has expired", claims)
        return claims

    def _claims(
        self, payload: dict[str, Any], token: str, typ: str, kid: str | None = None
    ) -> Claims:
        jti = payload.get("jti")
        if not isinstance(jti, str) or not jti:
            jti = token_fingerprint(token)
        sid = payload.get("sid", payload.get("sessionId"))
        sub = payload.get("sub")
        iat = payload.get("iat")
        gen = payload.get("gen")
        return Claims(
            sid=str(sid),
            jti=jti,
            exp=float(payload["exp"]),
            typ=typ,
            sub=None if sub is None else str(sub),
            iat=_finite(iat),
            email=payload.get("email") if isinstance(payload.get("email"), str) else None,
            name=payload.get("name") if isinstance(payload.get("name"), str) else None,
            raw=payload,
            gen=gen if type(gen) is int and gen >= 0 else None,
            kid=kid,
        )


def _finite(value: Any) -> float | None:
    """``value`` as a finite float, or None (not a number, NaN, infinite, or too large)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _seconds(value: Any) -> int | None:
    """A NumericDate claim as PyJWT compares it (``int(value)``, truncated), or None when it is not
    a finite number (null, bool, string, NaN, infinite or too large)."""
    number = _finite(value)
    return None if number is None else int(value)


_B64URL = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def _segment(segment: str) -> bytes | None:
    """A JWS segment decoded as PyJWT decodes it (base64url, at most 2 ``=``, canonical)."""
    stripped = segment.rstrip("=")
    padding = len(segment) - len(stripped)
    raw = stripped.encode("ascii")
    if padding > 2 or (padding and len(segment) % 4) or len(raw) % 4 == 1:
        return None
    if not _B64URL.issuperset(raw):
        return None
    data = base64.urlsafe_b64decode(raw + b"=" * (-len(raw) % 4))
    if base64.urlsafe_b64encode(data).rstrip(b"=") != raw:
        return None  # stray bits in the last character: not the canonical encoding
    return data


def _unreadable(token: str) -> tuple[Reason, str]:
    """Why PyJWT could not read ``token`` (ASCII, two dots), naming the segment at fault."""
    header_seg, payload_seg, signature_seg = token.split(".")
    header_data = _segment(header_seg)
    try:
        header = json.loads(header_data) if header_data is not None else None
    except (ValueError, RecursionError):
        header = None
    if not isinstance(header, dict):
        return Reason.MALFORMED, "unreadable header"
    if header.get("b64", True) is not False and _segment(payload_seg) is None:
        return Reason.MALFORMED, "unreadable payload"
    if _segment(signature_seg) is None:
        return Reason.BAD_SIGNATURE, "signature is not valid base64url"
    return Reason.MALFORMED, "unsupported header (kid, crit or b64)"
