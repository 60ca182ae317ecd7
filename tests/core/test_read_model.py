"""The monitor's read model, on both backends: index-only sort plans, orders filled in the
background (first rows and the cursor's neighbourhood at once, the rest from the same snapshot),
the cursor's position counted on the index (NULL keys included), the trigram filter agreeing with
a plain substring test, and the change token."""

from __future__ import annotations

import threading
import time
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sessionmon.core.errors import DatabaseError
from sessionmon.core.store import (
    SEARCH_COLUMNS,
    SORTS,
    Backend,
    DatabaseUrl,
    Order,
    Session,
    SessionStore,
    SqliteReader,
    SqliteStore,
    ViewQuery,
    keyset,
    open_reader,
    open_store,
)
from sessionmon.core.store import order as order_module
from sessionmon.core.store.sqlite_schema import SEARCH_TABLE
from sessionmon.tui.model import SessionList, find_rowid
from tests.support.orders import CountGate, exact_of

NOW = 1_800_000_000.0
QUERIES = [ViewQuery(sort, reverse) for sort in SORTS for reverse in (False, True)]


def make_session(i: int) -> Session:
    """Sessions with ties, NULL emails and NULL access expiries, a few of them expired."""
    return Session(
        id=f"sid-{i:04d}-{'AbC'[i % 3]}",
        user_id=f"u{i % 11}",
        email=None if i % 9 == 0 else f"User{i % 11}@Example.com",
        name=f"Name {i % 13}",
        created_at=NOW - 1000 + i % 17,
        last_seen_at=NOW - (i * 37) % 50,
        ip=f"10.0.{i % 4}.{i % 7}",
        user_agent="pytest",
        access_jti=f"a{i}",
        access_exp=None if i % 10 == 0 else NOW + (i * 13) % 20 - 5,
        refresh_jti=f"r{i}",
        refresh_exp=NOW + (i * 29) % 40 - 4,  # a few already expired
        refresh_count=0,
        source="test",
    )


@pytest.fixture
def filled_db(store: SessionStore, db_url: DatabaseUrl) -> DatabaseUrl:
    for i in range(1, 241):
        store.insert_session(make_session(i))
    return db_url


@pytest.fixture
def reader(filled_db: DatabaseUrl) -> Iterator[Any]:
    r = open_reader(filled_db)
    yield r
    r.close()


def dialect(db: DatabaseUrl) -> keyset.Dialect:
    return keyset.SQLITE if db.backend is Backend.SQLITE else keyset.POSTGRES


def full_order(reader: Any, db: DatabaseUrl, query: ViewQuery) -> list[int]:
    """The order as one plain query would give it (no index hints, no background thread)."""
    d = dialect(db)
    sql = f"SELECT {d.key} FROM sessions WHERE refresh_exp > {d.mark} ORDER BY " + d.order_by(
        d.columns(query.sort), query.descending
    )
    return [r[0] for r in reader._all(sql, (NOW,))]


def expired_keys(reader: Any, db: DatabaseUrl) -> list[int]:
    d = dialect(db)
    return [
        r[0]
        for r in reader._all(f"SELECT {d.key} FROM sessions WHERE refresh_exp <= {d.mark}", (NOW,))
    ]


# -- plans ----------------------------------------------------------------------------------

QUERY_IDS = {"ids": lambda q: f"{q.sort}-{'desc' if q.reverse else 'asc'}"}


def pg_plan(reader: Any, sql: str, params: list[Any]) -> str:
    """The plan PostgreSQL would use if scanning the table and sorting were not allowed: an
    index that serves the order and the filter shows up, one that does not shows a Sort."""
    reader._all("SET enable_seqscan = off")
    reader._all("SET enable_sort = off")
    try:
        return " | ".join(r[0] for r in reader._all("EXPLAIN " + sql, params))
    finally:
        reader._all("RESET enable_seqscan")
        reader._all("RESET enable_sort")


