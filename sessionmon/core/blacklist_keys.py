"""The blacklist's key layout: a session's keys and its index shard share one hash tag.

Keys (``<p>`` is the prefix, ``<t>`` the session's shard tag, see below)::

    <p>bl:{<t>}:sid:<sid>     the whole session is revoked
    <p>bl:{<t>}:jti:<jti>     one token of that session is revoked
    <p>bl:index:{<t>}         the expiry index of shard <t> (sorted set, score = expiry time)

Why a shard tag and not the session id as the tag: in a Redis Cluster one EVAL may only touch keys
of one hash slot. The tag is chosen from the session id (``crc32(sid) % SHARDS``), so a session's
keys *and* the index shard that lists them are in one slot: a session's revoke (its keys, their
TTLs and their index entries) stays one atomic EVAL on one node, and nothing can be on the
blacklist without being in the index (or the reverse) because of a failure between two steps.
The revocation check (jti key + sid key) is one ``EXISTS`` on one node. The ``SHARDS`` tags are
chosen once (deterministically, below) so that shard ``i`` hashes into the ``i``-th of ``SHARDS``
equal slot ranges: the shards spread over the masters of any cluster whose slots were assigned
in ranges (``redis-cli --cluster create``). Listing merges the heads of the ``SHARDS`` indexes.

The layout before sessionmon 0.x (single node only): ``<p>bl:<jti>``, ``<p>bl:sid:<sid>`` and one
index ``<p>bl:index``. On a single node those keys are still read (the check looks at them too;
listing merges the old index as one more shard) until ``sessionmon blacklist --migrate-layout``
rewrites them; a cluster never holds them.
"""

from __future__ import annotations

import zlib
from functools import cache

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

SHARDS = 16


@cache
def shard_tags() -> tuple[str, ...]:
    """The ``SHARDS`` hash tags: tag ``i`` is the first of ``s<i>``, ``s<i>.1``, ``s<i>.2``...
    whose slot falls in the ``i``-th equal range of the 16384 slots (fixed forever: data is
    stored under them)."""
    width = REDIS_CLUSTER_HASH_SLOTS // SHARDS
    tags = []
    for i in range(SHARDS):
        k = 0
        while True:
            tag = f"s{i}" if k == 0 else f"s{i}.{k}"
            if key_slot(tag.encode()) // width == i:
                tags.append(tag)
                break
            k += 1
    return tuple(tags)


def shard_of(sid: str) -> int:
    """The shard of session ``sid`` (stable: crc32 of its UTF-8 bytes)."""
    return zlib.crc32(sid.encode()) % SHARDS


class KeyLayout:
    """Key names under one prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.base = f"{prefix}bl:"  # every blacklist key starts with it (SCAN, tracking)
        self.index_keys = tuple(f"{self.base}index:{{{t}}}" for t in shard_tags())
        self.legacy_index = f"{self.base}index"

    def tag(self, sid: str) -> str:
        return shard_tags()[shard_of(sid)]

    def sid_key(self, sid: str) -> str:
        return f"{self.base}{{{self.tag(sid)}}}:sid:{sid}"

    def token_key(self, sid: str, jti: str) -> str:
        return f"{self.base}{{{self.tag(sid)}}}:jti:{jti}"

    def index_for_sid(self, sid: str) -> str:
        return self.index_keys[shard_of(sid)]

    def index_of(self, key: str) -> str:
        """The index a blacklist key belongs in: its tag's shard, or the old single index."""
        rest = key[len(self.base) :] if key.startswith(self.base) else key
        if rest.startswith("{"):
            tag = rest[1 : rest.find("}")]
            return f"{self.base}index:{{{tag}}}"
        return self.legacy_index

    def is_session_key(self, key: str) -> bool:
        rest = key[len(self.base) :] if key.startswith(self.base) else key
        if rest.startswith("{"):
            rest = rest[rest.find("}") + 2 :]
        return rest.startswith("sid:")

    def is_index(self, key: str) -> bool:
        return key == self.legacy_index or key.startswith(f"{self.base}index:{{")

    def legacy_sid_key(self, sid: str) -> str:
        return f"{self.base}sid:{sid}"

    def legacy_token_key(self, jti: str) -> str:
        return f"{self.base}{jti}"

    def is_legacy(self, key: str) -> bool:
        return key.startswith(self.base) and not key[len(self.base) :].startswith("{")
