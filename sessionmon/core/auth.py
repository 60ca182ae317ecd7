"""The auth flow: login, authenticate (with silent refresh), logout and force-logout.

Refresh-token rotation (``SessionPolicy.rotate_refresh``, on by default): every silent refresh
issues a new refresh token with the access token. The session id is the token family; each refresh
token carries its generation (``gen``), and the session row holds the live generation and refresh
``jti``. Moving on is one compare-and-set in the store (``rotate_refresh``), so of many concurrent
requests with the same token exactly one rotates; the others, and any request that presents the
immediately previous token within ``reuse_grace`` seconds of the rotation, get the same successor
pair minted again from the row (ids, ``iat`` and expiries; tokens are never stored). Any other old
token is theft: the whole family is revoked (``reuse_detected`` in the audit) and the request gets
``refresh_reused``, as does every later request with a token of that session.

Composes the token codec, the SQLite store and the Redis blacklist. Logout order is always:
blacklist every known token and the session id in one EVAL (TTLs read back), then delete the
session rows and write the audit rows in one SQLite transaction. A Redis failure deletes nothing;
a SQLite failure after the blacklist leaves the tokens revoked and is reported as a partial outcome.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

from sessionmon.core.blacklist import (
    KIND_ACCESS,
    KIND_REFRESH,
    KIND_SESSION,
    Blacklist,
    RevokeRequest,
)
from sessionmon.core.clock import SYSTEM_CLOCK, Clock
from sessionmon.core.errors import (
    DatabaseError,
    RedisMayEvict,
    RedisUnavailable,
    RevocationIncomplete,
    RevocationNotDurable,
    TooManySessions,
)
from sessionmon.core.events import Event, EventKind, EventSink, NullSink
from sessionmon.core.last_seen import DeferredTouches
from sessionmon.core.policy import Ending, OnMaxSessions, SessionPolicy
from sessionmon.core.revocation_cache import RevocationCheck
from sessionmon.core.store import AuditRow, Session, SessionStore
from sessionmon.core.store.base import Rotation
from sessionmon.core.tokens import (
    ACCESS,
    REFRESH,
    Claims,
    Reason,
    TokenCodec,
    TokenRejected,
    new_id,
)

# Extra life for a session key beyond the longest token: covers an access token minted by a
# silent refresh that races the logout (its clock reading comes a little later than ours).
RACE_MARGIN = 30.0
TOUCH_PAUSE = 10.0  # seconds without last-seen updates after the database failed

# Audit actions and actors of what the core does on its own.
REUSE_DETECTED = "reuse_detected"
SESSION_ENDED = "session_ended"
SYSTEM_ACTOR = "system"
_ENDING_REASONS = {Ending.IDLE: Reason.IDLE_TIMEOUT, Ending.ABSOLUTE: Reason.ABSOLUTE_TIMEOUT}


@dataclass(frozen=True)
class User:
    """The authenticated user (the original design's ``DecodeUser``)."""

    session_id: str
    email: str | None
    name: str | None
    user_id: str | None = None
    valid: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "email": self.email,
            "name": self.name,
            "user_id": self.user_id,
            "valid": self.valid,
        }


@dataclass(frozen=True)
class AuthResult:
    """What ``authenticate`` decided: a user or a reason; new tokens after a refresh (the
    refresh token too when it was rotated, with its expiry)."""

    user: User | None = None
    reason: Reason | None = None
    detail: str = ""
    new_access_token: str | None = None
    claims: Claims | None = None
    new_refresh_token: str | None = None
    refresh_exp: float | None = None

    @property
    def ok(self) -> bool:
        return self.user is not None

    @property
    def refreshed(self) -> bool:
        return self.new_access_token is not None

    @classmethod
    def reject(cls, exc: TokenRejected) -> AuthResult:
        return cls(reason=exc.reason, detail=exc.detail, claims=exc.claims)


class LogoutOutcome(Enum):
    """How a (force-)logout ended; the value is what ``--json`` and the audit log say."""

    OK = "ok"
    NOT_FOUND = "not_found"  # nothing to do: no such session (or user)
    PARTIAL = "partial"  # some of the sessions asked for did not exist; the rest are done
    REDIS_UNAVAILABLE = "failed: redis unavailable"  # nothing revoked, nothing deleted
    REDIS_MAY_EVICT = "failed: redis may evict"  # refused: nothing revoked, nothing deleted
    NOT_DURABLE = "failed: not durable"  # written on the master only; nothing deleted
    # A Redis Cluster node did not take some sessions (``failed``): those are neither revoked
    # nor deleted; the others are done.
    REDIS_PARTIAL = "failed: redis unavailable for some sessions"
    REVOKED_NOT_DELETED = "revoked_not_deleted"  # tokens blacklisted, rows not deleted
    DATABASE_UNAVAILABLE = "failed: database unavailable"  # nothing read, nothing revoked
    # A user logout whose session row was already gone: the presented tokens and the session id
    # are blacklisted all the same (there was no row to delete).
    NO_ROW = "revoked_no_row"


# The audit outcome of a revoke done on a Redis that may evict it (--allow-evicting-redis).
OK_MAY_EVICT = "ok: redis may evict (allowed)"


