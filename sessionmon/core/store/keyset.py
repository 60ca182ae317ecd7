"""Keyset reads of a sort's covering index: a row's position and the rows around it, no OFFSET.

Written once for both backends; a ``Dialect`` names what differs (the row key column, the
placeholder, null-safe equality, how the live test keeps the sort's own index, how to insert a
row only if absent). NULLs sort first ascending and last descending on both (PostgreSQL is told
so with ``NULLS FIRST``/``NULLS LAST`` in its indexes and queries). Only a sort's first column
may be NULL: the others are ``refresh_exp`` of a live row and the row key.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sessionmon.core.store.schema import SORTS

Run = Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]


@dataclass(frozen=True)
class Dialect:
    key: str  # the row key column: "rowid" or "seq"
    mark: str  # the placeholder: "?" or "%s"
    same: str  # null-safe equality: "IS" or "IS NOT DISTINCT FROM"
    live_hint: str  # prefix of refresh_exp in the live test when the sort starts elsewhere
    nulls: bool  # write NULLS FIRST / NULLS LAST in ORDER BY
    ignore_prefix: str  # INSERT <this>INTO ... : leave a row whose key exists
    ignore_suffix: str  # ... VALUES (...)<this>
    keep_ids: str  # INSERT INTO t (...)<this> VALUES: write the given id into an identity column
    # The ``rotations`` column with one more record (generation, at, ip, user agent: four
    # placeholders) and at most ``{keep}`` records: computed by the database in the rotation's
    # own UPDATE (no JSON work in Python on that path); an unreadable value starts afresh.
    append_rotation: str = ""

    def columns(self, sort: str) -> tuple[str, ...]:
        return (*SORTS[sort].keys, self.key)

    def order_by(self, columns: Sequence[str], descending: bool) -> str:
        if descending:
            suffix = " DESC NULLS LAST" if self.nulls else " DESC"
        else:
            suffix = " NULLS FIRST" if self.nulls else ""
        return ", ".join(c + suffix for c in columns)

    def live(self, columns: Sequence[str]) -> str:
        """``refresh_exp > <mark>``, written so the planner keeps to the sort's own index."""
        prefix = "" if columns[0] == "refresh_exp" else self.live_hint
        return f"{prefix}refresh_exp > {self.mark}"


SQLITE = Dialect(
    key="rowid",
    mark="?",
    same="IS",
    live_hint="+",
    nulls=False,
    ignore_prefix="OR IGNORE ",
    ignore_suffix="",
    keep_ids="",
    append_rotation=(
        "json_insert(CASE WHEN json_valid(rotations) AND json_type(rotations) = 'array' THEN "
        "(CASE WHEN json_array_length(rotations) >= {keep} THEN json_remove(rotations, '$[0]') "
        "ELSE rotations END) ELSE '[]' END, '$[#]', "
        "json_object('generation', ?, 'at', ?, 'ip', ?, 'user_agent', ?))"
    ),
)
POSTGRES = Dialect(
    key="seq",
    mark="%s",
    same="IS NOT DISTINCT FROM",
    live_hint="",
    nulls=True,
    ignore_prefix="",
    ignore_suffix=" ON CONFLICT DO NOTHING",
    keep_ids=" OVERRIDING SYSTEM VALUE",
    # sessionmon_rotations: see postgres_schema._v4.
    append_rotation=(
        "sessionmon_rotations(rotations, jsonb_build_object('generation', %s::integer, "
        "'at', %s::double precision, 'ip', %s::text, 'user_agent', %s::text), {keep})"
    ),
)


def anchor(run: Run, d: Dialect, sort: str, now: float, key: int) -> tuple[Any, ...] | None:
    """The sort values of live row ``key`` (its key last), or None if it is not live."""
    columns = d.columns(sort)
    rows = run(
        f"SELECT {', '.join(columns[:-1])}, refresh_exp > {d.mark} FROM sessions "
        f"WHERE {d.key} = {d.mark}",
        (now, key),
    )
    if not rows or not rows[0][-1]:
        return None
    return (*rows[0][:-1], key)


