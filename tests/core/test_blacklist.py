"""The Redis blacklist: TTLs, the expiry index in the same MULTI/EXEC, paging, SCAN, one EXISTS."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator

import pytest
import redis

from sessionmon.core.blacklist import (
    KIND_ACCESS,
    KIND_REFRESH,
    KIND_SESSION,
    Blacklist,
    RevokeRequest,
    connect,
)
from sessionmon.core.clock import FrozenClock
from tests.redis_server import RedisProcess
from tests.support.redis_mode import single_node_only


def access(jti: str, exp: float, sid: str = "s1") -> RevokeRequest:
    return RevokeRequest(KIND_ACCESS, sid, exp, jti, "u1", "ann@example.com")


def all_keys(client: redis.Redis, prefix: str) -> list[str]:
    return sorted(k.decode() for k in client.scan_iter(match=prefix + "*", count=1000))


def expected_ttl(bl: Blacklist, exp: float, now: float) -> int:
    return math.ceil(exp - now + bl.leeway)


@pytest.fixture
def private_redis(redis_process: RedisProcess) -> Iterator[redis.Redis]:
    client = connect(redis_process.url)
    yield client
    client.close()


def commandstats(client: redis.Redis) -> dict[str, int]:
    return {k.removeprefix("cmdstat_"): v["calls"] for k, v in client.info("commandstats").items()}


# -- TTLs ------------------------------------------------------------------------------------


@pytest.mark.parametrize("remaining", [1, 5, 59.5, 900, 3600, 7 * 86400])
def test_every_key_has_a_ttl_within_the_leeway_of_the_token_life(
    blacklist: Blacklist, redis_client: redis.Redis, clock: FrozenClock, remaining: float
) -> None:
    now = clock.now()
    exp = now + remaining
    reqs = [access("a1", exp), RevokeRequest(KIND_SESSION, "s1", exp, None, "u1")]
    written = blacklist.revoke(reqs, reason="test", actor="pytest")
    want = expected_ttl(blacklist, exp, now)
    assert set(written) == {blacklist.token_key("s1", "a1"), blacklist.sid_key("s1")}
    for key, ttl in written.items():
        assert want - 1 <= ttl <= want, (key, ttl, want)
        live = redis_client.ttl(key)
        assert live > 0 and want - 1 <= live <= want, (key, live, want)
        # Never longer than the token's remaining life plus the leeway (+1 s for the ceil).
        assert live <= remaining + blacklist.leeway + 1


def test_no_entry_key_is_ever_left_without_a_ttl(
    blacklist: Blacklist, redis_client: redis.Redis, clock: FrozenClock, prefix: str
) -> None:
    now = clock.now()
    blacklist.revoke(
        [access(f"a{i}", now + 10 * i, sid=f"s{i}") for i in range(1, 20)]
        + [RevokeRequest(KIND_SESSION, f"s{i}", now + 100, None) for i in range(5)]
        + [RevokeRequest(KIND_REFRESH, "s1", now - 5, "r-in-leeway")],
    )
    keys = all_keys(redis_client, prefix)
    indexes = [k for k in keys if blacklist.layout.is_index(k)]
    assert len(keys) == 19 + 5 + 1 + len(indexes)
    for key in keys:
        if key in indexes:
            continue
        assert redis_client.ttl(key) > 0, key


def test_token_expired_beyond_the_leeway_is_not_written(
    blacklist: Blacklist, redis_client: redis.Redis, clock: FrozenClock, prefix: str
) -> None:
    now = clock.now()
    gone = access("long-gone", now - blacklist.leeway - 1)
    edge = access("at-the-edge", now - blacklist.leeway)
    assert blacklist.revoke([gone, edge]) == {}
    assert all_keys(redis_client, prefix) == []  # not even the index
    within = access("within-leeway", now - blacklist.leeway + 3)
    written = blacklist.revoke([gone, within])
    assert list(written) == [blacklist.token_key("s1", "within-leeway")]
    assert 2 <= written[blacklist.token_key("s1", "within-leeway")] <= 3
    assert not redis_client.exists(blacklist.token_key("s1", "long-gone"))


def test_value_is_small_json(blacklist: Blacklist, redis_client: redis.Redis) -> None:
    exp = blacklist.clock.now() + 60
    blacklist.revoke([access("a1", exp)], reason="incident", actor="ops")
    doc = json.loads(redis_client.get(blacklist.token_key("s1", "a1")))
    assert doc["kind"] == "access" and doc["sid"] == "s1" and doc["sub"] == "u1"
    assert (doc["email"], doc["reason"], doc["actor"], doc["exp"]) == (
        "ann@example.com",
        "incident",
        "ops",
        exp,
    )
    assert abs(doc["revoked_at"] - blacklist.clock.now()) < 1


@pytest.mark.parametrize(
    ("email", "reason", "exp_offset"),
    [
        ("ann@example.com", "incident", 60),
        ('Zoë "the admin" <z@exämple.org>', "line\nbreak \\ tab\t \u2028", 60.25),
        (None, None, 3600),
    ],
)
def test_value_is_exactly_what_json_dumps_writes(
    blacklist: Blacklist, redis_client: redis.Redis, email, reason, exp_offset
) -> None:
    """Entries are encoded field by field (fast); the bytes equal ``json.dumps``'s."""
    now = blacklist.clock.now()
    exp = now + exp_offset  # an int or a float
    req = RevokeRequest("access", "s1", exp, "a1", "u1", email)
    blacklist.revoke([req], reason=reason, actor="ops")
    raw = redis_client.get(blacklist.token_key("s1", "a1"))
    expected = {
        "kind": "access", "sid": "s1", "sub": "u1", "email": email, "reason": reason,
        "actor": "ops", "revoked_at": round(now, 3), "exp": exp,
    }  # fmt: skip
    assert raw.decode() == json.dumps(expected, separators=(",", ":"))