@dataclass
class LogoutResult:
    """What one (force-)logout did, session by session (``error`` says why it is not done)."""

    action: str
    requested: list[str]
    found: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    revoked: dict[str, int] = field(default_factory=dict)  # key -> TTL read back
    deleted: int = 0
    outcome: LogoutOutcome = LogoutOutcome.OK
    error: str | None = None
    # NOT_DURABLE: the keys written on the master that too few replicas acknowledged.
    not_durable: dict[str, int] = field(default_factory=dict)
    warning: str | None = None  # e.g. the revocation may be evicted (allowed by the operator)
    failed: list[str] = field(default_factory=list)  # REDIS_PARTIAL: the sessions not revoked

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "requested": self.requested,
            "found": self.found,
            "missing": self.missing,
            "revoked": [{"key": k, "ttl": t} for k, t in self.revoked.items()],
            "deleted": self.deleted,
            "outcome": self.outcome.value,
            "error": self.error,
            "not_durable": [{"key": k, "ttl": t} for k, t in self.not_durable.items()],
            "warning": self.warning,
            "failed": self.failed,
        }


@dataclass
class RevokedSessions:
    """Sessions ``Auth.revoke_for_ending`` blacklisted, waiting for ``Auth.delete_revoked``."""

    sessions: list[Session]
    action: str
    actor: str
    reason: str | None
    at: float
    result: LogoutResult
    audit: list[AuditRow] = field(default_factory=list)  # one per session, with its keys

    @property
    def deletable(self) -> bool:
        """Blacklisted (every session left in it fully), so its rows may be deleted."""
        return self.result.ok or self.result.outcome is LogoutOutcome.REDIS_PARTIAL


class LogoutFailed(RedisUnavailable):
    """Redis failed before anything was revoked, so nothing was deleted either.

    ``result`` says what was requested, found and missing (``outcome`` ``failed: ...``).
    """

    def __init__(self, result: LogoutResult) -> None:
        super().__init__(result.error or result.outcome)
        self.result = result


