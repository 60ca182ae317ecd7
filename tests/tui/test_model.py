"""The pieces without Textual: order and cursor identity, cell text, the poller."""

from __future__ import annotations

import time
from array import array

import pytest

from sessionmon.core.auth import Auth
from sessionmon.core.blacklist import Blacklist, connect
from sessionmon.core.store import SORT_CYCLE, Order, SessionStore, ViewQuery, open_reader
from sessionmon.core.store.postgres import PostgresStore
from sessionmon.tui.format import countdown, short_agent
from sessionmon.tui.model import SessionList, find_rowid
from sessionmon.tui.poller import Poller, PollRequest


def test_find_rowid_only_matches_whole_entries():
    order = array("q", [5, 1 << 8, 7, 2**40 + 3, 9])
    assert find_rowid(order, 7) == 2
    assert find_rowid(order, 2**40 + 3) == 3
    assert find_rowid(order, 1) == -1  # the byte 0x01 inside 256 is not a match
    assert find_rowid(array("q"), 3) == -1


def test_find_rowid_takes_the_orders_anchor_and_never_trusts_a_stale_one():
    order = Order.complete_from(array("q", [5, 9, 7, 3]))
    order.anchor = (7, 2)
    assert find_rowid(order, 7) == 2
    order.anchor = (3, 1)  # wrong place: found by looking
    assert find_rowid(order, 3) == 3
    order.anchor = (3, 99)  # outside the order
    assert find_rowid(order, 3) == 3


def test_an_estimated_order_is_marked_in_the_model():
    model = SessionList()
    exact = Order.complete_from(array("q", [1, 2, 3]))
    model.set_order(exact)
    assert not model.estimated
    estimated = Order("q", array("q", [1, 2, 0, 0]).tobytes())
    estimated.estimated = True
    model.set_order(estimated)
    assert model.estimated and not model.complete


def test_cursor_follows_its_row_then_keeps_its_position():
    model = SessionList()
    model.set_order(array("q", [10, 20, 30, 40]))
    model.move_to(2)
    assert model.cursor_rowid == 30
    model.set_order(array("q", [30, 10, 20, 40]))
    assert (model.cursor, model.cursor_rowid) == (0, 30)
    model.move_to(3)
    model.set_order(array("q", [10, 20]))  # 40 is gone: clamp to the end
    assert (model.cursor, model.cursor_rowid) == (1, 20)
    model.set_order(array("q"))
    assert (model.cursor, model.cursor_rowid) == (0, None)


def test_an_order_read_for_an_older_query_never_undoes_the_operators_change():
    # A poll reads the order for the query of its time; the operator presses S or types in the
    # filter while it runs. Its result must not put the old query back (the keys would be lost:
    # the next reload would read the old query again).
    model = SessionList()
    before = model.query
    model.set_order(array("q", [10, 20]), before)
    model.query = model.reversed_sort()
    model.set_order(array("q", [10, 20]), before)  # the poll that was running
    assert model.query.reverse is True
    model.query = model.filtered("acm")
    model.query = model.filtered("acme")
    model.set_order(array("q", [20]), ViewQuery(before.sort, True, "acm"))
    assert model.query == ViewQuery(before.sort, True, "acme")
    assert model.cursor_rowid == 20  # the rows it read are shown until the reload arrives


def test_sort_cycle_reverse_and_marks():
    model = SessionList()
    seen = [model.query.sort]
    for _ in SORT_CYCLE:
        model.query = model.next_sort()
        seen.append(model.query.sort)
    assert seen[: len(SORT_CYCLE)] == list(SORT_CYCLE) and seen[-1] == SORT_CYCLE[0]
    assert model.sorted_by(model.query.sort).reverse is True
    assert model.sorted_by("email") == ViewQuery("email", False, "")
    assert model.toggle_mark("s1", "a@x") is True
    assert model.toggle_mark("s1", "a@x") is False
    model.toggle_mark("s2", None)
    model.unmark(["s2", "nope"])
    assert model.marks == {}


