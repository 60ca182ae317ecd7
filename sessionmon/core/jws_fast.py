"""A fast, accept-only path for HS256/384/512 compact tokens, in front of PyJWT.

Why: PyJWT 2.15 re-checks every base64url character in Python and re-prepares the HMAC key on every
call (together about half of a decode); ``TokenCodec`` also parsed the header a second time. For the
revocation check this dominated the request.

Safety model: this path can only *accept*. It returns the payload when the token is, beyond doubt,
one PyJWT would accept with the codec's options, and ``None`` for anything else, which then goes
through the full PyJWT path unchanged: every rejection, every reason and every detail still comes
from PyJWT. It accepts only when all of these hold:

- the token is three non-empty segments of the strict base64url alphabet (no padding, no other
  character), each canonical (re-encoding the decoded bytes gives the segment back, as PyJWT
  checks);
- the header decodes to a JSON object with exactly ``alg`` (equal to the pinned algorithm) and
  optionally ``typ`` and ``kid`` (no ``crit``, ``b64`` or anything else); a ``kid`` must be this
  fast path's own (a fast path is built per key, and the codec only uses the current key's, which
  is also the key for tokens without a kid); without a kid of its own, no ``kid`` is accepted;
- the HMAC over the exact signing input (``header.payload`` as sent), with the key prepared once by
  PyJWT's own ``prepare_key``, equals the signature (``hmac.compare_digest``);
- the payload is a JSON object whose ``sub`` and ``jti`` (when present) are strings, and whose
  ``iss`` / ``aud`` match the configured issuer / audience in the plain forms PyJWT accepts (with
  no audience configured, a payload with any ``aud`` is left to PyJWT).

The header cache (headers already seen to be acceptable) only learns a header from a token whose
signature verified, so unauthenticated input cannot fill it.

It is off when the key is shorter than PyJWT's recommended minimum (PyJWT then warns on every
decode, and that behaviour is kept) or when PyJWT refuses the key.
"""

from __future__ import annotations

import binascii
import hmac
import json
import re
from typing import Any

import jwt
from jwt.algorithms import HMACAlgorithm

_HASHES = {
    "HS256": HMACAlgorithm.SHA256,
    "HS384": HMACAlgorithm.SHA384,
    "HS512": HMACAlgorithm.SHA512,
}
_COMPACT = re.compile(r"([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)")
_HEADER_KEYS = frozenset({"alg", "typ", "kid"})
_MAX_KNOWN_HEADERS = 32


def _b64(segment: str) -> bytes | None:
    """Strict, canonical base64url decode of an alphabet-checked, unpadded segment."""
    if len(segment) % 4 == 1:
        return None
    raw = segment.encode("ascii")
    try:
        data = binascii.a2b_base64(
            raw.replace(b"-", b"+").replace(b"_", b"/") + b"=" * (-len(raw) % 4)
        )
    except binascii.Error:
        return None
    # Canonical form only: no stray bits in the last character (what PyJWT checks by re-encoding).
    if binascii.b2a_base64(data, newline=False).rstrip(b"=") != raw.replace(b"-", b"+").replace(
        b"_", b"/"
    ):
        return None
    return data


class HmacFastPath:
    """Accept-only verification of HMAC-signed compact JWS tokens (see the module docstring)."""

    def __init__(
        self,
        algorithm: str,
        key: Any,
        *,
        issuer: str | None = None,
        audience: str | None = None,
        kid: str | None = None,
    ) -> None:
        self.algorithm = algorithm
        self.kid = kid
        self.issuer = issuer
        self.audience = audience
        self._hash = _HASHES[algorithm]
        alg = HMACAlgorithm(self._hash)
        self._key: bytes = alg.prepare_key(key)  # raises InvalidKeyError like PyJWT would
        self.enabled = alg.check_key_length(self._key) is None
        self._known_headers: set[str] = set()

    @classmethod
    def for_codec(
        cls,
        algorithm: str,
        key: Any,
        issuer: str | None,
        audience: str | None,
        *,
        kid: str | None = None,
    ) -> HmacFastPath | None:
        """A fast path for this configuration, or None when it does not apply."""
        if algorithm not in _HASHES or key is None or audience == "":
            return None
        try:
            fast = cls(algorithm, key, issuer=issuer, audience=audience, kid=kid)
        except (jwt.InvalidKeyError, TypeError, ValueError):
            return None
        return fast if fast.enabled else None

    def _header_ok(self, segment: str) -> bool:
        if segment in self._known_headers:
            return True
        data = _b64(segment)
        if data is None:
            return False
        try:
            header = json.loads(data)
        except (ValueError, RecursionError):
            return False
        return (
            isinstance(header, dict)
            and header.get("alg") == self.algorithm
            and header.keys() <= _HEADER_KEYS
            and ("kid" not in header or (self.kid is not None and header["kid"] == self.kid))
        )

    def accept(self, token: str) -> dict[str, Any] | None:
        """The payload if ``token`` certainly verifies; None means "ask PyJWT"."""
        m = _COMPACT.fullmatch(token)
        if m is None:
            return None
        header_seg, payload_seg, sig_seg = m.groups()
        if not self._header_ok(header_seg):
            return None
        signature = _b64(sig_seg)
        if signature is None:
            return None
        signing_input = token[: m.end(2)].encode("ascii")
        expected = hmac.new(self._key, signing_input, self._hash).digest()
        if not hmac.compare_digest(expected, signature):
            return None
        # Only a header that came with a good signature is remembered: unauthenticated tokens
        # must not be able to fill (or steer) the cache.
        if header_seg not in self._known_headers and len(self._known_headers) < _MAX_KNOWN_HEADERS:
            self._known_headers.add(header_seg)
        data = _b64(payload_seg)
        if data is None:
            return None
        try:
            payload = json.loads(data)
        except (ValueError, RecursionError):
            return None
        if not isinstance(payload, dict):
            return None
        if "sub" in payload and not isinstance(payload["sub"], str):
            return None
        if "jti" in payload and not isinstance(payload["jti"], str):
            return None
        if self.issuer is not None and payload.get("iss") != self.issuer:
            return None
        if self.audience is None:
            if "aud" in payload:
                return None  # PyJWT decides (it rejects any non-empty audience)
        else:
            aud = payload.get("aud")
            if not (
                aud == self.audience
                or (
                    isinstance(aud, list)
                    and all(isinstance(a, str) for a in aud)
                    and self.audience in aud
                )
            ):
                return None
        return payload