class Auth:
    """The auth core a backend uses: one instance per process is enough (thread-safe)."""

    def __init__(
        self,
        store: SessionStore,
        blacklist: Blacklist,
        codec: TokenCodec | Callable[[], TokenCodec],
        *,
        access_ttl: float = 900.0,
        refresh_ttl: float = 7 * 86400.0,
        clock: Clock = SYSTEM_CLOCK,
        touch_interval: float = 15.0,
        source: str | None = None,
        revocation_cache: RevocationCheck | None = None,
        policy: SessionPolicy | None = None,
        events: EventSink | None = None,
        touches: DeferredTouches | None = None,
    ) -> None:
        self.store = store
        # The activity feed (fire and forget: ``emit`` never blocks or raises).
        self.events: EventSink = events if events is not None else NullSink()
        self.policy = policy or SessionPolicy()
        self.blacklist = blacklist
        # A callable loads the keys on first use: logging out needs no key, minting does.
        self._codec = codec if isinstance(codec, TokenCodec) else None
        self._codec_factory = None if isinstance(codec, TokenCodec) else codec
        self.access_ttl = float(access_ttl)
        self.refresh_ttl = float(refresh_ttl)
        self.clock = clock
        self.touch_interval = touch_interval
        self.source = source
        # Off by default: every check is one EXISTS. A CachedRevocations answers from memory.
        self.revocation_cache = revocation_cache
        self._revocations: RevocationCheck = (
            blacklist if revocation_cache is None else revocation_cache
        )
        # Off by default: a due last-seen update is written in the request. With a
        # DeferredTouches it is noted and written in the background (a web server's choice).
        self.touches = touches
        self._touched: OrderedDict[str, float] = OrderedDict()
        self._touch_lock = threading.Lock()
        self._touch_paused_until = 0.0  # monotonic; see _pause_touches

    @property
    def codec(self) -> TokenCodec:
        if self._codec is None:
            assert self._codec_factory is not None
            self._codec = self._codec_factory()
        return self._codec

    @codec.setter
    def codec(self, value: TokenCodec) -> None:
        self._codec = value

    # -- login -------------------------------------------------------------------------------

    def login(
        self,
        user_id: str,
        email: str | None,
        name: str | None,
        ip: str | None = None,
        user_agent: str | None = None,
    ) -> tuple[Session, str, str]:
        """Create a session; returns it with a new access token and refresh token.

        Raises ``TooManySessions`` when the user is at ``max_sessions_per_user`` and the policy
        denies; with ``evict-oldest`` the oldest sessions are revoked first (``RedisUnavailable``:
        nothing was evicted or created)."""
        now = self.clock.now()
        sid = new_id()
        email = email.strip().lower() if email else email
        policy = self.policy
        access, a = self.codec.mint(
            ACCESS,
            sub=str(user_id),
            sid=sid,
            ttl=self.access_ttl,
            email=email,
            name=name,
            now=now,
            exp=policy.cap(now + self.access_ttl, now),
        )
        refresh, r = self.codec.mint(
            REFRESH,
            sub=str(user_id),
            sid=sid,
            ttl=self.refresh_ttl,
            now=now,
            exp=policy.cap(now + self.refresh_ttl, now),
            gen=0 if policy.rotate_refresh else None,
        )
        session = Session(
            id=sid,
            user_id=str(user_id),
            email=email,
            name=name,
            created_at=now,
            last_seen_at=now,
            ip=ip,
            user_agent=user_agent[:512] if user_agent else user_agent,
            access_jti=a.jti,
            access_exp=a.exp,
            refresh_jti=r.jti,
            refresh_exp=r.exp,
            refresh_count=0,
            source=self.source,
            access_kid=a.kid,
            refresh_kid=r.kid,
        )
        limit = policy.max_sessions_per_user
        if limit is None:
            self.store.insert_session(session)
            self._emit_login(session)
            return session, access, refresh
        evict = self._evict if policy.on_max_sessions is OnMaxSessions.EVICT_OLDEST else None
        done = self.store.insert_session_limited(session, limit=limit, now=now, evict=evict)
        if not done.inserted:
            raise TooManySessions(session.user_id, limit)
        for victim in done.evicted:
            self._emit(
                EventKind.SESSION_ENDED,
                victim.id,
                victim.user_id,
                victim.email,
                reason=Ending.EVICTED.value,
                actor=SYSTEM_ACTOR,
            )
        self._emit_login(session)
        return session, access, refresh

    def _evict(self, victims: list[Session]) -> list[AuditRow]:
        """Revoke the sessions a login evicts (called inside the store's per-user transaction,
        which deletes them and writes these audit rows); raises ``RedisUnavailable``."""
        now = self.clock.now()
        requests = [q for s in victims for q in self._revoke_requests(s, now)]
        reason = Ending.EVICTED.value
        revoked = self.blacklist.revoke(requests, reason=reason, actor=SYSTEM_ACTOR)
        return [
            AuditRow(
                at=now,
                action=SESSION_ENDED,
                actor=SYSTEM_ACTOR,
                reason=reason,
                session_id=s.id,
                user_id=s.user_id,
                email=s.email,
                revoked=[k for k in self._session_keys(s, now) if k in revoked],
            )
            for s in victims
        ]

    # -- authenticate ------------------------------------------------------------------------

    def authenticate(
        self,
        access_token: str | None,
        refresh_token: str | None = None,
        *,
        ip: str | None = None,
        user_agent: str | None = None,
    ) -> AuthResult:
        """Verify the access token (and the blacklist); silently refresh when it has expired.
        A refresh or a rejection goes to the activity feed (see ``_authenticate``)."""
        result = self._authenticate(access_token, refresh_token, ip=ip, user_agent=user_agent)
        self._emit_result(result, ip)
        return result

    def authenticate_from_memory(self, access_token: str | None) -> AuthResult | None:
        """What ``authenticate`` answers for a valid access token, when everything it needs is in
        memory: the token verifies without a file read, the revocation cache says from memory
        (confirmed within its ``max_staleness``) that neither the token nor its session is
        revoked, and no last-seen update is due (or one is, and ``touches`` defers it).
        ``None`` otherwise (no cache, a miss, a revoked or bad token, a refresh): call
        ``authenticate``. Never waits on Redis, the database or a
        file, and never raises: an async server calls it on its event loop and only the rest go
        to a worker thread."""
        from_memory = getattr(self.revocation_cache, "from_memory", None)
        codec = self._codec
        if from_memory is None or codec is None or not access_token:
            return None
        claims = codec.verify_from_memory(access_token, ACCESS)
        if claims is None or from_memory(claims.jti, claims.sid) is not False:
            return None
        if self._touch_due(claims.sid):
            if self.touches is None:
                return None
            self._maybe_touch(claims.sid)  # noted; written in the background
        return AuthResult(user=_user(claims), claims=claims)

    def refresh(
        self, refresh_token: str, *, ip: str | None = None, user_agent: str | None = None
    ) -> AuthResult:
        """Silent refresh (see ``_refresh``); the outcome goes to the activity feed."""
        result = self._refresh(refresh_token, ip=ip, user_agent=user_agent)
        self._emit_result(result, ip)
        return result

    def _authenticate(
        self,
        access_token: str | None,
        refresh_token: str | None = None,
        *,
        ip: str | None = None,
        user_agent: str | None = None,
    ) -> AuthResult:
        """Verify the access token (and the blacklist); silently refresh when it has expired.

        Never raises for a bad token: the result carries the reason. Raises ``RedisUnavailable``
        (the caller decides whether to fail closed) and ``DatabaseError``. ``ip`` and
        ``user_agent`` describe the request (recorded with a rotation and a reuse detection).
        """
        claims: Claims | None = None
        rejection: TokenRejected | None = None
        if access_token:
            try:
                claims = self.codec.verify(access_token, ACCESS)
            except TokenRejected as exc:
                rejection = exc
        if claims is not None:
            if self._revocations.is_revoked(claims.jti, claims.sid):
                return self._revoked(claims, "token or session revoked")
            self._maybe_touch(claims.sid)
            return AuthResult(user=_user(claims), claims=claims)

        # Only an expired (or absent) access token may be replaced by a silent refresh.
        if rejection is not None and rejection.reason is not Reason.EXPIRED:
            return AuthResult.reject(rejection)
        if not refresh_token:
            if rejection is not None:
                return AuthResult.reject(rejection)
            return AuthResult(reason=Reason.NO_TOKEN, detail="no token presented")
        try:
            return self._refresh(refresh_token, ip=ip, user_agent=user_agent)
        except DatabaseError:
            self._pause_touches()
            raise

    def _refresh(
        self, refresh_token: str, *, ip: str | None = None, user_agent: str | None = None
    ) -> AuthResult:
        """Silent refresh: valid, unrevoked refresh token of a live session -> new access token
        (and, with rotation, a new refresh token). Raises ``RedisUnavailable`` before anything
        is rotated when the blacklist cannot be checked."""
        try:
            r = self.codec.verify(refresh_token, REFRESH)
        except TokenRejected as exc:
            return AuthResult.reject(exc)
        if "gen" in r.raw and r.gen is None:
            return AuthResult(
                reason=Reason.BAD_GENERATION,
                detail="generation claim is not a non-negative integer",
                claims=r,
            )
        if self._revocations.is_revoked(r.jti, r.sid):
            return self._revoked(r, "refresh token or session revoked")
        session = self.store.get_session(r.sid)
        if session is None:
            return _gone(r)
        now = self.clock.now()
        ending = self.policy.ending(session, now)
        if ending is not None:
            return self._end_by_policy(session, ending, r)
        if self.policy.rotate_refresh:
            return self._rotate(session, r, now, ip, user_agent)
        if session.refresh_jti and session.refresh_jti != r.jti:
            return AuthResult(reason=Reason.REVOKED, detail="refresh token was replaced", claims=r)
        token, a = self.codec.mint(
            ACCESS,
            sub=session.user_id,
            sid=session.id,
            ttl=self.access_ttl,
            email=session.email,
            name=session.name,
            now=now,
            exp=self.policy.cap(now + self.access_ttl, session.created_at),
        )
        if not self.store.update_access(session.id, a.jti, a.exp, now, a.kid):
            # Deleted while we minted (a force-logout won the race): the token is never handed out.
            return _gone(r)
        return AuthResult(user=_user(a), new_access_token=token, claims=a)

    # -- rotation ------------------------------------------------------------------------------

    def _rotate(
        self, session: Session, r: Claims, now: float, ip: str | None, user_agent: str | None
    ) -> AuthResult:
        """Rotate on the live token (one compare-and-set); anything else is decided on the row
        as it is after that."""
        gen = r.gen or 0  # a token minted before rotation (or with it off) is generation 0
        if gen == session.generation and r.jti == session.refresh_jti:
            cap = self.policy.cap
            rotation = Rotation(
                generation=gen,
                presented_jti=r.jti,
                access_jti=new_id(),
                access_exp=float(int(cap(now + self.access_ttl, session.created_at))),
                refresh_jti=new_id(),
                # The family's expiry: rotation never extends a session's life (as without it).
                refresh_exp=session.refresh_exp if session.refresh_exp is not None else r.exp,
                at=now,
                ip=ip,
                user_agent=user_agent[:512] if user_agent else user_agent,
            )
            # Minted before the compare-and-set, so the row records the kids that signed them.
            result, refresh_kid = self._mint_pair(session, rotation)
            assert result.claims is not None
            rotation = replace(rotation, access_kid=result.claims.kid, refresh_kid=refresh_kid)
            if self.store.rotate_refresh(session.id, rotation):
                return result
            # Another request rotated first (or the session ended): read the row as it is now.
            fresh = self.store.get_session(session.id)
            if fresh is None:
                return _gone(r)
            session = fresh
        return self._not_live(session, r, gen, now, ip, user_agent)

    def _not_live(
        self,
        session: Session,
        r: Claims,
        gen: int,
        now: float,
        ip: str | None,
        user_agent: str | None,
    ) -> AuthResult:
        live = session.generation
        if gen == live and r.jti == session.refresh_jti:  # the compare-and-set did not apply
            return AuthResult(reason=Reason.REVOKED, detail="rotation did not apply", claims=r)
        if gen > live:
            return AuthResult(
                reason=Reason.FUTURE_GENERATION,
                detail=f"generation {gen} presented, the session is at {live}",
                claims=r,
            )
        expected = {live: session.refresh_jti, live - 1: session.prev_refresh_jti}
        if gen in expected and r.jti != expected[gen]:
            return AuthResult(
                reason=Reason.BAD_GENERATION,
                detail=f"not the refresh token issued for generation {gen}",
                claims=r,
            )
        if (
            gen == live - 1
            and session.rotated_at is not None
            and now - session.rotated_at < self.policy.reuse_grace
        ):
            # A concurrent request (another tab) with the token just replaced: the same pair.
            return self._successor(session, _rotation_of(session))
        return self._reuse_detected(session, r, gen, now, ip, user_agent)

    def _successor(self, session: Session, rotation: Rotation) -> AuthResult:
        """Mint the successor pair ``rotation`` describes (the same claims every time)."""
        return self._mint_pair(session, rotation)[0]

    def _mint_pair(self, session: Session, rotation: Rotation) -> tuple[AuthResult, str | None]:
        """The successor pair ``rotation`` describes, and the refresh token's kid."""
        access, a = self.codec.mint(
            ACCESS,
            sub=session.user_id,
            sid=session.id,
            ttl=self.access_ttl,
            email=session.email,
            name=session.name,
            now=rotation.at,
            exp=rotation.access_exp,
            jti=rotation.access_jti,
            kid=rotation.access_kid,
        )
        refresh, r = self.codec.mint(
            REFRESH,
            sub=session.user_id,
            sid=session.id,
            ttl=self.refresh_ttl,
            now=rotation.at,
            exp=rotation.refresh_exp,
            jti=rotation.refresh_jti,
            gen=rotation.generation + 1,
            kid=rotation.refresh_kid,
        )
        result = AuthResult(
            user=_user(a),
            new_access_token=access,
            claims=a,
            new_refresh_token=refresh,
            refresh_exp=rotation.refresh_exp,
        )
        return result, r.kid

    def _reuse_detected(
        self,
        session: Session,
        r: Claims,
        gen: int,
        now: float,
        ip: str | None,
        user_agent: str | None,
    ) -> AuthResult:
        """An old refresh token came back: revoke the whole family (blacklist first, then delete
        the row and write ``reuse_detected``). Raises ``LogoutFailed`` when Redis did not take
        the revocation (then nothing was deleted and the caller answers 503)."""
        rotated = session.rotated_at is not None
        detail = {
            "presented_generation": gen,
            "live_generation": session.generation,
            "legitimate": {
                "at": session.rotated_at if rotated else session.created_at,
                "ip": session.rotated_ip if rotated else session.ip,
                "user_agent": session.rotated_ua if rotated else session.user_agent,
            },
            "reuse": {"at": now, "ip": ip, "user_agent": user_agent[:512] if user_agent else None},
        }
        self._revoke_sessions(
            [session.id],
            REUSE_DETECTED,
            SYSTEM_ACTOR,
            Reason.REFRESH_REUSED.value,
            extra=[r],
            detail=detail,
        )
        return AuthResult(
            reason=Reason.REFRESH_REUSED,
            detail=f"refresh token of generation {gen} reused (live: {session.generation}); "
            "session revoked",
            claims=r,
        )

    def _end_by_policy(self, session: Session, ending: Ending, r: Claims) -> AuthResult:
        """Idle or absolute timeout reached: revoke and delete the session, audited."""
        self._revoke_sessions([session.id], SESSION_ENDED, SYSTEM_ACTOR, ending.value, extra=[r])
        return AuthResult(
            reason=_ENDING_REASONS[ending], detail=f"session ended ({ending.value})", claims=r
        )

    def _revoked(self, claims: Claims, detail: str) -> AuthResult:
        """``revoked``, or ``refresh_reused`` when reuse detection revoked the session (one
        more read, on this rejection path only; best effort)."""
        reason = Reason.REVOKED
        with contextlib.suppress(RedisUnavailable):
            entries = self.blacklist.entries_for_session(claims.sid)
            if any(e.kind == KIND_SESSION and e.reason == REUSE_REASON for e in entries):
                reason = Reason.REFRESH_REUSED
                detail = "session revoked: a refresh token was reused"
        return AuthResult(reason=reason, detail=detail, claims=claims)

    def _maybe_touch(self, sid: str) -> None:
        """Update last_seen_at at most once per ``touch_interval`` per session (best effort;
        with ``touches``, noted and written in the background)."""
        if self.touch_interval < 0:
            return
        now = self.clock.now()
        with self._touch_lock:
            last = self._touched.get(sid)
            if last is not None and now - last < self.touch_interval:
                return
            self._touched[sid] = now
            self._touched.move_to_end(sid)
            while len(self._touched) > 100_000:
                self._touched.popitem(last=False)
        if self.touches is not None:
            self.touches.note(sid, now)
            return
        if time.monotonic() < self._touch_paused_until:
            return
        # last_seen is best effort: never fail a request over it.
        try:
            self.store.touch(sid, now)
        except DatabaseError:
            self._pause_touches()

    def _touch_due(self, sid: str) -> bool:
        """True when ``_maybe_touch(sid)`` would write last_seen_at now."""
        if self.touch_interval < 0:
            return False
        last = self._touched.get(sid)
        return last is None or self.clock.now() - last >= self.touch_interval

    def _pause_touches(self) -> None:
        """The database failed: requests with a valid access token stop waiting on it for their
        last-seen update for ``TOUCH_PAUSE`` seconds (only the first one waited its timeout)."""
        self._touch_paused_until = time.monotonic() + TOUCH_PAUSE

    # -- logout -------------------------------------------------------------------------------

    def logout(
        self,
        session_id: str,
        actor: str = "user",
        reason: str | None = "logout",
        *,
        tokens: Sequence[Claims] = (),
    ) -> LogoutResult:
        """The user logs out: blacklist the session's tokens, delete it.

        ``tokens`` are the verified claims of the tokens presented with the request (see
        :meth:`presented_claims`). They are blacklisted whatever the session store says, and so
        is the session id when one of them names it: a row that is gone (purged, or a store
        restored from an older backup) must not leave the presented tokens working.
        """
        return self._revoke_sessions([session_id], "logout", actor, reason, extra=tokens)

    def presented_claims(self, access_token: str | None, refresh_token: str | None) -> list[Claims]:
        """The claims of the presented tokens whose signature verifies and that have not expired
        (revoked or not: a logout blacklists them again). Never raises for a bad token."""
        out: list[Claims] = []
        for token, typ in ((access_token, ACCESS), (refresh_token, REFRESH)):
            if not token:
                continue
            try:
                out.append(self.codec.verify(token, typ))
            except TokenRejected:
                continue  # not ours, or expired: nothing a blacklist entry would add
        return out

    def force_logout(self, session_id: str, actor: str, reason: str | None = None) -> LogoutResult:
        """An operator ends one session."""
        return self._revoke_sessions([session_id], "force_logout", actor, reason)

    def force_logout_many(
        self, session_ids: Sequence[str], actor: str, reason: str | None = None
    ) -> LogoutResult:
        """An operator ends several sessions (one EVAL, one SQLite transaction)."""
        return self._revoke_sessions(list(session_ids), "force_logout", actor, reason)

    def end_sessions(
        self, sessions: Sequence[Session], action: str, actor: str, reason: str | None = None
    ) -> LogoutResult:
        """An operator ends exactly these sessions, as just read from the store (revoke by
        query): one blacklist write, one delete with the audit rows."""
        revoked = self.revoke_for_ending(sessions, action, actor, reason)
        return self.delete_revoked(revoked) if revoked.deletable else revoked.result

    def revoke_for_ending(
        self, sessions: Sequence[Session], action: str, actor: str, reason: str | None = None
    ) -> RevokedSessions:
        """The first half of ``end_sessions``: blacklist these sessions (one write), deleting
        nothing. Raises ``LogoutFailed`` when Redis did not take them (nothing written); only a
        ``deletable`` result may be deleted (not one that is not durable). When a cluster node
        did not take some sessions (``REDIS_PARTIAL``, audited as failed), only the sessions
        fully written are left in it. ``delete_revoked`` is the second half;
        a bulk job runs it for one batch while it revokes the next."""
        now = self.clock.now()
        result = LogoutResult(action=action, requested=[s.id for s in sessions])
        result.found = list(result.requested)
        requests: list[RevokeRequest] = []
        keys_by_session: dict[str, list[str]] = {}
        for s in sessions:
            reqs = self._revoke_requests(s, now)
            keys_by_session[s.id] = [self.blacklist.key_for(q) for q in reqs]
            requests += reqs
        revoked = RevokedSessions(list(sessions), action, actor, reason, now, result)

        def audit_row(s: Session, keys: list[str], outcome: str) -> AuditRow:
            return _session_audit(s, now, action, actor, reason, revoked=keys, outcome=outcome)

        if not requests:
            return revoked
        try:
            result.revoked = self.blacklist.revoke(requests, reason=reason, actor=actor)
        except RevocationIncomplete as exc:
            # Each session's keys are all written or none (as in ``_revoke_sessions``).
            written = exc.ttls

            def complete(sid: str) -> bool:
                keys = keys_by_session[sid]
                return bool(keys) and all(k in written for k in keys)

            failed = [s for s in sessions if not complete(s.id)]
            self._audit_safely(
                [audit_row(s, [], LogoutOutcome.REDIS_PARTIAL.value) for s in failed]
            )
            sessions = [s for s in sessions if complete(s.id)]
            revoked.sessions = list(sessions)
            result.found = [s.id for s in sessions]
            result.revoked = dict(written)
            result.failed = sorted(s.id for s in failed)
            result.outcome = LogoutOutcome.REDIS_PARTIAL
            result.error = (
                f"{len(result.failed)} session(s) NOT revoked (nothing written for them, not "
                f"deleted): {exc.cause}"
            )
        except RevocationNotDurable as exc:
            result.outcome = LogoutOutcome.NOT_DURABLE
            result.not_durable = exc.ttls
            result.error = f"the revocation is {exc}; sessions NOT deleted (run it again)"
            outcome = f"{result.outcome.value} ({exc.acked}/{exc.wanted} replicas)"
            self._audit_safely(
                [
                    audit_row(s, [k for k in keys_by_session[s.id] if k in exc.ttls], outcome)
                    for s in sessions
                ]
            )
            return revoked
        except RedisUnavailable as exc:
            may_evict = isinstance(exc, RedisMayEvict)
            result.outcome = (
                LogoutOutcome.REDIS_MAY_EVICT if may_evict else LogoutOutcome.REDIS_UNAVAILABLE
            )
            result.error = f"nothing was revoked or deleted: {exc}"
            self._audit_safely([audit_row(s, [], result.outcome.value) for s in sessions])
            raise LogoutFailed(result) from None
        result.warning = self._eviction_note()
        ok = OK_MAY_EVICT if result.warning else LogoutOutcome.OK.value
        written = result.revoked
        revoked.audit = [
            audit_row(s, [k for k in keys_by_session[s.id] if k in written], ok) for s in sessions
        ]
        return revoked

    def delete_revoked(self, revoked: RevokedSessions) -> LogoutResult:
        """The second half of ``end_sessions``: delete the sessions ``revoke_for_ending``
        blacklisted (its result ok), with their audit and history rows, in one transaction."""
        result = revoked.result
        if not revoked.deletable:
            raise ValueError("delete_revoked: the revocation did not succeed")
        try:
            result.deleted = self.store.delete_sessions_with_audit(result.found, revoked.audit)
        except DatabaseError as exc:
            result.outcome = LogoutOutcome.REVOKED_NOT_DELETED
            result.error = f"tokens are revoked but the session rows were not deleted: {exc}"
        self._emit_ended(revoked.action, revoked.actor, revoked.reason, revoked.sessions, [], {})
        return result

    def force_logout_user(self, user: str, actor: str, reason: str | None = None) -> LogoutResult:
        """An operator ends every session of a user (by user id or email)."""
        sessions = self.store.sessions_for_user(user)
        result = self._revoke_sessions(
            [s.id for s in sessions], "force_logout_user", actor, reason, sessions=sessions
        )
        if not sessions:
            result.requested = [user]
            result.missing = [user]
            result.outcome = LogoutOutcome.NOT_FOUND
            self._audit_safely(
                [
                    AuditRow(
                        at=self.clock.now(),
                        action="force_logout_user",
                        actor=actor,
                        reason=reason,
                        user_id=user,
                        email=user.strip().lower() if "@" in user else None,
                        outcome=LogoutOutcome.NOT_FOUND.value,
                    )
                ]
            )
        return result

    def _revoke_sessions(
        self,
        session_ids: list[str],
        action: str,
        actor: str,
        reason: str | None,
        *,
        sessions: Sequence[Session] | None = None,
        extra: Sequence[Claims] = (),
        detail: Mapping[str, Any] | None = None,
    ) -> LogoutResult:
        result = LogoutResult(action=action, requested=list(session_ids))
        if sessions is None:
            sessions = self.store.get_sessions(session_ids) if session_ids else []
        by_id = {s.id: s for s in sessions}
        result.found = [s.id for s in sessions]
        result.missing = [sid for sid in session_ids if sid not in by_id]
        if not sessions and not extra:
            if session_ids:
                result.outcome = LogoutOutcome.NOT_FOUND
                self._audit_not_found(session_ids, action, actor, reason)
            return result

        now = self.clock.now()
        requests: list[RevokeRequest] = []
        keys_by_session: dict[str, list[str]] = {}
        for s in sessions:
            reqs = self._revoke_requests(s, now)
            keys_by_session[s.id] = [self.blacklist.key_for(q) for q in reqs]
            requests += reqs
        for c in extra:
            kind = KIND_REFRESH if c.typ == REFRESH else KIND_ACCESS
            owner = by_id.get(c.sid)
            requests.append(
                RevokeRequest(kind, c.sid, c.exp, c.jti, c.sub, owner.email if owner else c.email)
            )
            keys_by_session.setdefault(c.sid, []).append(self.blacklist.token_key(c.sid, c.jti))
        # A requested session whose row is gone but whose own token was presented (so its id is
        # authentic): blacklist the session id too, for as long as any token of it can live.
        vouched: dict[str, Claims] = {}
        for c in extra:  # the access token's claims carry the email: prefer them
            if c.sid not in vouched or (c.email and not vouched[c.sid].email):
                vouched[c.sid] = c
        unrecorded = [sid for sid in result.missing if sid in vouched]
        for sid in unrecorded:
            c = vouched[sid]
            session_exp = max(
                [x.exp for x in extra if x.sid == sid] + [now + self.refresh_ttl + RACE_MARGIN]
            )
            requests.append(RevokeRequest(KIND_SESSION, sid, session_exp, None, c.sub, c.email))
            keys_by_session[sid].append(self.blacklist.sid_key(sid))

        def audit_row(s: Session, **outcome: Any) -> AuditRow:
            """The audit row of session ``s`` in this logout."""
            return _session_audit(s, now, action, actor, reason, detail=detail, **outcome)

        def keys_of(s: Session, written: dict[str, int]) -> list[str]:
            return [k for k in keys_by_session.get(s.id, []) if k in written]

        try:
            result.revoked = self.blacklist.revoke(requests, reason=reason, actor=actor)
        except RevocationIncomplete as exc:
            # A Redis Cluster node did not take some shards: each session's keys are all written
            # or none. The sessions fully written go on as revoked; the others stay, audited as
            # failed, and the whole logout is reported as failed (run it again for them).
            written = exc.ttls

            def complete(sid: str) -> bool:
                keys = keys_by_session.get(sid, [])
                return bool(keys) and all(k in written for k in keys)

            failed = [s for s in sessions if not complete(s.id)]
            self._audit_safely(
                [audit_row(s, outcome=LogoutOutcome.REDIS_PARTIAL.value) for s in failed]
            )
            failed_ids = {s.id for s in failed}
            sessions = [s for s in sessions if s.id not in failed_ids]
            result.found = [s.id for s in sessions]
            unrecorded = [sid for sid in unrecorded if complete(sid)]
            result.revoked = dict(exc.ttls)
            result.failed = sorted(failed_ids | {s for s in keys_by_session if not complete(s)})
            result.error = (
                f"{len(result.failed)} session(s) NOT revoked (nothing written for them, not "
                f"deleted): {exc.cause}"
            )
        except RevocationNotDurable as exc:
            # On the master only: a failover may lose it. Never reported revoked; the rows stay,
            # so the same logout can be run again once the replicas are back.
            result.outcome = LogoutOutcome.NOT_DURABLE
            result.not_durable = exc.ttls
            result.error = f"the revocation is {exc}; sessions NOT deleted (run it again)"
            self._audit_safely(
                [
                    audit_row(
                        s,
                        revoked=keys_of(s, exc.ttls),
                        outcome=f"{result.outcome.value} ({exc.acked}/{exc.wanted} replicas)",
                    )
                    for s in sessions
                ]
            )
            return result
        except RedisUnavailable as exc:  # nothing was written
            may_evict = isinstance(exc, RedisMayEvict)
            result.outcome = (
                LogoutOutcome.REDIS_MAY_EVICT if may_evict else LogoutOutcome.REDIS_UNAVAILABLE
            )
            result.error = f"nothing was revoked or deleted: {exc}"
            self._audit_safely([audit_row(s, outcome=result.outcome.value) for s in sessions])
            raise LogoutFailed(result) from None

        result.warning = self._eviction_note()
        ok = OK_MAY_EVICT if result.warning else LogoutOutcome.OK.value

        def revoked_of(sid: str) -> list[str]:
            return [k for k in keys_by_session.get(sid, []) if k in result.revoked]

        audit_rows = [audit_row(s, revoked=revoked_of(s.id), outcome=ok) for s in sessions]
        done_without_row = [sid for sid in unrecorded if revoked_of(sid)]
        audit_rows += [
            AuditRow(
                at=now,
                action=action,
                actor=actor,
                reason=reason,
                session_id=sid,
                user_id=vouched[sid].sub,
                email=vouched[sid].email,
                revoked=revoked_of(sid),
                outcome=LogoutOutcome.NO_ROW.value,
            )
            for sid in done_without_row
        ]
        try:
            result.deleted = self.store.delete_sessions_with_audit(result.found, audit_rows)
        except DatabaseError as exc:
            result.outcome = LogoutOutcome.REVOKED_NOT_DELETED
            result.error = f"tokens are revoked but the session rows were not deleted: {exc}"
            self._emit_ended(action, actor, reason, sessions, done_without_row, vouched)
            return result
        not_found = [sid for sid in result.missing if sid not in done_without_row]
        if not_found:
            self._audit_not_found(not_found, action, actor, reason)
            done = result.found or done_without_row
            result.outcome = LogoutOutcome.PARTIAL if done else LogoutOutcome.NOT_FOUND
        elif done_without_row:
            result.outcome = LogoutOutcome.NO_ROW
        if result.failed:
            result.outcome = LogoutOutcome.REDIS_PARTIAL
        self._emit_ended(action, actor, reason, sessions, done_without_row, vouched)
        return result

    def _revoke_requests(self, s: Session, now: float) -> list[RevokeRequest]:
        """What revoking session ``s`` blacklists: its live tokens and the session key."""
        reqs = []
        if s.access_jti and s.access_exp is not None:
            reqs.append(
                RevokeRequest(KIND_ACCESS, s.id, s.access_exp, s.access_jti, s.user_id, s.email)
            )
        if s.refresh_jti and s.refresh_exp is not None:
            reqs.append(
                RevokeRequest(KIND_REFRESH, s.id, s.refresh_exp, s.refresh_jti, s.user_id, s.email)
            )
        # The session key outlives every token of the session, including an access token a
        # racing silent refresh may mint right now.
        session_exp = max(
            s.refresh_exp or now, s.access_exp or now, now + self.access_ttl + RACE_MARGIN
        )
        reqs.append(RevokeRequest(KIND_SESSION, s.id, session_exp, None, s.user_id, s.email))
        return reqs

    def _session_keys(self, s: Session, now: float) -> list[str]:
        return [self.blacklist.key_for(q) for q in self._revoke_requests(s, now)]

    def _eviction_note(self) -> str | None:
        guard = self.blacklist.guard
        return guard.eviction_note() if guard is not None else None

    def _audit_not_found(
        self, session_ids: Sequence[str], action: str, actor: str, reason: str | None
    ) -> None:
        now = self.clock.now()
        self._audit_safely(
            [
                AuditRow(
                    at=now,
                    action=action,
                    actor=actor,
                    reason=reason,
                    session_id=sid,
                    outcome=LogoutOutcome.NOT_FOUND.value,
                )
                for sid in session_ids
            ]
        )

    # -- the activity feed ----------------------------------------------------------------------

    def _emit(
        self,
        kind: EventKind,
        session_id: str | None = None,
        user_id: str | None = None,
        email: str | None = None,
        **extra: Any,
    ) -> None:
        """One event to the feed: ids, user, reason, actor, address; never a token. Never
        raises (the feed is not the request's problem)."""
        with contextlib.suppress(Exception):
            self.events.emit(Event(kind, self.clock.now(), session_id, user_id, email, **extra))

    def _emit_login(self, s: Session) -> None:
        self._emit(EventKind.LOGIN, s.id, s.user_id, s.email, ip=s.ip)

    def _emit_result(self, result: AuthResult, ip: str | None) -> None:
        """A silent refresh (``rotation`` when the refresh token was rotated too) or a rejection
        with its reason; a plain valid request and a request without a token are not events."""
        c = result.claims
        sid, sub, email = (c.sid, c.sub, c.email) if c is not None else (None, None, None)
        if result.refreshed:
            kind = EventKind.ROTATION if result.new_refresh_token else EventKind.REFRESH
            self._emit(kind, sid, sub, email, ip=ip)
        elif result.reason is not None and result.reason is not Reason.NO_TOKEN:
            self._emit(EventKind.REJECTION, sid, sub, email, reason=result.reason.value, ip=ip)

    def _emit_ended(
        self,
        action: str,
        actor: str,
        reason: str | None,
        sessions: Sequence[Session],
        without_row: Sequence[str],
        vouched: Mapping[str, Claims],
    ) -> None:
        """One event per logout / operator action / reuse / policy ending, with the number of
        sessions it ended (and the session and user when it was about one)."""
        count = len(sessions) + len(without_row)
        if not count:
            return
        kind = _EVENT_OF_ACTION.get(action, EventKind.FORCE_LOGOUT)
        users: set[tuple[str | None, str | None]] = {(s.user_id, s.email) for s in sessions}
        users |= {(vouched[sid].sub, vouched[sid].email) for sid in without_row}
        user_id, email = next(iter(users)) if len(users) == 1 else (None, None)
        sid = (sessions[0].id if sessions else without_row[0]) if count == 1 else None
        self._emit(kind, sid, user_id, email, reason=reason, actor=actor, count=count)

    def _audit_safely(self, rows: list[AuditRow]) -> None:
        # The audit of a failure must not hide the failure itself.
        with contextlib.suppress(DatabaseError):
            self.store.write_audit(rows)