@pytest.mark.parametrize(
    ("left", "life", "expected"),
    [
        (600, 900, ("10:00", "plenty")),
        (300, 900, ("5:00", "low")),
        (100, 900, ("1:40", "critical")),
        (0, 900, ("expired", "expired")),
        (-5, 900, ("expired", "expired")),
        (42, None, ("42s", "plenty")),
        (3 * 3600 + 300, 20000, ("3h05m", "plenty")),
        (3 * 3600 + 300, 86400, ("3h05m", "critical")),
    ],
)
def test_countdown_text_and_level(left, life, expected):
    assert countdown(1000.0 + left, 1000.0, life) == expected
    assert countdown(None, 1000.0, life) == ("-", "expired")


def test_short_agent():
    firefox = "Mozilla/5.0 (X11; Linux x86_64; rv:131.0) Gecko/20100101 Firefox/131.0"
    assert short_agent(firefox) == "Firefox 131 · Linux"
    assert short_agent("curl/8.10.1") == "curl 8.10"
    assert short_agent(None) == "-"


def test_reader_orders_filters_and_escapes_like(auth: Auth, store: SessionStore, clock):
    a = auth.login("u1", "a_b@example.com", "Percent % Person")[0]
    clock.advance(1)
    b = auth.login("u2", "axb@example.com", "Other")[0]
    reader = open_reader(store.location)
    try:
        rowids = reader.order(ViewQuery(), clock.now())
        rows = reader.rows(rowids)
        assert [rows[r].id for r in rowids] == [a.id, b.id]
        desc = reader.order(ViewQuery(reverse=True), clock.now())
        assert list(desc) == list(reversed(rowids))
        only_a = reader.order(ViewQuery(text="a_b"), clock.now())  # "_" is not a wildcard
        assert [rows[r].id for r in only_a] == [a.id]
        assert len(reader.order(ViewQuery(text="%"), clock.now())) == 1
        clock.advance(4000)  # refresh tokens expired: nothing is live
        assert len(reader.order(ViewQuery(), clock.now())) == 0
    finally:
        reader.close()


def test_poller_reloads_only_when_the_database_changed(
    auth: Auth, store: SessionStore, blacklist: Blacklist, clock
):
    auth.login("u1", "one@example.com", "One")
    # No duty-cycle wait: by default a reload that took t waits 4t before the next one, so on a
    # loaded machine the poll right after a change could be too early (this test is about
    # noticing the change).
    poller = Poller(store.location, blacklist, clock, max_duty=float("inf"))
    try:
        req = PollRequest(query=ViewQuery())
        first = poller.poll(req)
        assert first.sessions is not None and len(first.sessions.order) == 1
        assert first.redis.ok and first.blacklist is not None and first.blacklist.count == 0
        assert poller.poll(req).sessions is None  # nothing committed: nothing re-read
        auth.login("u2", "two@example.com", "Two")
        # The next poll sees it (SQLite: data_version); PostgreSQL's notification may reach the
        # monitor's connection a moment after the commit: within a poll or two.
        deadline = time.monotonic() + 5
        while (changed := poller.poll(req)).sessions is None:
            assert time.monotonic() < deadline, "the commit was never seen"
            assert isinstance(store, PostgresStore), "SQLite sees a commit at the next poll"
        assert len(changed.sessions.order) == 2
        assert poller.poll(PollRequest(query=ViewQuery(), reload=True)).sessions is not None
        auth.login("u3", "three@example.com", "Three")
        assert poller.poll(PollRequest(query=ViewQuery(), paused=True)).sessions is None
    finally:
        poller.close()


def test_poller_backs_off_while_redis_is_down(store: SessionStore, clock, prefix: str):
    from sessionmon.tui.screenshots import dead_redis_url

    dead = Blacklist(connect(dead_redis_url(), timeout=0.3), prefix=prefix, clock=clock)
    poller = Poller(store.location, dead, clock, backoff_start=30, backoff_cap=60)
    try:
        req = PollRequest(query=ViewQuery())
        first = poller.poll(req)
        assert first.redis.ok is False and first.redis.retry_in == 30
        second = poller.poll(req)  # within the backoff: not tried again
        assert second.redis.ok is False and 0 < second.redis.retry_in <= 30
        third = poller.poll(PollRequest(query=ViewQuery(), redis_now=True))
        assert third.redis.retry_in == 60  # tried now, failed again: the backoff doubled
        assert first.sessions is not None  # SQLite is still served
    finally:
        poller.close()
