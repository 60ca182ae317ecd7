"""The monitor's reader at scale: index-only sort plans, orders filled in the background (first
rows and the cursor's neighbourhood at once, the rest from the same snapshot), the cursor's
position counted on the index (NULL keys included), and the trigram filter agreeing with LIKE."""

from __future__ import annotations

import itertools
import sqlite3
from array import array
from collections.abc import Iterator
from pathlib import Path

import pytest

from sessionmon.core.auth import Auth
from sessionmon.core.errors import DatabaseError
from sessionmon.core.store import SEARCH_TABLE, Session, Store
from sessionmon.tui import reader as reader_module
from sessionmon.tui.model import SessionList, find_rowid
from sessionmon.tui.reader import SORTS, Order, SessionReader, ViewQuery

from .conftest import SIZE, loaded, polled, wait_for

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
def filled_db(db_path: Path) -> Path:
    with Store(db_path) as store:
        for i in range(1, 241):
            store.insert_session(make_session(i))
    return db_path


@pytest.fixture
def reader(filled_db: Path) -> Iterator[SessionReader]:
    r = SessionReader(filled_db)
    yield r
    r.close()


def full_order(db: Path, query: ViewQuery) -> list[int]:
    """The order as one plain query would give it (no index hints, no background thread)."""
    columns, _, _ = SORTS[query.sort]
    direction = " DESC" if query.descending else ""
    conn = sqlite3.connect(db)
    try:
        sql = "SELECT rowid FROM sessions WHERE refresh_exp > ? ORDER BY " + ", ".join(
            c + direction for c in columns
        )
        return [r[0] for r in conn.execute(sql, (NOW,))]
    finally:
        conn.close()


# -- plans ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query", QUERIES, ids=lambda q: f"{q.sort}-{'desc' if q.reverse else 'asc'}"
)
def test_every_sort_reads_one_covering_index_without_sorting(reader: SessionReader, query):
    sql, params = reader.order_sql(query, NOW)
    plan = [r[3] for r in reader.conn.execute("EXPLAIN QUERY PLAN " + sql, params)]
    text = " | ".join(plan)
    assert len(plan) == 1 and "USING COVERING INDEX" in plan[0], text
    assert "TEMP B-TREE" not in text, text


def test_filter_of_three_characters_or_more_uses_the_trigram_index(reader: SessionReader):
    assert reader.searchable
    sql, params = reader.order_sql(ViewQuery(text="user3"), NOW)
    plan = " | ".join(r[3] for r in reader.conn.execute("EXPLAIN QUERY PLAN " + sql, params))
    assert f"SCAN {SEARCH_TABLE} VIRTUAL TABLE" in plan, plan
    assert "LIKE" not in sql
    short, _ = reader.order_sql(ViewQuery(text="u3"), NOW)  # too short for trigrams
    assert "LIKE" in short and SEARCH_TABLE not in short


# -- the cursor's position ------------------------------------------------------------------


@pytest.mark.parametrize(
    "query", QUERIES, ids=lambda q: f"{q.sort}-{'desc' if q.reverse else 'asc'}"
)
def test_position_of_every_row_matches_the_full_order(filled_db: Path, reader, query):
    expected = full_order(filled_db, query)
    conn = reader.connect()
    try:
        for index, rowid in enumerate(expected):
            assert reader.position(conn, query, NOW, rowid) == index, rowid
        expired = conn.execute("SELECT rowid FROM sessions WHERE refresh_exp <= ?", (NOW,))
        gone = [r[0] for r in expired]
        assert gone and all(reader.position(conn, query, NOW, r) is None for r in gone)
        assert reader.position(conn, query, NOW, 10**9) is None
    finally:
        conn.close()


@pytest.mark.parametrize(
    "query", QUERIES, ids=lambda q: f"{q.sort}-{'desc' if q.reverse else 'asc'}"
)
def test_position_counted_from_either_end_matches_the_full_order(filled_db: Path, reader, query):
    expected = full_order(filled_db, query)
    reverse = ViewQuery(query.sort, not query.reverse)
    conn = reader.connect()
    try:
        n = len(expected)
        for index, rowid in enumerate(expected):
            assert reader.position_in(conn, query, NOW, rowid, n) == index, rowid
            # The other end's count, as position_in uses it for rows in the second half.
            assert n - 1 - reader.position(conn, reverse, NOW, rowid) == index, rowid
        assert reader.position_in(conn, query, NOW, 10**9, n) is None
    finally:
        conn.close()


