"""The monitor with orders filled in the background (on both backends)."""

from __future__ import annotations

import itertools
from array import array

import pytest

from sessionmon.core.auth import Auth
from sessionmon.core.store import Order
from sessionmon.core.store import order as order_module
from sessionmon.tui.poller import SessionsResult
from tests.support.orders import CountGate

from .conftest import SIZE, loaded, polled, wait_for


async def test_app_keeps_the_cursor_on_its_session_while_orders_fill(
    make_app, auth: Auth, clock, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(order_module, "PROGRESSIVE_FROM", 0)
    monkeypatch.setattr(order_module, "WINDOW", 3)
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


async def test_a_re_sort_is_on_screen_before_its_exact_count_which_follows(
    make_app, auth: Auth, clock, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(order_module, "PROGRESSIVE_FROM", 0)
    monkeypatch.setattr(order_module, "WINDOW", 4)
    for i in range(40):
        auth.login(f"u{i}", f"u{i:02d}@example.com", f"U{i}")
        clock.advance(1)
    app = make_app(interval=3600.0)  # polls only when asked: nothing settles the count unseen
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await wait_for(pilot, lambda: app.model.complete, "the first order filled")
        table = app.main.sessions
        assert not app.model.estimated and "Sessions · 40 ·" in str(table.border_title)
        await pilot.press(*["down"] * 25)
        chosen = table.selected
        assert chosen is not None
        gate = CountGate(monkeypatch)
        await pilot.press("s")
        await wait_for(
            pilot,
            lambda: app.model.query.sort == "refresh_exp" and app.model.estimated,
            "the re-sort on screen",
        )
        await pilot.pause()
        # On screen while the exact count is still held back: the count is marked "~" in the
        # title and the status bar, the first rows are drawn, the cursor stays on its session.
        assert gate.counting.is_set() and not gate.gate.is_set()
        assert "Sessions · ~40 ·" in str(table.border_title)
        assert app.status_info().live_exact is False
        assert table.session_at(0) is not None
        assert table.selected is not None and table.selected.id == chosen.id
        gate.open()
        await wait_for(pilot, lambda: not app.model.estimated, "the exact order")
        await pilot.pause()
        assert "Sessions · 40 ·" in str(table.border_title)
        assert table.selected is not None and table.selected.id == chosen.id
        await wait_for(pilot, lambda: app.model.complete, "filled")
        assert [table.session_at(i) is not None for i in range(40)] == [True] * 40
        polls = app.polls
        app.request_poll()  # the next poll (no reload) makes the status bar's count exact
        await wait_for(pilot, lambda: app.polls > polls, "a poll")
        assert app.status_info().live_exact and app.status_info().live == 40


async def test_a_filter_shows_the_last_live_count_as_approximate_until_the_next_poll(
    make_app, auth: Auth, clock
):
    for i in range(12):
        auth.login(f"u{i}", f"u{i:02d}@example.com", f"U{i}")
    app = make_app(interval=3600.0)  # polls only when asked
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        assert app.status_info().live == 12 and app.status_info().live_exact
        query = app.model.filtered("u03@")
        app.set_query(query)
        await wait_for(pilot, lambda: len(app.model) == 1 and app.polls >= 2, "the filter")
        info = app.status_info()
        assert info.live == 12 and not info.live_exact  # not counted before the matches
        app.main.tick()
        assert "~12 " in str(app.main.query_one("StatusBar").render())
        polls = app.polls
        app.request_poll()
        await wait_for(pilot, lambda: app.polls > polls, "the next poll")
        assert app.status_info().live == 12 and app.status_info().live_exact
        app.main.tick()
        assert "~" not in str(app.main.query_one("StatusBar").render())


async def test_a_sort_reads_the_rows_of_the_new_top_with_its_order(make_app, auth: Auth, clock):
    for i in range(150):
        auth.login(f"u{i}", f"u{i:03d}@example.com", f"U{i}")
        clock.advance(1)
    app = make_app(interval=3600.0)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        table = app.main.sessions
        await pilot.press("end")
        await wait_for(pilot, lambda: table.top > 0, "scrolled to the end")
        page = table.page_height
        polls = app.polls
        await pilot.press("s")
        await wait_for(pilot, lambda: app.polls > polls and table.top == 0, "the new order")
        result = app.snapshot.sessions if app.snapshot else None
        assert result is not None and result.query.sort == "refresh_exp"
        # The rows the view shows first came with the order: no second round trip to draw them.
        assert set(result.order[:page]) <= set(result.rows)


async def test_an_estimated_order_whose_exact_one_is_complete_already_is_replaced_at_once(
    make_app, auth: Auth
):
    for i in range(6):
        auth.login(f"u{i}", f"u{i}@example.com", f"U{i}")
    app = make_app(interval=3600.0)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        table = app.main.sessions
        exact = Order.complete_from(array("q", list(app.model.order)))
        estimated = Order("q", bytes(8 * (len(exact) + 3)))  # the last count: 3 more
        estimated.estimated = True
        estimated[0:2] = exact[0:2]
        estimated._settle(exact)  # read, and complete, before the estimated one is shown
        assert estimated.complete
        table.apply(SessionsResult(app.model.query, estimated, len(estimated)))
        assert app.model.estimated and "Sessions · ~9 ·" in table.title()
        await wait_for(pilot, lambda: app.model.order is exact, "the exact order on screen")
        assert "Sessions · 6 ·" in table.title()