@pytest.mark.parametrize("query", QUERIES, **QUERY_IDS)
def test_every_sort_reads_one_covering_index_without_sorting(filled_db, reader, query):
    sql, params = reader.order_sql(query, NOW)
    if filled_db.backend is Backend.SQLITE:
        plan = [r[3] for r in reader.conn.execute("EXPLAIN QUERY PLAN " + sql, params)]
        text = " | ".join(plan)
        assert len(plan) == 1 and "USING COVERING INDEX" in plan[0], text
        assert "TEMP B-TREE" not in text, text
    else:
        text = pg_plan(reader, sql, params)
        assert f"Index Only Scan using sessions_by_{query.sort} " in text or (
            f"Index Only Scan Backward using sessions_by_{query.sort} " in text
        ), text
        assert "Sort" not in text, text


def test_filter_of_three_characters_or_more_uses_the_trigram_index(filled_db, reader, store):
    if filled_db.backend is Backend.SQLITE:
        assert reader.searchable
        sql, params = reader.order_sql(ViewQuery(text="user3"), NOW)
        plan = " | ".join(r[3] for r in reader.conn.execute("EXPLAIN QUERY PLAN " + sql, params))
        assert f"SCAN {SEARCH_TABLE} VIRTUAL TABLE" in plan, plan
        assert "LIKE" not in sql
        short, _ = reader.order_sql(ViewQuery(text="u3"), NOW)  # too short for trigrams
        assert "LIKE" in short and SEARCH_TABLE not in short
    else:
        # At 50,000 sessions (and fresh statistics) PostgreSQL itself picks the trigram index.
        with store.transaction() as conn:
            conn.execute(
                "INSERT INTO sessions (id, user_id, email, name, created_at, last_seen_at, ip, "
                "access_exp, refresh_exp) SELECT 'big-' || g, 'u' || g, "
                "'person' || g || '@example.org', 'Name ' || g, %s, %s, '10.9.0.1', %s, %s "
                "FROM generate_series(1, 50000) g",
                (NOW, NOW, NOW + 100, NOW + 1000),
            )
            conn.execute("ANALYZE sessions")
        sql, params = reader.order_sql(ViewQuery(text="person4242@"), NOW)
        plan = " | ".join(r[0] for r in reader._all("EXPLAIN " + sql, params))
        assert "Bitmap Index Scan on sessions_search" in plan, plan
        assert len(reader.order(ViewQuery(text="person4242@"), NOW)) == 1


# -- the cursor's position ------------------------------------------------------------------


@pytest.mark.parametrize("query", QUERIES, **QUERY_IDS)
def test_position_of_every_row_matches_the_full_order(filled_db, reader, query):
    d, desc = dialect(filled_db), query.descending
    expected = full_order(reader, filled_db, query)
    for index, key in enumerate(expected):
        assert keyset.position(reader._all, d, query.sort, desc, NOW, key) == index, key
    gone = expired_keys(reader, filled_db)
    assert gone and all(
        keyset.position(reader._all, d, query.sort, desc, NOW, k) is None for k in gone
    )
    assert keyset.position(reader._all, d, query.sort, desc, NOW, 10**9) is None


@pytest.mark.parametrize("query", QUERIES, **QUERY_IDS)
def test_position_counted_from_either_end_matches_the_full_order(filled_db, reader, query):
    d, desc = dialect(filled_db), query.descending
    expected = full_order(reader, filled_db, query)
    n = len(expected)
    for index, key in enumerate(expected):
        assert keyset.position_in(reader._all, d, query.sort, desc, NOW, key, n) == index, key
        # The other end's count, as position_in uses it for rows in the second half.
        other = keyset.position(reader._all, d, query.sort, not desc, NOW, key)
        assert n - 1 - other == index, key
    assert keyset.position_in(reader._all, d, query.sort, desc, NOW, 10**9, n) is None


