"""The monitor with orders filled in the background (on both backends)."""

from __future__ import annotations

import itertools

import pytest

from sessionmon.core.auth import Auth
from sessionmon.core.store import order as order_module

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
