"""Filtering the blacklist view: every key in the expiry index whose text contains a string.

The view reads one window of the index at a time, so a filter cannot look only at what is loaded:
the keys an operator wants (one user's, during an incident) may be anywhere among a million.
``search`` walks every shard of the index in the view's order, one page per round trip pair
(``ZRANGEBYSCORE ... LIMIT`` then the values), merges the shards' matches, tests the raw JSON
first (most keys are rejected without being parsed)
and stops at ``cap`` matches. The walk moves by score, not by rank, so keys expiring (pruned at
the low end) or revoked meanwhile never make it skip a key; a key seen twice is dropped. Redis
is never asked to do more than one page of work at a time (no long Lua loop blocking it).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

from sessionmon.core.blacklist import Blacklist, BlacklistEntry, redis_errors

PAGE = 2000  # index members per round trip
CAP = 1000  # matches kept at most


@dataclass(frozen=True)
class SearchResult:
    """What one walk over the index found for ``text``."""

    text: str
    descending: bool
    entries: list[BlacklistEntry] = field(default_factory=list)  # in the view's order
    scanned: int = 0  # keys looked at
    total: int = 0  # keys in the index when the walk started
    capped: bool = False  # stopped at ``cap`` matches: more may exist
    error: str | None = None  # the walk failed (Redis unreachable): ``entries`` is empty
    at: float = 0.0  # clock time of the walk
    seconds: float = 0.0  # how long it took


def entry_matches(entry: BlacklistEntry, needle: str) -> bool:
    """True when ``needle`` (lower case) is in the key, email, user, session id, reason, actor or
    kind of ``entry``."""
    fields = (
        entry.key,
        entry.email,
        entry.sub,
        entry.sid,
        entry.reason,
        entry.actor,
        entry.kind,
    )
    return any(needle in value.lower() for value in fields if value)


def search(
    blacklist: Blacklist,
    text: str,
    *,
    descending: bool = False,
    cap: int = CAP,
    page: int = PAGE,
    stop: Callable[[], bool] = lambda: False,
    progress: Callable[[int, int, int], None] | None = None,
) -> SearchResult:
    """Keys whose text contains ``text`` (case-insensitive), in expiry order, at most ``cap``.

    ``stop()`` is asked between pages (a newer filter cancels this one); ``progress(scanned,
    total, found)`` is called about five times a second on long walks. Raises
    ``RedisUnavailable``.
    """
    needle = text.strip().lower()
    started = time.perf_counter()
    now = blacklist.clock.now()
    total = blacklist.count()  # prunes expired members first
    # JSON escapes only quotes, backslashes, control and non-ASCII characters: for any other
    # needle, "not in the raw bytes" proves "not in any field" without parsing.
    raw_needle = needle.encode() if needle.isascii() and needle.isprintable() else None
    if raw_needle is not None and (b'"' in raw_needle or b"\\" in raw_needle):
        raw_needle = None
    found: list[BlacklistEntry] = []
    scanned = 0
    capped = False
    last_report = time.monotonic()
    # Each index shard is walked in the view's order until it has ``cap`` matches (later ones
    # of that shard come after them); the shards' matches are merged and cut at ``cap``.
    for index in blacklist.index_keys:
        if stop():
            break
        shard: list[BlacklistEntry] = []
        seen: set[str] = set()
        bound = float("inf") if descending else float("-inf")
        skip = 0  # members at exactly ``bound`` already walked past
        while not stop():
            with redis_errors():
                if descending:
                    members = cast(
                        "list[tuple[bytes, float]]",
                        blacklist.client.zrevrangebyscore(
                            index, bound, "-inf", start=skip, num=page, withscores=True
                        ),
                    )
                else:
                    members = cast(
                        "list[tuple[bytes, float]]",
                        blacklist.client.zrangebyscore(
                            index, bound, "+inf", start=skip, num=page, withscores=True
                        ),
                    )
                if not members:
                    break
                values = blacklist.get_values([m for m, _ in members])
            scanned += len(members)
            full = False
            for (member, score), raw in zip(members, values, strict=True):
                if raw is None:
                    continue  # expired between the two commands
                key = member.decode() if isinstance(member, bytes) else str(member)
                if key in seen:
                    continue
                if raw_needle is not None and needle not in key.lower():
                    data = raw if isinstance(raw, bytes) else str(raw).encode()
                    if raw_needle not in data.lower():
                        continue
                entry = blacklist.entry(key, raw, float(score), now)
                if not entry_matches(entry, needle):
                    continue
                seen.add(key)
                shard.append(entry)
                if len(shard) >= cap:
                    full = True
                    break
            if full:
                capped = True
                break
            last = float(members[-1][1])
            ties = sum(1 for _, s in members if float(s) == last)
            if last == bound:
                skip += len(members)  # a whole page at one score
            else:
                bound, skip = last, ties
            if len(members) < page:
                break
            if progress is not None and time.monotonic() - last_report >= 0.2:
                last_report = time.monotonic()
                progress(scanned, total, len(found) + len(shard))
        found += shard
    found.sort(key=lambda e: (e.expires_at, e.key), reverse=descending)
    if len(found) > cap:
        capped = True
    found = found[:cap]
    return SearchResult(
        text=text,
        descending=descending,
        entries=found,
        scanned=scanned,
        total=max(total, scanned),
        capped=capped,
        at=now,
        seconds=time.perf_counter() - started,
    )