@pytest.mark.parametrize("query", QUERIES, **QUERY_IDS)
@pytest.mark.parametrize("size", [1, 5, 300])
def test_keyset_window_is_the_slice_of_the_full_order_around_every_row(
    filled_db, reader, query: ViewQuery, size: int
):
    """NULL emails and NULL access expiries, ties on every sort key: the window read by key is
    exactly the rows before and from the anchor in the full order (clipped at both ends)."""
    d, desc = dialect(filled_db), query.descending
    expected = full_order(reader, filled_db, query)
    for index, key in enumerate(expected):
        before, after = keyset.window(reader._all, d, query.sort, desc, NOW, key, size)
        assert before == expected[max(0, index - size) : index], (index, key)
        assert after == expected[index : index + 2 * size], (index, key)
    gone = expired_keys(reader, filled_db)
    assert gone and all(
        keyset.window(reader._all, d, query.sort, desc, NOW, k, 4) == ([], []) for k in gone
    )


@pytest.mark.parametrize("sort", list(SORTS))
def test_keyset_window_reads_the_sort_index_in_order_without_offset(filled_db, reader, sort):
    """Every scan of the window is a range search on the sort's covering index with no sort
    step (so it costs its LIMIT, wherever the anchor is)."""
    d = dialect(filled_db)
    seen: list[tuple[str, list[Any]]] = []

    def traced(sql: str, params: Any) -> list[tuple[Any, ...]]:
        seen.append((sql, list(params)))
        return reader._all(sql, params)

    key = reader._all(
        f"SELECT {d.key} FROM sessions WHERE email IS NULL AND refresh_exp > {d.mark} LIMIT 1",
        (NOW,),
    )[0][0]
    for reverse in (False, True):
        keyset.window(traced, d, sort, SORTS[sort].descending != reverse, NOW, key, 4)
    scans = [(q, p) for q, p in seen if q.startswith(f"SELECT {d.key} FROM sessions WHERE")]
    assert scans and not any("OFFSET" in q for q, _ in scans)
    for sql, params in scans:
        if filled_db.backend is Backend.SQLITE:
            rows = reader.conn.execute("EXPLAIN QUERY PLAN " + sql, params)
            plan = " | ".join(r[3] for r in rows)
            assert "COVERING INDEX" in plan and "TEMP B-TREE" not in plan, (sql, plan)
        else:
            plan = pg_plan(reader, sql, params)
            assert f"using sessions_by_{sort} " in plan and "Sort" not in plan, (sql, plan)


# -- orders filled in the background --------------------------------------------------------