# -- the expiry index ------------------------------------------------------------------------


def test_index_is_written_with_the_keys_in_one_eval(
    private_redis: redis.Redis, clock: FrozenClock
) -> None:
    bl = Blacklist(private_redis, prefix="t:", leeway=10, clock=clock)
    bl.ping()
    private_redis.config_resetstat()
    now = clock.now()
    written = bl.revoke([access("a1", now + 60), access("a2", now + 120)])
    stats = commandstats(private_redis)
    # One EVAL (atomic by itself: no MULTI/EXEC, so that a WAIT for replicas can follow it on
    # the same connection) writes both keys and their index entries.
    assert stats.get("eval") == 1 and "multi" not in stats and "exec" not in stats
    assert stats.get("set") == 2 and stats.get("zadd") == 2
    for key, ttl in written.items():
        score = private_redis.zscore(bl.layout.index_of(key), key)
        assert score is not None and abs(score - (now + ttl)) < 1e-3


def test_index_is_pruned_of_expired_members(
    blacklist: Blacklist, redis_client: redis.Redis, clock: FrozenClock
) -> None:
    now = clock.now()
    index = blacklist.layout.index_for_sid("s1")
    blacklist.revoke([access("short", now + 1), access("long", now + 600)])
    assert redis_client.zcard(index) == 2
    clock.advance(60)  # "short" (+ leeway) is over on our clock
    blacklist.revoke([access("newer", clock.now() + 600)])
    members = {m.decode() for m in redis_client.zrange(index, 0, -1)}
    assert members == {blacklist.token_key("s1", "long"), blacklist.token_key("s1", "newer")}
    assert blacklist.count() == 2
    # Once everything has expired, a prune removes the index key itself.
    clock.advance(7200)
    assert blacklist.count() == 0
    assert not redis_client.exists(index)


def test_page_is_ordered_by_expiry(blacklist: Blacklist, clock: FrozenClock) -> None:
    now = clock.now()
    exps = [900, 30, 3600, 120, 60]
    blacklist.revoke([access(f"a{e}", now + e, sid=f"s{e}") for e in exps], actor="ops")
    page = blacklist.page()
    assert [e.key for e in page] == [blacklist.token_key(f"s{e}", f"a{e}") for e in sorted(exps)]
    assert [e.expires_at for e in page] == sorted(e.expires_at for e in page)
    first = page[0]
    assert (first.kind, first.sid, first.sub, first.actor) == ("access", "s30", "u1", "ops")
    assert 30 <= first.ttl <= 30 + blacklist.leeway + 1
    desc = blacklist.page(descending=True)
    assert [e.key for e in desc] == [e.key for e in reversed(page)]
    assert [e.key for e in blacklist.page(offset=1, limit=2)] == [e.key for e in page[1:3]]
    assert blacklist.page(offset=10) == []
    assert first.to_dict()["key"] == first.key


def test_page_drops_index_members_whose_key_is_gone(
    blacklist: Blacklist, redis_client: redis.Redis, clock: FrozenClock
) -> None:
    now = clock.now()
    blacklist.revoke([access("a1", now + 60), access("a2", now + 120)])
    redis_client.delete(blacklist.token_key("s1", "a1"))  # e.g. removed by hand
    assert [e.key for e in blacklist.page()] == [blacklist.token_key("s1", "a2")]
    index = blacklist.layout.index_for_sid("s1")
    assert redis_client.zscore(index, blacklist.token_key("s1", "a1")) is None


