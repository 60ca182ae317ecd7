"""Rotation under concurrency, real clock, real Redis, both stores.

Trials of 50 concurrent refreshes with the same refresh token (threads over several store
connections; and a smaller run over separate processes): no false family revocation, every
request gets the one successor pair, exactly one refresh token of the family is live afterwards.
``SESSIONMON_ROTATION_TRIALS`` (default 1000) caps the trials and ``SESSIONMON_ROTATION_SECONDS``
(default 30 per backend) the time they may take; the count run is printed (``-s``).

Then a refresh racing a force-logout, and one racing reuse detection: nothing usable remains.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Iterator

import pytest
import redis

from sessionmon.core.auth import REUSE_DETECTED, Auth
from sessionmon.core.blacklist import Blacklist
from sessionmon.core.clock import SYSTEM_CLOCK
from sessionmon.core.keys import KeyMaterial
from sessionmon.core.policy import SessionPolicy
from sessionmon.core.store import DatabaseUrl, SessionStore, open_store
from sessionmon.core.tokens import REFRESH, Reason, TokenCodec
from tests.conftest import TEST_SECRET
from tests.core.rotation_worker import Outcome, refresh_together

CONCURRENCY = 50
TRIALS = int(os.environ.get("SESSIONMON_ROTATION_TRIALS", "1000"))
SECONDS = float(os.environ.get("SESSIONMON_ROTATION_SECONDS", "30"))
MIN_TRIALS = 20
PROCESSES, PROCESS_THREADS = 5, 10  # 50 concurrent refreshes over 5 processes
PROCESS_TRIALS = int(os.environ.get("SESSIONMON_ROTATION_PROCESS_TRIALS", "10"))
CONNECTIONS = 4  # SQLite: store connections (each its own lock) the threads share


@pytest.fixture
def real_codec(keys: KeyMaterial) -> TokenCodec:
    return TokenCodec(keys, leeway=10, clock=SYSTEM_CLOCK)


@pytest.fixture
def auths(
    db_url: DatabaseUrl, redis_client: redis.Redis, prefix: str, real_codec: TokenCodec
) -> Iterator[list[Auth]]:
    """Several Auth objects on their own store connections, on the real clock."""
    blacklist = Blacklist(redis_client, prefix=prefix, leeway=10)
    stores = [open_store(db_url) for _ in range(CONNECTIONS)]
    yield [Auth(s, blacklist, real_codec, access_ttl=60, refresh_ttl=3600) for s in stores]
    for s in stores:
        s.close()


def check_trial(
    auth: Auth, sid: str, presented: str, outcomes: list[Outcome], codec: TokenCodec
) -> str:
    """Every request succeeded with the same successor pair, which is the one live token."""
    failed = [o for o in outcomes if not o[0]]
    assert not failed, failed[:3]
    pairs = {(o[2], o[3]) for o in outcomes}
    assert len(pairs) == 1, f"{len(pairs)} different successor pairs"
    ((_, successor),) = pairs
    assert successor is not None
    row = auth.store.get_session(sid)
    assert row is not None, "the family was revoked"
    r = codec.verify(successor, REFRESH)
    assert (row.generation, row.refresh_jti, r.gen) == (1, r.jti, 1)
    assert row.prev_refresh_jti == codec.verify(presented, REFRESH).jti
    assert not auth.blacklist.is_revoked(r.jti, sid)
    return successor


def test_concurrent_refreshes_in_threads_never_look_like_theft(
    auths: list[Auth], real_codec: TokenCodec
) -> None:
    store: SessionStore = auths[0].store
    deadline = time.monotonic() + SECONDS
    done = 0
    while done < TRIALS and time.monotonic() < deadline:
        session, _, refresh = auths[0].login(f"u{done}", f"u{done}@example.com", "Tab")
        outcomes = refresh_together(auths, refresh, CONCURRENCY)
        successor = check_trial(auths[0], session.id, refresh, outcomes, real_codec)
        assert auths[1].refresh(successor).ok  # the one live token moves on
        done += 1
    reuse = [e for e in store.audit(limit=10) if e.action == REUSE_DETECTED]
    assert not reuse and store.count_sessions() == done
    print(f"\n{store.backend.value}: {done} trials x {CONCURRENCY} concurrent refreshes (threads)")
    assert done >= min(TRIALS, MIN_TRIALS), f"only {done} trials in {SECONDS:g} s"


def test_concurrent_refreshes_in_processes_never_look_like_theft(
    db_url: DatabaseUrl, redis_url: str, prefix: str, auths: list[Auth], real_codec: TokenCodec
) -> None:
    ctx = multiprocessing.get_context("spawn")
    tasks, results = ctx.Queue(), ctx.Queue()
    barrier = ctx.Barrier(PROCESSES)
    db = db_url.url or str(db_url.path)
    args = (db, redis_url, prefix, TEST_SECRET, PROCESS_THREADS, tasks, results, barrier)
    from tests.core import rotation_worker

    procs = [ctx.Process(target=rotation_worker.main, args=args) for _ in range(PROCESSES)]
    for p in procs:
        p.start()
    try:
        for trial in range(PROCESS_TRIALS):
            session, _, refresh = auths[0].login(f"p{trial}", f"p{trial}@example.com", "Proc")
            for _ in procs:
                tasks.put(refresh)
            outcomes: list[Outcome] = []
            for _ in procs:
                outcomes += results.get(timeout=120)
            assert len(outcomes) == PROCESSES * PROCESS_THREADS
            check_trial(auths[0], session.id, refresh, outcomes, real_codec)
    finally:
        for _ in procs:
            tasks.put(None)
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    assert not [e for e in auths[0].store.audit(limit=10) if e.action == REUSE_DETECTED]


def unusable(auth: Auth, access: list[str], refresh: list[str]) -> None:
    """None of these tokens gets a user, alone or as a pair."""
    for token in access:
        assert not auth.authenticate(token).ok
    for token in refresh:
        result = auth.refresh(token)
        assert not result.ok and result.new_refresh_token is None, result


class Chain(threading.Thread):
    """Refreshes with each new refresh token in turn until refused (or ``stop`` is set);
    keeps every token it was given."""

    def __init__(self, auth: Auth, token: str, stop: threading.Event | None = None) -> None:
        super().__init__(daemon=True)
        self.auth, self.token, self.stop = auth, token, stop or threading.Event()
        self.access: list[str] = []
        self.refresh: list[str] = []
        self.refused: Reason | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                result = self.auth.refresh(self.token)
                if not result.ok:
                    self.refused = result.reason
                    return
                assert result.new_access_token and result.new_refresh_token
                self.access.append(result.new_access_token)
                self.refresh.append(result.new_refresh_token)
                self.token = result.new_refresh_token
        except BaseException as exc:  # surfaced by the test
            self.error = exc


@pytest.mark.parametrize("grace", [0.0, 10.0])
def test_rotation_racing_force_logout_leaves_nothing_usable(
    auths: list[Auth], grace: float
) -> None:
    for auth in auths:
        auth.policy = SessionPolicy(reuse_grace=grace)
    for trial in range(40):
        session, access, refresh = auths[0].login(f"f{trial}", f"f{trial}@example.com", "Racer")
        stop = threading.Event()
        chains = [Chain(a, refresh, stop) for a in auths[:2]]
        for c in chains:
            c.start()
        time.sleep(0.001 * (trial % 5))  # the logout lands at different points of the chain
        result = auths[2].force_logout(session.id, actor="race", reason="race")
        assert result.error is None
        stop.set()
        for c in chains:
            c.join(30)
            assert not c.is_alive() and c.error is None, c.error
        assert auths[0].store.get_session(session.id) is None
        minted_access = [access] + [t for c in chains for t in c.access]
        minted_refresh = [refresh] + [t for c in chains for t in c.refresh]
        unusable(auths[3], minted_access, minted_refresh)


def test_rotation_racing_reuse_detection_leaves_nothing_usable(auths: list[Auth]) -> None:
    for auth in auths:
        auth.policy = SessionPolicy(reuse_grace=0)
    for trial in range(40):
        session, access, refresh = auths[0].login(f"r{trial}", f"r{trial}@example.com", "Racer")
        first = auths[0].refresh(refresh)
        assert first.new_refresh_token and first.new_access_token
        chain = Chain(auths[1], first.new_refresh_token)
        chain.start()
        time.sleep(0.001 * (trial % 5))
        assert auths[2].refresh(refresh).reason is Reason.REFRESH_REUSED  # the thief
        chain.join(30)
        assert not chain.is_alive() and chain.error is None, chain.error
        assert chain.refused in (Reason.REVOKED, Reason.REFRESH_REUSED, Reason.SESSION_NOT_FOUND)
        assert auths[0].store.get_session(session.id) is None
        minted_access = [access, first.new_access_token, *chain.access]
        minted_refresh = [first.new_refresh_token, *chain.refresh]
        unusable(auths[3], minted_access, minted_refresh)
        assert auths[3].authenticate(minted_access[-1]).reason is Reason.REFRESH_REUSED