REUSE_REASON = Reason.REFRESH_REUSED.value
_EVENT_OF_ACTION = {
    "logout": EventKind.LOGOUT,
    REUSE_DETECTED: EventKind.REUSE_DETECTED,
    SESSION_ENDED: EventKind.SESSION_ENDED,
}


def _gone(r: Claims) -> AuthResult:
    return AuthResult(reason=Reason.SESSION_NOT_FOUND, detail="session is gone", claims=r)


def _rotation_of(session: Session) -> Rotation:
    """The last rotation of ``session``, as its row records it (the live pair)."""
    assert session.rotated_at is not None
    assert session.access_jti and session.refresh_jti and session.prev_refresh_jti
    return Rotation(
        generation=session.generation - 1,
        presented_jti=session.prev_refresh_jti,
        access_jti=session.access_jti,
        access_exp=float(session.access_exp or 0),
        refresh_jti=session.refresh_jti,
        refresh_exp=float(session.refresh_exp or 0),
        at=session.rotated_at,
        ip=session.rotated_ip,
        user_agent=session.rotated_ua,
        access_kid=session.access_kid,
        refresh_kid=session.refresh_kid,
    )


def _user(c: Claims) -> User:
    return User(session_id=c.sid, email=c.email, name=c.name, user_id=c.sub, valid=True)


def _session_audit(
    s: Session, at: float, action: str, actor: str, reason: str | None, **fields: Any
) -> AuditRow:
    """The audit row of one session's ending (who, when, why), with ``fields`` on top."""
    return AuditRow(
        at=at,
        action=action,
        actor=actor,
        reason=reason,
        session_id=s.id,
        user_id=s.user_id,
        email=s.email,
        **fields,
    )