def test_scan_finds_keys_written_by_others_without_the_index(
    blacklist: Blacklist, redis_client: redis.Redis, clock: FrozenClock
) -> None:
    now = clock.now()
    blacklist.revoke([access("ours", now + 60)])
    redis_client.set(blacklist.token_key("s1", "theirs"), "revoked", ex=100)  # not JSON
    redis_client.set(
        blacklist.sid_key("their-session"), json.dumps({"sid": "their-session"}), ex=200
    )
    found: dict[str, object] = {}
    cursor = 0
    while True:
        cursor, entries = blacklist.scan(cursor, count=10)
        found.update((e.key, e) for e in entries)
        if cursor == 0:
            break
    assert set(found) == {
        blacklist.token_key("s1", "ours"),
        blacklist.token_key("s1", "theirs"),
        blacklist.sid_key("their-session"),
    }
    assert not any(blacklist.layout.is_index(k) for k in found)
    theirs = found[blacklist.token_key("s1", "theirs")]
    assert theirs.kind == "token" and 90 < theirs.ttl <= 100  # type: ignore[attr-defined]
    assert found[blacklist.sid_key("their-session")].kind == "session"  # type: ignore[attr-defined]
    assert [e.key for e in blacklist.page()] == [blacklist.token_key("s1", "ours")]


def test_entries_for_session_and_unrevoke(
    blacklist: Blacklist, redis_client: redis.Redis, clock: FrozenClock, prefix: str
) -> None:
    now = clock.now()
    blacklist.revoke(
        [
            access("a1", now + 60),
            RevokeRequest(KIND_REFRESH, "s1", now + 3600, "r1"),
            RevokeRequest(KIND_SESSION, "s1", now + 3600, None),
        ]
    )
    entries = blacklist.entries_for_session("s1", ["a1", "r1", "not-revoked", ""])
    assert {e.kind for e in entries} == {"access", "refresh", "session"}
    assert blacklist.unrevoke([e.key for e in entries]) == 3
    assert all_keys(redis_client, prefix) == []
    assert blacklist.unrevoke([]) == 0


# -- is_revoked ------------------------------------------------------------------------------


def test_is_revoked_by_token_or_session(blacklist: Blacklist, clock: FrozenClock) -> None:
    now = clock.now()
    blacklist.revoke([access("a1", now + 60), RevokeRequest(KIND_SESSION, "s2", now + 60)])
    assert blacklist.is_revoked("a1", "s1")
    assert blacklist.is_revoked("other", "s2")
    assert blacklist.is_revoked(None, "s2")
    assert not blacklist.is_revoked("other", "other")
    assert not blacklist.is_revoked(None, None)
    # A token without a session id is keyed under the empty id's shard: revocable, checkable.
    blacklist.revoke([RevokeRequest(KIND_ACCESS, "", now + 60, "no-sid")])
    assert blacklist.is_revoked("no-sid", None) and blacklist.is_revoked("no-sid", "")
    assert not blacklist.is_revoked("other", None)


def test_is_revoked_is_a_single_exists(private_redis: redis.Redis, clock: FrozenClock) -> None:
    bl = Blacklist(private_redis, prefix="t:", leeway=10, clock=clock)
    bl.revoke([RevokeRequest(KIND_SESSION, "s1", clock.now() + 60)])
    private_redis.config_resetstat()
    assert bl.is_revoked("some-jti", "s1")
    stats = commandstats(private_redis)
    stats.pop("config|resetstat", None)
    stats.pop("config", None)
    assert stats == {"exists": 1}
    private_redis.config_resetstat()
    assert not bl.is_revoked(None, None)  # nothing to ask: no round trip at all
    stats = commandstats(private_redis)
    assert "exists" not in stats


def test_ping_and_count(blacklist: Blacklist, clock: FrozenClock) -> None:
    assert blacklist.ping() >= 0
    assert blacklist.count() == 0
    blacklist.revoke([access(f"a{i}", clock.now() + 60) for i in range(3)])
    assert blacklist.count() == 3


