"""What the core appends to the activity feed: one event per thing that happened, with ids, user,
reason and address, never a token; wired once by the runtime to the Redis Stream."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from sessionmon.core.auth import Auth
from sessionmon.core.blacklist import Blacklist
from sessionmon.core.bulk_logout import LogoutJob
from sessionmon.core.clock import FrozenClock
from sessionmon.core.event_stream import StreamReader, StreamWriter, stream_key
from sessionmon.core.events import Event, EventKind
from sessionmon.core.policy import OnMaxSessions, SessionPolicy
from sessionmon.core.runtime import open_runtime
from sessionmon.core.session_query import SessionQuery
from sessionmon.core.settings import Settings
from sessionmon.core.store import SessionStore
from sessionmon.core.tokens import TokenCodec

GRACE = 10.0


@pytest.fixture
def feed(
    auth: Auth, redis_client: redis.Redis, prefix: str
) -> Iterator[tuple[StreamWriter, StreamReader]]:
    writer = StreamWriter(redis_client, prefix)
    auth.events = writer
    yield writer, StreamReader(redis_client, prefix)
    writer.close()


def read_all(feed: tuple[StreamWriter, StreamReader]) -> list[Event]:
    writer, reader = feed
    assert writer.flush()
    return reader.after("0")


def test_login_refresh_rotation_and_logout(
    auth: Auth, feed: tuple[StreamWriter, StreamReader], clock: FrozenClock
) -> None:
    session, access, refresh = auth.login("u1", "ann@example.com", "Ann", ip="10.0.0.1")
    assert auth.authenticate(access).ok  # a valid request is not an event
    clock.advance(120)  # the access token expired: a silent refresh (rotated)
    result = auth.authenticate(access, refresh, ip="10.0.0.2")
    assert result.refreshed and result.new_refresh_token
    auth.policy = SessionPolicy(rotate_refresh=False)
    clock.advance(120)
    plain = auth.refresh(result.new_refresh_token, ip="10.0.0.3")
    assert plain.refreshed and plain.new_refresh_token is None
    auth.logout(session.id)
    events = read_all(feed)
    assert [(e.kind, e.session_id, e.user_id, e.ip) for e in events] == [
        (EventKind.LOGIN, session.id, "u1", "10.0.0.1"),
        (EventKind.ROTATION, session.id, "u1", "10.0.0.2"),
        (EventKind.REFRESH, session.id, "u1", "10.0.0.3"),
        (EventKind.LOGOUT, session.id, "u1", None),
    ]
    assert events[0].email == "ann@example.com" and events[0].at == clock.now() - 240
    assert events[-1].reason == "logout" and events[-1].count == 1
    tokens = (access, refresh, result.new_access_token or "", result.new_refresh_token)
    raw = b"".join(v for _, data in feed[1].client.xrange(feed[1].key) for v in data.values())
    for token in tokens:
        assert token.encode() not in raw and token.split(".")[2].encode() not in raw


def test_rejections_carry_their_reason(
    auth: Auth, feed: tuple[StreamWriter, StreamReader], codec: TokenCodec, clock: FrozenClock
) -> None:
    session, access, _ = auth.login("u1", "ann@example.com", "Ann")
    tampered = access[:-4] + ("AAAA" if not access.endswith("AAAA") else "BBBB")
    assert auth.authenticate(tampered, ip="203.0.113.9").reason.value == "bad_signature"
    assert auth.authenticate("not a token").reason.value == "malformed"
    assert auth.authenticate(None).reason.value == "no_token"  # anonymous: not an event
    clock.advance(120)
    assert auth.authenticate(access).reason.value == "expired"
    rejections = [e for e in read_all(feed) if e.kind is EventKind.REJECTION]
    assert [(e.reason, e.ip) for e in rejections] == [
        ("bad_signature", "203.0.113.9"),
        ("malformed", None),
        ("expired", None),
    ]
    assert rejections[0].session_id is None  # a forged token's claims are not believed
    assert rejections[2].session_id == session.id  # the signature was good


def test_reuse_is_detected_once_and_every_later_try_is_a_rejection(
    auth: Auth, feed: tuple[StreamWriter, StreamReader], clock: FrozenClock
) -> None:
    session, _, refresh = auth.login("u1", "ann@example.com", "Ann")
    successor = auth.refresh(refresh)
    clock.advance(GRACE)
    assert auth.refresh(refresh, ip="203.0.113.9").reason.value == "refresh_reused"
    assert successor.new_refresh_token
    assert auth.refresh(successor.new_refresh_token).reason.value == "refresh_reused"
    events = read_all(feed)
    kinds = [(e.kind, e.reason) for e in events]
    assert kinds == [
        (EventKind.LOGIN, None),
        (EventKind.ROTATION, None),
        (EventKind.REUSE_DETECTED, "refresh_reused"),
        (EventKind.REJECTION, "refresh_reused"),
        (EventKind.REJECTION, "refresh_reused"),
    ]
    assert events[2].actor == "system" and events[2].session_id == session.id
    assert events[3].ip == "203.0.113.9"


def test_policy_endings_and_evictions(
    auth: Auth, feed: tuple[StreamWriter, StreamReader], clock: FrozenClock
) -> None:
    auth.policy = SessionPolicy(idle_timeout=60)
    idle, _, refresh = auth.login("u1", "ann@example.com", "Ann")
    clock.advance(61)
    assert auth.refresh(refresh).reason.value == "idle_timeout"
    auth.policy = SessionPolicy(max_sessions_per_user=1, on_max_sessions=OnMaxSessions.EVICT_OLDEST)
    first, _, _ = auth.login("u2", "bob@example.com", "Bob")
    auth.login("u2", "bob@example.com", "Bob")
    events = read_all(feed)
    assert idle.user_id == "u1"
    ended = [(e.kind, e.session_id, e.reason) for e in events if e.kind is not EventKind.LOGIN]
    assert ended == [
        (EventKind.SESSION_ENDED, idle.id, "idle"),
        (EventKind.REJECTION, idle.id, "idle_timeout"),
        (EventKind.SESSION_ENDED, first.id, "evicted"),
    ]


def test_force_logout_is_one_event_per_operator_action_with_the_count(
    auth: Auth, feed: tuple[StreamWriter, StreamReader]
) -> None:
    ann = [auth.login("u1", "ann@example.com", "Ann")[0] for _ in range(3)]
    bob = auth.login("u2", "bob@example.com", "Bob")[0]
    auth.force_logout(bob.id, "ops", "laptop stolen")
    auth.force_logout_user("ann@example.com", "ops", "left the company")
    auth.force_logout("no-such-session", "ops")  # nothing ended: no event
    ops = [e for e in read_all(feed) if e.kind is EventKind.FORCE_LOGOUT]
    assert [(e.count, e.session_id, e.user_id, e.actor, e.reason) for e in ops] == [
        (1, bob.id, "u2", "ops", "laptop stolen"),
        (3, None, "u1", "ops", "left the company"),
    ]
    assert ann


def test_revoke_by_query_job(
    auth: Auth, feed: tuple[StreamWriter, StreamReader], tmp_path: Path, store: SessionStore
) -> None:
    for _ in range(5):
        auth.login("u1", "ann@example.com", "Ann")
    query = SessionQuery(user="u1")
    job = LogoutJob.plan(
        tmp_path / "jobs", store, query, actor="ops", reason="all", now=auth.clock.now()
    )
    report = job.run(auth, batch=2)
    assert report.state.ended == 5
    events = read_all(feed)
    batches = [e.count for e in events if e.kind is EventKind.FORCE_LOGOUT]
    assert batches == [2, 2, 1]
    (done,) = [e for e in events if e.kind is EventKind.LOGOUT_JOB]
    assert done.count == 5 and done.actor == "ops" and "ok: 5 ended" in (done.reason or "")


def test_the_runtime_wires_the_feed_and_close_flushes(
    settings: Settings, redis_client: redis.Redis, prefix: str, tmp_path: Path
) -> None:
    settings = settings.with_(key_dir=tmp_path / "keys")
    with open_runtime(settings) as rt:
        rt.auth.login("u1", "ann@example.com", "Ann")
    (event,) = StreamReader(redis_client, prefix).after("0")
    assert event.kind is EventKind.LOGIN and event.email == "ann@example.com"
    assert redis_client.xinfo_stream(stream_key(prefix))["length"] == 1
    # --no-events: nothing written.
    with open_runtime(settings.with_(events=False)) as rt:
        rt.auth.login("u2", "bob@example.com", "Bob")
    assert len(StreamReader(redis_client, prefix).after("0")) == 1


def test_the_cap_comes_from_the_settings(settings: Settings, redis_client: redis.Redis) -> None:
    with open_runtime(settings.with_(events_maxlen=7)) as rt:
        assert isinstance(rt.events, StreamWriter) and rt.events.maxlen == 7


def test_a_sink_that_raises_never_fails_the_request(
    auth: Auth, blacklist: Blacklist, clock: FrozenClock
) -> None:
    class Broken:
        def emit(self, event: Event) -> None:
            raise RuntimeError("the feed is broken")

    auth.events = Broken()
    session, access, _ = auth.login("u1", "ann@example.com", "Ann")
    assert auth.authenticate(access + "x").reason is not None
    assert auth.logout(session.id).ok
