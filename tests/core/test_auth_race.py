"""A silent refresh racing a force-logout never yields a usable token once force_logout returned."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from sessionmon.core.auth import Auth, AuthResult
from sessionmon.core.blacklist import Blacklist
from sessionmon.core.clock import FrozenClock
from sessionmon.core.store import SqliteStore
from sessionmon.core.tokens import Reason, TokenCodec

ITERATIONS = 200
ACCESS_TTL = 5


@dataclass
class Call:
    started: float
    ended: float
    started_after_logout: bool
    result: AuthResult


@pytest.fixture
def fast_switching() -> Iterator[None]:
    """Switch threads often, so the two threads really interleave."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    yield
    sys.setswitchinterval(before)


@pytest.mark.timeout(60)
def test_refresh_vs_force_logout_race(
    store: SqliteStore,
    blacklist: Blacklist,
    codec: TokenCodec,
    clock: FrozenClock,
    fast_switching: None,
) -> None:
    auth = Auth(store, blacklist, codec, access_ttl=ACCESS_TTL, refresh_ttl=3600, clock=clock)
    base = clock.now()
    overlapping = 0  # iterations in which a refresh was in flight while force_logout ran
    refreshed_total = 0

    for i in range(ITERATIONS):
        clock.set(base)
        session, access, refresh = auth.login(f"u{i}", f"u{i}@example.com", "Racer")
        clock.advance(ACCESS_TTL + codec.leeway + 1)  # access expired, refresh still valid

        calls: list[Call] = []
        errors: list[BaseException] = []
        logged_out = threading.Event()
        first_call_done = threading.Event()

        def thread_a(
            access: str = access,
            refresh: str = refresh,
            calls: list[Call] = calls,
            errors: list[BaseException] = errors,
            logged_out: threading.Event = logged_out,
            first_call_done: threading.Event = first_call_done,
        ) -> None:
            try:
                after = 0
                while after < 3:  # keep going until three calls started after the logout
                    started_after = logged_out.is_set()
                    t0 = time.perf_counter()
                    result = auth.authenticate(access, refresh)
                    calls.append(Call(t0, time.perf_counter(), started_after, result))
                    first_call_done.set()
                    after += started_after
            except BaseException as exc:  # surfaced in the main thread
                errors.append(exc)
                first_call_done.set()

        a = threading.Thread(target=thread_a, daemon=True)
        a.start()
        if i % 2:  # half the time, let A refresh once before B starts
            first_call_done.wait(5)
        b_start = time.perf_counter()
        result = auth.force_logout(session.id, actor="race", reason="race")
        b_end = time.perf_counter()
        logged_out.set()
        a.join(10)
        assert not a.is_alive(), "thread A hung"
        assert not errors, errors
        assert result.error is None and result.outcome.value in ("ok", "not_found")

        late = [c for c in calls if c.started_after_logout]
        assert len(late) >= 3
        for c in late:
            assert not c.result.ok and c.result.user is None, (i, c.result)
            assert c.result.reason in (Reason.REVOKED, Reason.SESSION_NOT_FOUND)
            assert c.result.new_access_token is None

        minted = [c.result.new_access_token for c in calls if c.result.new_access_token]
        refreshed_total += len(minted)
        for token in minted:
            after = auth.authenticate(token)
            assert not after.ok and after.reason is Reason.REVOKED, (i, after)
            assert not auth.authenticate(token, refresh).ok
        assert store.get_session(session.id) is None
        if any(c.started < b_end and c.ended > b_start for c in calls):
            overlapping += 1

    assert refreshed_total > 0  # A did obtain tokens, and every one was rejected afterwards
    assert overlapping > 0  # the race window was actually exercised