@pytest.mark.parametrize(
    "query", QUERIES, ids=lambda q: f"{q.sort}-{'desc' if q.reverse else 'asc'}"
)
@pytest.mark.parametrize("size", [1, 5, 300])
def test_keyset_window_is_the_slice_of_the_full_order_around_every_row(
    filled_db: Path, reader, query: ViewQuery, size: int
):
    """NULL emails and NULL access expiries, ties on every sort key: the window read by key is
    exactly the rows before and from the anchor in the full order (clipped at both ends)."""
    expected = full_order(filled_db, query)
    conn = reader.connect()
    try:
        for index, rowid in enumerate(expected):
            before, after = reader.window(conn, query, NOW, rowid, size)
            assert before == expected[max(0, index - size) : index], (index, rowid)
            assert after == expected[index : index + 2 * size], (index, rowid)
        expired = conn.execute("SELECT rowid FROM sessions WHERE refresh_exp <= ?", (NOW,))
        gone = [r[0] for r in expired]
        assert gone and all(reader.window(conn, query, NOW, r, 4) == ([], []) for r in gone)
    finally:
        conn.close()


@pytest.mark.parametrize("sort", list(SORTS))
def test_keyset_window_reads_the_sort_index_in_order_without_offset(filled_db: Path, sort):
    """Every scan of the window is a range search on the sort's covering index with no sort
    step (so it costs its LIMIT, wherever the anchor is)."""
    conn = sqlite3.connect(filled_db)
    seen: list[str] = []
    conn.set_trace_callback(seen.append)
    try:
        rowid = conn.execute(
            "SELECT rowid FROM sessions WHERE email IS NULL AND refresh_exp > ? LIMIT 1", (NOW,)
        ).fetchone()[0]
        for reverse in (False, True):
            SessionReader.window(conn, ViewQuery(sort, reverse), NOW, rowid, 4)
        conn.set_trace_callback(None)
        scans = [q for q in seen if q.startswith("SELECT rowid FROM sessions WHERE")]
        assert scans and not any("OFFSET" in q for q in scans)
        for sql in scans:  # traced with the parameters inlined
            plan = " | ".join(r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql))
            assert "COVERING INDEX" in plan and "TEMP B-TREE" not in plan, (sql, plan)
    finally:
        conn.close()


# -- orders filled in the background --------------------------------------------------------


@pytest.fixture
def progressive(filled_db: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SessionReader]:
    """A reader that fills every order in the background, reading 8 rows first, and waits for
    ``resume()`` before the rest (so the partial state can be looked at)."""
    monkeypatch.setattr(reader_module, "WINDOW", 8)
    monkeypatch.setattr(reader_module, "RESUME_AFTER", 30.0)
    r = SessionReader(filled_db, progressive_from=0)
    yield r
    r.close()


@pytest.mark.parametrize(
    "query", QUERIES, ids=lambda q: f"{q.sort}-{'desc' if q.reverse else 'asc'}"
)
def test_filling_order_has_the_top_and_the_anchor_first_then_everything(
    filled_db: Path, progressive: SessionReader, query: ViewQuery
):
    expected = full_order(filled_db, query)
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


def test_reload_waits_for_the_running_fill_and_a_new_query_cancels_it(
    progressive: SessionReader,
):
    first = progressive.order(ViewQuery("email"), NOW)
    assert not first.complete
    second = progressive.order(ViewQuery("created_at"), NOW)  # another list: the first stops
    assert first.wait(10) and isinstance(first.error, DatabaseError)
    with pytest.raises(DatabaseError, match="cancelled"):
        first[::-1]
    second.resume()
    assert second.wait(10) and second.error is None
    third = progressive.order(ViewQuery("created_at"), NOW)  # the same list again: a reload
    third.resume()
    assert third.wait(10) and list(third) == list(second)


def test_small_orders_are_read_at_once(reader: SessionReader):
    order = reader.order(ViewQuery("last_seen_at"), NOW)
    assert isinstance(order, Order) and order.complete and order.error is None
    assert 0 not in order


def test_model_finds_its_session_when_the_order_completes(
    filled_db: Path, progressive: SessionReader
):
    query = ViewQuery("created_at")
    expected = full_order(filled_db, query)
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


def test_rows_not_read_yet_are_not_selectable(progressive: SessionReader):
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


# -- the filter ------------------------------------------------------------------------------