def position(run: Run, d: Dialect, sort: str, descending: bool, now: float, key: int) -> int | None:
    """Index of live row ``key`` in the unfiltered order; None if it is not live.

    Counted on the sort's covering index: for each column, the rows equal on the columns before
    it and before the anchor on this one.
    """
    columns = d.columns(sort)
    values = anchor(run, d, sort, now, key)
    if values is None:
        return None
    live = d.live(columns)
    m = d.mark
    total = 0
    for i, (column, value) in enumerate(zip(columns, values, strict=True)):
        equal = [f"{c} {d.same} {m}" for c in columns[:i]]
        args = [now, *values[:i]]
        tests: list[tuple[str, list[object]]] = []
        if descending:
            if value is None:
                tests.append((f"{column} IS NOT NULL", []))
            else:
                tests.append((f"{column} > {m}", [value]))
        elif value is not None:
            tests.append((f"{column} < {m}", [value]))
            if column != d.key:
                tests.append((f"{column} IS NULL", []))
        for test, extra in tests:
            where = " AND ".join([live, *equal, test])
            total += int(run(f"SELECT COUNT(*) FROM sessions WHERE {where}", [*args, *extra])[0][0])
    return total


def position_in(
    run: Run, d: Dialect, sort: str, descending: bool, now: float, key: int, n: int
) -> int | None:
    """``position`` of ``key`` among the ``n`` live rows, counted from the nearer end.

    Counting walks the index from one end to the row, so a row estimated to be in the second
    half is counted from the end (its position in the reversed order). The estimate only chooses
    the end; the count is exact either way.
    """
    if n > 1 and estimate_share(run, d, sort, descending, key) > 0.5:
        after = position(run, d, sort, not descending, now, key)
        return None if after is None else n - 1 - after
    return position(run, d, sort, descending, now, key)


def window(
    run: Run, d: Dialect, sort: str, descending: bool, now: float, key: int, size: int
) -> tuple[list[int], list[int]]:
    """Up to ``size`` keys before live row ``key`` and ``2 * size`` from it on, in view order.

    Each side is one or two range scans over the index, ordered as the index is: rows whose first
    sort column is NULL (first ascending, last descending) are a block of their own. Empty lists
    when the row is not live.
    """
    values = anchor(run, d, sort, now, key)
    if values is None:
        return [], []
    columns = d.columns(sort)
    # In view order, the rows from the anchor on are the keys above it when ascending (below it
    # when descending); the rows before it are the others, read towards the other side, reversed.
    up = not descending
    after = _scan(run, d, columns, values, up, True, now, 2 * size)
    before = _scan(run, d, columns, values, not up, False, now, size)
    before.reverse()
    return before, after


def _scan(
    run: Run,
    d: Dialect,
    columns: tuple[str, ...],
    values: tuple[Any, ...],
    up: bool,
    inclusive: bool,
    now: float,
    limit: int,
) -> list[int]:
    """Keys of up to ``limit`` live rows from the anchor ``values`` (itself if ``inclusive``)
    going up (ascending keys) or down, in that direction."""
    first, rest = columns[0], columns[1:]
    m = d.mark
    op = (">" if up else "<") + ("=" if inclusive else "")
    marks = ", ".join(m for _ in columns)
    whole = (f"({', '.join(columns)}) {op} ({marks})", list(values))
    tail = (
        f"{first} IS NULL AND ({', '.join(rest)}) {op} ({', '.join(m for _ in rest)})",
        list(values[1:]),
    )
    if values[0] is None:
        segments = [tail, (f"{first} IS NOT NULL", [])] if up else [tail]
    else:
        segments = [whole] if up else [whole, (f"{first} IS NULL", [])]
    order_by = d.order_by(columns, descending=not up)
    out: list[int] = []
    for where, args in segments:
        if len(out) >= limit:
            break
        sql = (
            f"SELECT {d.key} FROM sessions WHERE {d.live(columns)} AND {where} "
            f"ORDER BY {order_by} LIMIT {m}"
        )
        out.extend(r[0] for r in run(sql, [now, *args, limit - len(out)]))
    return out


def _as_number(value: object) -> float:
    """A number that orders like ``value`` does in the index (roughly, for text: its first
    bytes)."""
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        return float(int.from_bytes(value.encode()[:7].ljust(7, b"\0"), "big"))
    return float("-inf")  # NULL sorts first


def estimate_share(run: Run, d: Dialect, sort: str, descending: bool, key: int) -> float:
    """Roughly how far into the order row ``key`` is (0 top, 1 bottom), from its first sort key
    between the smallest and the largest (index look-ups)."""
    column = SORTS[sort].keys[0]
    value, low, high = run(
        f"SELECT (SELECT {column} FROM sessions WHERE {d.key} = {d.mark}), "
        f"(SELECT MIN({column}) FROM sessions), (SELECT MAX({column}) FROM sessions)",
        (key,),
    )[0]
    if value is None:
        share = 0.0
    elif low is None or high is None:
        share = 0.5
    else:
        lo, hi, v = _as_number(low), _as_number(high), _as_number(value)
        share = 0.5 if hi <= lo else min(1.0, max(0.0, (v - lo) / (hi - lo)))
    return 1.0 - share if descending else share