@pytest.fixture
def progressive(filled_db: DatabaseUrl, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A reader that fills every order in the background, reading 8 rows first, and waits for
    ``resume()`` before the rest (so the partial state can be looked at)."""
    monkeypatch.setattr(order_module, "WINDOW", 8)
    monkeypatch.setattr(order_module, "RESUME_AFTER", 30.0)
    monkeypatch.setattr(order_module, "PROGRESSIVE_FROM", 0)
    r = open_reader(filled_db)
    yield r
    r.close()


@pytest.mark.parametrize("query", QUERIES, **QUERY_IDS)
def test_filling_order_has_the_top_and_the_anchor_first_then_everything(
    filled_db, progressive, query: ViewQuery
):
    expected = full_order(progressive, filled_db, query)
    anchor = expected[len(expected) // 2]
    order = progressive.order(ViewQuery(query.sort, query.reverse, around=anchor), NOW)
    assert isinstance(order, Order) and not order.complete
    assert len(order) == len(expected)
    assert list(order[i] for i in range(8)) == expected[:8]  # indexing never waits
    at = find_rowid(order, anchor)
    assert at == expected.index(anchor)
    assert order[at - 1] == expected[at - 1] and order[at + 1] == expected[at + 1]
    assert 0 in list(order.tobytes()[8 * 8 : 8 * (at - 4)])  # the rest is not read yet
    done: list[Order] = []
    order.when_complete(done.append)
    order.resume()
    assert order.wait(10)
    assert done == [order] and order.error is None
    assert list(order) == expected
    assert order[::-1] == type(order[::-1])("q", reversed(expected))


def test_reload_waits_for_the_running_fill_and_a_new_query_cancels_it(progressive):
    first = progressive.order(ViewQuery("email"), NOW)
    assert not first.complete
    second = progressive.order(ViewQuery("created_at"), NOW)  # another list: the first stops
    assert second.estimated  # the first one's count is known: estimated first
    assert first.wait(10) and isinstance(first.error, DatabaseError)
    with pytest.raises(DatabaseError, match="cancelled"):
        first[::-1]
    second.resume()
    assert second.wait(10) and second.error is None
    third = progressive.order(ViewQuery("created_at"), NOW)  # the same list again: a reload
    third.resume()
    assert not third.estimated  # a reload of the same list is read exactly
    exact = second.settled
    assert exact is not None and not exact.estimated
    assert third.wait(10) and list(third) == list(exact)


def test_a_query_interrupted_by_the_cancel_reports_cancelled(progressive, monkeypatch):
    """The race CI once lost: the cancel interrupts a query that is running, whose own error
    ("interrupted") must not stand in for the reason the order stopped."""
    cancelled = threading.Event()
    cancel, run = order_module._Fill.cancel, order_module._Fill._run

    def cancel_and_tell(fill: Any) -> None:
        cancel(fill)
        cancelled.set()

    def run_until_interrupted(fill: Any) -> None:
        open_snapshot = fill.open_snapshot

        def opened() -> Any:
            snap = open_snapshot()

            def chunks(size: int) -> Iterator[list[int]]:
                assert cancelled.wait(20), "the order was never cancelled"  # a query running
                raise RuntimeError("interrupted")  # what the driver raises then
                yield []

            snap.chunks = chunks
            return snap

        fill.open_snapshot = opened
        run(fill)

    monkeypatch.setattr(order_module._Fill, "cancel", cancel_and_tell)
    monkeypatch.setattr(order_module._Fill, "_run", run_until_interrupted)
    first = progressive.order(ViewQuery("email"), NOW)
    first.resume()
    cancelled.clear()
    progressive.order(ViewQuery("created_at"), NOW)  # another list: the first is cancelled
    assert first.wait(10) and isinstance(first.error, DatabaseError)
    assert "cancelled" in str(first.error) and "interrupted" not in str(first.error)


@pytest.mark.parametrize("sort", ["email", "created_at", "refresh_exp"])
def test_a_new_long_order_comes_first_without_counting_then_exact(
    filled_db, progressive, monkeypatch, sort
):
    first = progressive.order(ViewQuery("access_exp"), NOW)  # counted: the reader knows ~N
    assert not first.estimated
    first.resume()
    assert first.wait(10)
    query = ViewQuery(sort)
    expected = full_order(progressive, filled_db, query)
    anchor = expected[len(expected) * 2 // 3]
    gate = CountGate(monkeypatch)
    order = progressive.order(ViewQuery(sort, around=anchor), NOW)
    # Made while the exact count is held: estimated, the top exact, the anchor's rows present.
    assert order.estimated and order.settled is None and not order.complete
    assert list(order[i] for i in range(8)) == expected[:8]
    at = find_rowid(order, anchor)
    assert at >= 8 and order[at + 1] == expected[expected.index(anchor) + 1]
    assert order.anchor == (anchor, at)
    gate.open()
    exact = exact_of(order)
    assert not exact.estimated and len(exact) == len(expected)
    assert exact.anchor == (anchor, expected.index(anchor))  # the exact position
    assert exact[expected.index(anchor)] == anchor
    order.resume()  # passes on to the exact order
    assert order.wait(10) and order.error is None
    assert list(exact) == expected and order[::-1] == exact[::-1]


def test_an_estimated_count_is_marked_and_the_exact_one_follows(
    filled_db, store, progressive, monkeypatch
):
    first = progressive.order(ViewQuery(), NOW)
    first.resume()
    assert first.wait(10) and not first.estimated
    counted = len(first)
    gone = list(first)[:30]
    d = dialect(filled_db)
    with store.transaction() as conn:
        marks = ", ".join(d.mark for _ in gone)
        conn.execute(f"DELETE FROM sessions WHERE {d.key} IN ({marks})", gone)
    gate = CountGate(monkeypatch)
    order = progressive.order(ViewQuery("last_seen_at"), NOW)
    assert gate.counting.wait(10)  # the thread is counting; the order is out already
    # The last count, as an estimate: never shown as exact.
    assert order.estimated and len(order) == counted
    gate.open()
    exact = exact_of(order)
    assert not exact.estimated and len(exact) == counted - 30
    order.resume()
    assert exact.wait(10) and list(exact) == full_order(
        progressive, filled_db, ViewQuery("last_seen_at")
    )


def test_an_estimated_order_left_for_another_gives_no_exact_one(
    filled_db, progressive, monkeypatch
):
    first = progressive.order(ViewQuery(), NOW)
    first.resume()
    assert first.wait(10)
    gate = CountGate(monkeypatch)
    left = progressive.order(ViewQuery("email"), NOW)
    assert left.estimated and gate.counting.wait(10)
    got: list[Order | None] = []
    left.when_exact(got.append)
    following = progressive.order(ViewQuery("created_at"), NOW)  # the operator moved on
    gate.open()
    assert left.wait(10) and isinstance(left.error, DatabaseError)
    assert got == [None]  # never an exact order for a list nobody looks at
    assert following.estimated
    following.resume()
    assert following.wait(10) and following.error is None
    assert list(exact_of(following)) == full_order(progressive, filled_db, ViewQuery("created_at"))


def test_small_orders_are_read_at_once(reader):
    order = reader.order(ViewQuery("last_seen_at"), NOW)
    assert isinstance(order, Order) and order.complete and order.error is None
    assert 0 not in order


def test_model_finds_its_session_when_the_order_completes(filled_db, progressive):
    query = ViewQuery("created_at")
    expected = full_order(progressive, filled_db, query)
    model = SessionList(query)
    model.set_order(Order.complete_from(array("q", expected)))
    wanted = expected[-1]
    model.move_to(len(expected) - 1)
    assert model.query.around == wanted  # a reload reads around the cursor first
    order = progressive.order(ViewQuery("access_exp"), NOW)  # no anchor: only the top is read
    model.set_order(order)
    assert model.cursor_rowid != wanted
    assert model.query.around == wanted  # still looked for
    order.resume()
    assert order.wait(10)
    assert model.order_completed(order) is True
    assert model.cursor_rowid == wanted and model.order[model.cursor] == wanted


def test_rows_not_read_yet_are_not_selectable(progressive):
    order = progressive.order(ViewQuery(), NOW)
    model = SessionList()
    model.set_order(order)
    assert model.rowid_at(0) is not None
    assert model.rowid_at(len(order) - 1) is None  # 0: not read yet
    model.move_to(len(order) - 1)
    assert model.cursor_rowid is None and not model.complete
    order.resume()
    assert order.wait(10)
    model.order_completed(order)
    assert model.cursor_rowid == order[len(order) - 1] and model.complete


def test_rows_reads_sessions_by_key_and_skips_the_missing(filled_db, reader):
    keys = full_order(reader, filled_db, ViewQuery())[:5]
    rows = reader.rows([*keys, 10**9])
    assert sorted(rows) == sorted(keys)
    assert all(isinstance(s, Session) for s in rows.values())


# -- the filter ------------------------------------------------------------------------------


def matching_order(reader: Any, db: DatabaseUrl, text: str) -> list[int]:
    """The live rows (in access-expiry order) with ``text`` in email, name, id or ip, tested in
    Python: case-insensitive substring, no wildcards."""
    keys = full_order(reader, db, ViewQuery())
    rows = reader.rows(keys)
    needle = text.casefold()
    return [
        k
        for k in keys
        if any(needle in (getattr(rows[k], c) or "").casefold() for c in SEARCH_COLUMNS)
    ]


@pytest.mark.parametrize(
    "text",
    [
        "user3@",
        "USER3@EXAMPLE",
        "name 1",
        "10.0.2.",
        "sid-0042",
        "abc",
        "zzz",
        'a"b',
        "e 1",
        "u3",
        "%",
        "_",
        "1_",
    ],
)
def test_filter_finds_every_substring_match_and_nothing_else(filled_db, reader, text: str):
    found = list(reader.order(ViewQuery(text=text), NOW))
    assert found == matching_order(reader, filled_db, text)


def test_search_index_follows_inserts_updates_and_deletes(
    filled_db: DatabaseUrl, store: SessionStore
):
    store.insert_session(make_session(5001))
    reader = open_reader(filled_db)
    try:
        assert len(reader.order(ViewQuery(text="sid-5001"), NOW)) == 1
        d = dialect(filled_db)
        with store.transaction() as conn:
            conn.execute(
                f"UPDATE sessions SET email = 'moved@elsewhere.org' WHERE id LIKE {d.mark}",
                ("sid-5001%",),
            )
        assert len(reader.order(ViewQuery(text="elsewhere"), NOW)) == 1
        assert len(reader.order(ViewQuery(text="sid-5001"), NOW)) == 1
        store.delete_sessions_with_audit([make_session(5001).id], [])
        assert len(reader.order(ViewQuery(text="sid-5001"), NOW)) == 0
        assert len(reader.order(ViewQuery(text="elsewhere"), NOW)) == 0
        if isinstance(store, SqliteStore):  # the index and the table agree row for row
            store.conn.execute(
                f"INSERT INTO {SEARCH_TABLE}({SEARCH_TABLE}) VALUES ('integrity-check')"
            )
    finally:
        reader.close()


def test_sqlite_filter_falls_back_to_like_without_the_search_table(db_path: Path):
    with SqliteStore(db_path) as store:
        for i in range(1, 241):
            store.insert_session(make_session(i))
        store.conn.execute(f"DROP TABLE {SEARCH_TABLE}")
    reader = SqliteReader(db_path)
    try:
        assert not reader.searchable
        db = DatabaseUrl(Backend.SQLITE, db_path)
        assert list(reader.order(ViewQuery(text="user3@"), NOW)) == matching_order(
            reader, db, "user3@"
        )
    finally:
        reader.close()


# -- the change token ------------------------------------------------------------------------


def test_change_token_moves_with_every_commit_of_another_connection(filled_db: DatabaseUrl, reader):
    """Inserts, updates, deletes and purges by another connection (another process would do
    the same) each move the token; nothing committed, no move."""
    token = reader.change_token()
    assert reader.change_token() == token
    other = open_store(filled_db)
    try:
        steps = [
            lambda: other.insert_session(make_session(7001)),
            lambda: other.touch(make_session(7001).id, NOW + 1),
            lambda: other.delete_sessions_with_audit([make_session(7001).id], []),
            lambda: other.purge_expired(NOW),
        ]
        for step in steps:
            step()
            deadline = time.monotonic() + 5
            while reader.change_token() == token:
                assert time.monotonic() < deadline, "the change token did not move"
            token = reader.change_token()
    finally:
        other.close()


def test_an_unexpected_error_in_the_fill_thread_is_a_clear_error_not_a_hang(
    filled_db: DatabaseUrl, monkeypatch: pytest.MonkeyPatch
):
    """A bug in the order thread reaches the poller as one DatabaseError, never a hang or an
    AssertionError (the app turns DatabaseError into its banner)."""
    monkeypatch.setattr(order_module, "PROGRESSIVE_FROM", 0)
    r = open_reader(filled_db)

    def broken(query: ViewQuery, now: float) -> tuple[str, dict[str, object]]:
        raise KeyError("boom")

    monkeypatch.setattr(r, "order_sql", broken)
    try:
        with pytest.raises(DatabaseError, match="reading the session order failed"):
            r.order(ViewQuery("access_exp", False), NOW)
    finally:
        r.close()