def like_order(db: Path, text: str) -> list[int]:
    conn = sqlite3.connect(db)
    try:
        pattern = f"%{text}%"
        sql = (
            "SELECT rowid FROM sessions WHERE refresh_exp > ? AND (email LIKE ? OR name LIKE ? "
            "OR id LIKE ? OR ip LIKE ?) ORDER BY access_exp, refresh_exp, rowid"
        )
        return [r[0] for r in conn.execute(sql, (NOW, *[pattern] * 4))]
    finally:
        conn.close()


@pytest.mark.parametrize(
    "text", ["user3@", "USER3@EXAMPLE", "name 1", "10.0.2.", "sid-0042", "abc", "zzz", 'a"b', "e 1"]
)
def test_trigram_filter_finds_what_like_finds(filled_db: Path, reader: SessionReader, text: str):
    found = list(reader.order(ViewQuery(text=text), NOW))
    assert found == like_order(filled_db, text)


def test_search_index_follows_inserts_updates_and_deletes(filled_db: Path):
    with Store(filled_db) as store:
        store.insert_session(make_session(5001))
        reader = SessionReader(filled_db)
        try:
            assert len(reader.order(ViewQuery(text="sid-5001"), NOW)) == 1
            store.conn.execute(
                "UPDATE sessions SET email = 'moved@elsewhere.org' WHERE id LIKE ?", ("sid-5001%",)
            )
            assert len(reader.order(ViewQuery(text="elsewhere"), NOW)) == 1
            assert len(reader.order(ViewQuery(text="sid-5001"), NOW)) == 1
            store.delete_sessions_with_audit([make_session(5001).id], [])
            assert len(reader.order(ViewQuery(text="sid-5001"), NOW)) == 0
            assert len(reader.order(ViewQuery(text="elsewhere"), NOW)) == 0
            # The index and the table agree row for row (FTS5 integrity check).
            store.conn.execute(
                f"INSERT INTO {SEARCH_TABLE}({SEARCH_TABLE}) VALUES ('integrity-check')"
            )
        finally:
            reader.close()


def test_filter_falls_back_to_like_without_the_search_table(filled_db: Path):
    with Store(filled_db) as store:
        store.conn.execute(f"DROP TABLE {SEARCH_TABLE}")
    reader = SessionReader(filled_db)
    try:
        assert not reader.searchable
        assert list(reader.order(ViewQuery(text="user3@"), NOW)) == like_order(filled_db, "user3@")
    finally:
        reader.close()


# -- the app with orders filled in the background ----------------------------------------------


async def test_app_keeps_the_cursor_on_its_session_while_orders_fill(
    make_app, auth: Auth, clock, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(reader_module, "PROGRESSIVE_FROM", 0)
    monkeypatch.setattr(reader_module, "WINDOW", 3)
    sessions = []
    for i in range(40):
        sessions.append(auth.login(f"u{i}", f"u{i:02d}@example.com", f"U{i}")[0])
        clock.advance(1)
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await wait_for(pilot, lambda: app.model.complete, "the first order filled")
        await pilot.press(*["down"] * 25)
        chosen = app.main.sessions.selected
        assert chosen is not None
        for key, sort in itertools.product("s", ["refresh_exp", "last_seen_at", "created_at"]):
            await pilot.press(key)
            await wait_for(pilot, lambda s=sort: app.model.query.sort == s and app.polls, sort)
            await polled(pilot)
            assert app.main.sessions.selected.id == chosen.id
            await wait_for(pilot, lambda: app.model.complete, "filled")
            assert app.main.sessions.selected.id == chosen.id
            rows = app.main.sessions
            shown = [rows.session_at(i) for i in range(len(app.model))]
            assert all(s is not None for s in shown)  # every row readable once complete


def test_an_unexpected_error_in_the_fill_thread_is_a_clear_error_not_a_hang(
    filled_db: Path, monkeypatch: pytest.MonkeyPatch
):
    """A bug in the order thread reaches the poller as one DatabaseError, never a hang or an
    AssertionError (the app turns DatabaseError into its banner)."""
    r = SessionReader(filled_db, progressive_from=0)

    def broken(query: ViewQuery, now: float) -> tuple[str, dict[str, object]]:
        raise KeyError("boom")

    monkeypatch.setattr(r, "order_sql", broken)
    try:
        with pytest.raises(DatabaseError, match="reading the session order failed"):
            r.order(ViewQuery("access_exp", False), NOW)
    finally:
        r.close()
