"""The lifetime policies and rotations in the monitor: idle and absolute countdowns beside access
and refresh (only when configured; they give way on a narrow screen), and the detail pane's kids,
policy deadlines and rotation history."""

from __future__ import annotations

from sessionmon.core.auth import Auth
from sessionmon.core.clock import FrozenClock
from sessionmon.tui.widgets.sessions_table import SessionsTable
from tests.tui.conftest import SIZE, loaded, wait_for
from tests.tui.test_layout import detail_of, detail_text, end_of, table_line


async def test_no_policy_no_countdown_columns(make_app, auth: Auth) -> None:
    auth.login("u1", "ann@example.com", "Ann")
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        keys = [c.key for c in app.main.query_one(SessionsTable).columns]
        assert "idle" not in keys and "absolute" not in keys
        session = auth.store.list_sessions()[0]
        await detail_of(pilot, session.id)
        ends = detail_text(app, "session")[8]
        assert ends.split()[0] == "ends" and "no idle or absolute timeout" in ends


async def test_idle_and_absolute_countdowns_move_with_the_clock(
    make_app, auth: Auth, clock: FrozenClock
) -> None:
    session = auth.login("u1", "ann@example.com", "Ann")[0]
    app = make_app(idle_timeout=1800.0, absolute_timeout=4 * 3600.0, interval=3600.0)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        table = app.main.query_one(SessionsTable)
        keys = [c.key for c in table.columns]
        assert keys[keys.index("refresh") + 1 : keys.index("state")] == ["idle", "absolute"]
        header, row = table_line(app, 0), table_line(app, 1)
        # Right-aligned under their titles.
        assert end_of(row, "30:00") == header.index("idle in") + len("idle in")
        assert end_of(row, "4h00m") == header.index("absolute in") + len("absolute in")
        await detail_of(pilot, session.id)
        ends = detail_text(app, "session")[8]
        assert "idle in 30:00" in ends and "absolute in 4h00m" in ends
        assert ends.index("idle") < ends.index("absolute")  # the soonest first

        clock.advance(600)
        app.main.tick()
        await pilot.pause()
        row = table_line(app, 1)
        assert "20:00" in row.split() and "3h50m" in row.split()
        assert "idle in 20:00" in detail_text(app, "session")[8]


async def test_the_countdowns_give_way_on_a_narrow_screen(make_app, auth: Auth) -> None:
    auth.login("u1", "ann@example.com", "Ann")
    app = make_app(idle_timeout=1800.0, absolute_timeout=4 * 3600.0)
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        table = app.main.query_one(SessionsTable)
        shown = [c.key for c in table.shown_columns]
        assert {"access", "refresh", "state", "email"} <= set(shown)
        assert "idle" not in shown and "absolute" not in shown
        assert "idle in" in (table.border_subtitle or "")
        # A wider terminal shows them again.
        await pilot.resize_terminal(130, 30)
        await wait_for(
            pilot, lambda: "idle" in [c.key for c in table.shown_columns], "the idle column"
        )


async def test_detail_pane_shows_the_kids_and_the_rotation_history(
    make_app, auth: Auth, clock: FrozenClock
) -> None:
    session, _, refresh = auth.login("u1", "ann@example.com", "Ann", "10.0.0.1", "curl/8.10")
    for n in range(1, 5):
        clock.advance(30)
        result = auth.refresh(refresh, ip=f"10.0.0.{n + 1}", user_agent=f"curl/8.{n}")
        assert result.ok and result.new_refresh_token
        refresh = result.new_refresh_token
    row = auth.store.get_session(session.id)
    assert row is not None and row.access_kid
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await detail_of(pilot, session.id)
        tokens = detail_text(app, "tokens")
        assert tokens[0].strip() == f"access · kid {row.access_kid}"
        assert tokens[5].strip() == f"refresh · kid {row.refresh_kid}"
        history = [line.strip() for line in detail_text(app, "history")]
        start = next(i for i, line in enumerate(history) if line.startswith("rotations"))
        listed = [line for line in history[start + 1 :] if line]
        assert listed[0].split()[:2] == ["gen", "4"]  # the newest first
        assert "10.0.0.5" in listed[0] and "curl 8.4" in listed[0]
        assert [line.split()[1] for line in listed] == ["4", "3", "2", "1"][: len(listed)]
        assert len(listed) >= 3