def test_scan_treats_the_prefix_as_literal_text(
    redis_client: redis.Redis, clock: FrozenClock, prefix: str
) -> None:
    glob_prefix = prefix + "a[1]*?:"
    bl = Blacklist(redis_client, prefix=glob_prefix, clock=clock)
    bl.revoke([access("mine", clock.now() + 60)])
    # Keys the unescaped pattern "…a[1]*?:bl:*" would also have matched.
    redis_client.set(prefix + "a1xy:bl:not-mine", "x", ex=60)
    cursor, keys = 0, set()
    while True:
        cursor, entries = bl.scan(cursor, count=100)
        keys |= {e.key for e in entries}
        if cursor == 0:
            break
    assert keys == {bl.token_key("s1", "mine")}


# -- the layout --------------------------------------------------------------------------------


def test_a_sessions_keys_and_its_index_shard_share_one_slot(blacklist: Blacklist) -> None:
    from redis.crc import key_slot

    from sessionmon.core.blacklist_keys import SHARDS, shard_tags

    slots = {key_slot(t.encode()) for t in shard_tags()}
    assert len(slots) == SHARDS  # the shards spread over distinct slot ranges
    assert sorted(slots) == [key_slot(t.encode()) for t in shard_tags()]
    for sid in ("s1", "s2", "a-much-longer-session-id", "ünïcode"):
        keys = [
            blacklist.sid_key(sid),
            blacklist.token_key(sid, "j1"),
            blacklist.layout.index_for_sid(sid),
        ]
        assert len({key_slot(k.encode()) for k in keys}) == 1, keys
        assert blacklist.layout.index_of(blacklist.sid_key(sid)) == keys[2]


def test_many_sessions_across_shards_are_listed_counted_and_checked(
    blacklist: Blacklist, clock: FrozenClock
) -> None:
    now = clock.now()
    reqs = [access(f"a{i}", now + 100 + i, sid=f"sess-{i}") for i in range(60)]
    written = blacklist.revoke(reqs)
    assert len(written) == 60
    assert len({blacklist.layout.index_of(k) for k in written}) > 3  # spread over shards
    assert blacklist.count() == 60
    assert [e.key for e in blacklist.page(limit=60)] == [
        blacklist.token_key(f"sess-{i}", f"a{i}") for i in range(60)
    ]
    assert [e.key for e in blacklist.page(offset=55, limit=10, descending=True)] == [
        blacklist.token_key(f"sess-{i}", f"a{i}") for i in range(4, -1, -1)
    ]
    assert all(blacklist.is_revoked(f"a{i}", f"sess-{i}") for i in range(60))
    assert not blacklist.is_revoked("a0", "sess-1") or blacklist.layout.tag(
        "sess-1"
    ) == blacklist.layout.tag("sess-0")


@single_node_only("the old layout existed on one server only")
def test_the_old_layout_is_still_read_on_one_server(
    blacklist: Blacklist, redis_client: redis.Redis, clock: FrozenClock, prefix: str
) -> None:
    now = clock.now()
    old_token, old_sid = f"{prefix}bl:old-jti", f"{prefix}bl:sid:old-session"
    redis_client.set(old_token, json.dumps({"kind": "access", "sid": "x"}), ex=100)
    redis_client.set(old_sid, json.dumps({"kind": "session", "sid": "old-session"}), ex=200)
    redis_client.zadd(f"{prefix}bl:index", {old_token: now + 100, old_sid: now + 200})
    blacklist.revoke([access("new", now + 150, sid="new-session")])
    assert blacklist.is_revoked("old-jti", "x")
    assert blacklist.is_revoked(None, "old-session")
    assert blacklist.count() == 3
    assert [e.key for e in blacklist.page()] == [
        old_token,
        blacklist.token_key("new-session", "new"),
        old_sid,
    ]
    assert {e.key for e in blacklist.entries_for_session("old-session")} == {old_sid}


def test_a_page_dominated_by_one_shard_is_exact(blacklist: Blacklist, clock: FrozenClock) -> None:
    # The first 100 to expire are all in one shard (one session's tokens): the merge must ask
    # that shard for more than its first share.
    now = clock.now()
    crowded = [access(f"t{i:03d}", now + 100 + i, sid="crowded") for i in range(100)]
    others = [access(f"o{i}", now + 1000 + i, sid=f"other-{i}") for i in range(50)]
    blacklist.revoke(crowded + others)
    truth = [blacklist.token_key(r.sid, r.jti or "") for r in crowded + others]
    assert [e.key for e in blacklist.page(limit=120)] == truth[:120]
    assert [e.key for e in blacklist.page(offset=90, limit=20)] == truth[90:110]
    assert [e.key for e in blacklist.page(limit=120, descending=True)] == truth[::-1][:120]
    assert [e.key for e in blacklist.page(offset=40, limit=80, descending=True)] == (
        truth[::-1][40:120]
    )
