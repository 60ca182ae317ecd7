"""Deciding a request from memory (what the web middleware does on its event loop): the codec's
``verify_from_memory``, the cache's ``from_memory`` and ``Auth.authenticate_from_memory``. Each
answers only what ``verify`` / ``is_revoked`` / ``authenticate`` would, and ``None`` whenever it
would have to wait on Redis, the database or a key file."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sessionmon.core.auth import Auth
from sessionmon.core.blacklist import KIND_SESSION, Blacklist, RevokeRequest
from sessionmon.core.clock import FrozenClock
from sessionmon.core.keydir import KeyDirectory
from sessionmon.core.keys import KeyMaterial
from sessionmon.core.keysource import LiveKeys
from sessionmon.core.revocation_cache import CachedRevocations
from sessionmon.core.store import SessionStore
from sessionmon.core.tokens import ACCESS, REFRESH, Reason, TokenCodec, TokenRejected
from tests.support.waiting import wait_until

STALENESS = 0.05


def mint(codec: TokenCodec, typ: str = ACCESS, ttl: float = 60) -> str:
    token, _ = codec.mint(typ, sub="u1", sid="sid-1", ttl=ttl, email="a@example.com", name="A")
    return token


def test_verify_from_memory_gives_what_verify_gives_and_remembers_it(codec: TokenCodec) -> None:
    token = mint(codec)
    claims = codec.verify_from_memory(token)
    assert claims is not None
    assert claims == codec.verify(token)
    assert token in codec._verified
    assert codec.verify_from_memory(token) is claims  # remembered: no second HMAC


def test_a_remembered_token_still_expires(codec: TokenCodec, clock: FrozenClock) -> None:
    token = mint(codec, ttl=30)
    assert codec.verify_from_memory(token) is not None
    clock.advance(30 + codec.leeway - 1)
    assert codec.verify_from_memory(token) is not None
    clock.advance(2)
    assert codec.verify_from_memory(token) is None
    with pytest.raises(TokenRejected) as exc:
        codec.verify(token)
    assert exc.value.reason is Reason.EXPIRED


def test_a_token_not_yet_valid_is_left_to_verify(codec: TokenCodec, clock: FrozenClock) -> None:
    token, _ = codec.mint(ACCESS, sub="u1", sid="s", ttl=60, now=clock.now() + 3600)
    assert codec.verify_from_memory(token) is None
    with pytest.raises(TokenRejected):
        codec.verify(token)


def test_anything_else_is_left_to_verify(codec: TokenCodec, keys: KeyMaterial) -> None:
    access, refresh = mint(codec), mint(codec, REFRESH)
    assert codec.verify_from_memory(access) is not None
    assert codec.verify_from_memory(refresh) is None  # wrong type
    assert codec.verify_from_memory(access, REFRESH) is None  # a remembered token, other type
    head, body, sig = access.split(".")
    flipped = sig[:-2] + ("A" if sig[-2] != "A" else "B") + sig[-1]
    assert codec.verify_from_memory(f"{head}.{body}.{flipped}") is None
    other = TokenCodec(KeyMaterial("HS256", b"k" * 32, b"k" * 32, "other"), clock=codec.clock)
    assert codec.verify_from_memory(mint(other)) is None
    for junk in ("", "a.b", "a.b.c", "x" * 10_000, "é.é.é"):
        assert codec.verify_from_memory(junk) is None
    assert codec.verify_from_memory(None) is None  # type: ignore[arg-type]


@pytest.fixture
def key_dir(tmp_path: Path, clock: FrozenClock) -> KeyDirectory:
    directory = KeyDirectory(tmp_path / "keys", "HS256", clock)
    directory.ensure()
    return directory


def test_a_key_directory_due_for_a_look_is_left_to_verify(
    key_dir: KeyDirectory, clock: FrozenClock
) -> None:
    always = TokenCodec(LiveKeys(key_dir, poll=0.0), clock=clock)
    token = mint(always)
    assert always.key_source.due()
    assert always.verify_from_memory(token) is None
    assert always.verify(token).sid == "sid-1"


def test_after_a_rotation_and_retirement_a_remembered_token_is_not_accepted(
    key_dir: KeyDirectory, clock: FrozenClock
) -> None:
    live = LiveKeys(key_dir, poll=3600)
    codec = TokenCodec(live, clock=clock)
    token = mint(codec)
    old_kid = live.ring().current.kid
    assert codec.verify_from_memory(token) is not None
    key_dir.rotate(overlap=3600)
    live.refresh()  # what the next look after the poll interval does
    assert codec.verify_from_memory(token) is None  # signed by the previous key now
    assert codec.verify(token).sid == "sid-1"
    key_dir.retire(old_kid)
    live.refresh()
    assert codec.verify_from_memory(token) is None
    with pytest.raises(TokenRejected) as exc:
        codec.verify(token)
    assert exc.value.reason is Reason.UNKNOWN_KEY


@pytest.fixture
def cache(blacklist: Blacklist) -> Iterator[CachedRevocations]:
    c = CachedRevocations(blacklist, max_staleness=STALENESS)
    assert c.start(wait=10), c.last_error
    yield c
    c.close()


def test_from_memory_answers_only_what_memory_holds(
    cache: CachedRevocations, blacklist: Blacklist
) -> None:
    assert cache.from_memory(None, None) is False
    assert cache.from_memory("j", "s") is None  # never asked: only Redis knows
    assert cache.is_revoked("j", "s") is False
    wait_until(lambda: cache.from_memory("j", "s") is False, "a cached no")
    blacklist.revoke([RevokeRequest(KIND_SESSION, "s", time.time() + 60)])
    # The invalidation drops the cached "no": memory has nothing to say until Redis is asked.
    sid_key = blacklist.sid_key("s")
    wait_until(lambda: cache._cache.get(sid_key) is not False, "the invalidation")
    assert cache.from_memory("j", "s") is None
    assert cache.is_revoked("j", "s") is True
    # (asked again if a second invalidation of the same write dropped the answer meanwhile)
    wait_until(
        lambda: cache.is_revoked("j", "s") and cache.from_memory("j", "s") is True, "a cached yes"
    )


def test_from_memory_says_nothing_once_the_channel_is_not_confirmed(
    cache: CachedRevocations,
) -> None:
    assert cache.is_revoked("j", "s") is False
    wait_until(lambda: cache.from_memory("j", "s") is False, "a cached no")
    cache.heartbeat = 3600.0  # no more PINGs: the channel stays up but is never confirmed again
    wait_until(lambda: cache.from_memory("j", "s") is None, "the lease to lapse", timeout=5)
    assert cache._live and len(cache) > 0  # the answer is still there, but not served


@pytest.fixture
def cached_auth(
    store: SessionStore,
    blacklist: Blacklist,
    codec: TokenCodec,
    clock: FrozenClock,
    cache: CachedRevocations,
) -> Auth:
    return Auth(
        store,
        blacklist,
        codec,
        access_ttl=60,
        refresh_ttl=3600,
        clock=clock,
        revocation_cache=cache,
    )


def test_authenticate_from_memory_after_one_full_check(cached_auth: Auth) -> None:
    session, access, refresh = cached_auth.login("u1", "ann@example.com", "Ann")
    assert cached_auth.authenticate_from_memory(access) is None  # nothing cached, touch due
    assert cached_auth.authenticate(access).ok
    wait_until(lambda: cached_auth.authenticate_from_memory(access) is not None, "from memory")
    result = cached_auth.authenticate_from_memory(access)
    assert result is not None and result.ok and result.user is not None
    assert result.user == cached_auth.authenticate(access).user
    assert result.user.session_id == session.id
    assert cached_auth.authenticate_from_memory(refresh) is None
    assert cached_auth.authenticate_from_memory(None) is None


def test_a_revocation_takes_the_request_off_the_memory_path(
    cached_auth: Auth, blacklist: Blacklist
) -> None:
    session, access, _ = cached_auth.login("u1", "ann@example.com", "Ann")
    assert cached_auth.authenticate(access).ok
    wait_until(lambda: cached_auth.authenticate_from_memory(access) is not None, "from memory")
    blacklist.revoke([RevokeRequest(KIND_SESSION, session.id, time.time() + 60)])
    wait_until(lambda: cached_auth.authenticate_from_memory(access) is None, "invalidation")
    assert cached_auth.authenticate(access).reason is Reason.REVOKED
    assert cached_auth.authenticate_from_memory(access) is None  # a cached yes: still None


def test_a_due_last_seen_update_takes_the_request_off_the_memory_path(
    cached_auth: Auth, store: SessionStore, clock: FrozenClock
) -> None:
    session, access, _ = cached_auth.login("u1", "ann@example.com", "Ann")
    assert cached_auth.authenticate(access).ok
    wait_until(lambda: cached_auth.authenticate_from_memory(access) is not None, "from memory")
    clock.advance(cached_auth.touch_interval)
    assert cached_auth.authenticate_from_memory(access) is None
    assert cached_auth.authenticate(access).ok  # the full path writes last_seen_at
    row = store.get_session(session.id)
    assert row is not None and row.last_seen_at == pytest.approx(clock.now())
    wait_until(lambda: cached_auth.authenticate_from_memory(access) is not None, "from memory")


def test_without_a_cache_nothing_is_decided_from_memory(auth: Auth) -> None:
    _, access, _ = auth.login("u1", "ann@example.com", "Ann")
    assert auth.authenticate(access).ok
    assert auth.authenticate_from_memory(access) is None
