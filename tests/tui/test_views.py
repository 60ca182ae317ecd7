"""Filter, sort, pause, cursor identity and countdowns, through key presses and a frozen clock."""

from __future__ import annotations

import threading

from textual.widgets import Input

from sessionmon.core.auth import Auth
from sessionmon.core.blacklist import Blacklist
from sessionmon.core.store import SessionStore
from sessionmon.tui.app import SessionmonApp
from sessionmon.tui.poller import Poller, PollRequest, Snapshot
from sessionmon.tui.widgets.sessions_table import SessionsTable
from tests.tui.conftest import SIZE, loaded, polled, wait_for


def table_of(app) -> SessionsTable:
    return app.main.query_one(SessionsTable)


def shown_ids(app) -> list[str]:
    table = table_of(app)
    return [table.session_at(i).id for i in range(len(app.model))]


def line(app, index: int) -> str:
    """The text drawn for row ``index`` (line 0 is the header)."""
    table = table_of(app)
    return table.render_line(index - table.top + 1).text


async def test_first_row_selected_and_focused_at_start(make_app, auth: Auth):
    first = auth.login("u1", "first@example.com", "First")[0]
    auth.login("u2", "second@example.com", "Second")
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        assert app.focused is table_of(app)
        assert app.model.cursor == 0
        assert table_of(app).selected.id == first.id
        await wait_for(pilot, lambda: app.main.query_one("#detail").detail is not None, "detail")
        assert app.main.query_one("#detail").detail.session.id == first.id


async def test_filter_and_escape(make_app, auth: Auth):
    auth.login("u1", "ann@example.com", "Ann", ip="10.1.1.1")
    bob = auth.login("u2", "bob@acme.test", "Bob", ip="10.2.2.2")[0]
    auth.login("u3", "cy@example.com", "Cy", ip="10.3.3.3")
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("slash", *"ACME")  # case-insensitive
        # Keys may come slower than the filter's debounce (a loaded machine): "ACM" may be
        # applied first. Wait for the whole text, then for an order read with it.
        await wait_for(pilot, lambda: app.model.query.text == "ACME", "filter ACME")
        await polled(pilot)
        assert shown_ids(app) == [bob.id]
        assert 'filter "ACME"' in table_of(app).border_title
        await pilot.press("enter")
        assert app.focused is table_of(app)
        for text, count in ((bob.id[:6], 1), ("10.3.3", 1), ("example", 2)):
            app.main.query_one("#filter", Input).value = ""
            await pilot.press("slash", *text)
            await wait_for(pilot, lambda t=text: app.model.query.text == t, text)
            await polled(pilot)
            assert len(app.model) == count, text
            await pilot.press("enter")
        await pilot.press("escape")
        await wait_for(pilot, lambda: len(app.model) == 3, "filter cleared")
        assert app.model.query.text == ""
        assert "filter" not in table_of(app).border_title


async def test_sort_cycle_reverse_and_header_click(make_app, auth: Auth, clock):
    a = auth.login("u1", "zed@example.com", "Zed")[0]
    clock.advance(5)
    b = auth.login("u2", "amy@example.com", "Amy")[0]
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        assert app.model.query.sort == "access_exp"
        assert shown_ids(app) == [a.id, b.id]  # soonest access expiry first
        await pilot.press("S")
        await wait_for(pilot, lambda: shown_ids(app) == [b.id, a.id], "reversed")
        assert "▼" in table_of(app).border_title
        await pilot.press("s")
        await wait_for(pilot, lambda: app.model.query.sort == "refresh_exp", "next sort")
        assert "refresh expiry" in table_of(app).border_title
        # Clicking the "email" header sorts by email; clicking it again reverses.
        table = table_of(app)
        x = next(
            i for i in range(table.size.width) if (c := table.column_at(i)) and c.key == "email"
        )
        await pilot.click(SessionsTable, offset=(x + 1, 0))
        await wait_for(pilot, lambda: shown_ids(app) == [b.id, a.id], "email order")
        assert app.model.query.sort == "email"
        await pilot.click(SessionsTable, offset=(x + 1, 0))
        await wait_for(pilot, lambda: shown_ids(app) == [a.id, b.id], "email reversed")


async def test_cursor_stays_on_its_session_across_refresh_and_resort(
    make_app, auth: Auth, store: SessionStore, clock
):
    sessions = [auth.login(f"u{i}", f"u{i}@example.com", f"U{i}")[0] for i in range(5)]
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("down", "down")
        chosen = table_of(app).selected.id
        assert chosen == sessions[2].id
        # Newer sessions arrive and sort first in descending order: the row moves, the cursor too.
        await pilot.press("S")
        await wait_for(pilot, lambda: app.model.query.reverse, "reversed")
        await polled(pilot)  # a poll that was running when S came must not undo it
        assert app.model.query.reverse
        assert table_of(app).selected.id == chosen
        clock.advance(2)
        newer = [auth.login(f"n{i}", f"n{i}@example.com", f"N{i}")[0] for i in range(3)]
        await polled(pilot)
        assert shown_ids(app)[:3] == [s.id for s in reversed(newer)]
        assert table_of(app).selected.id == chosen
        await pilot.press("s")  # another sort: still the same session
        await wait_for(pilot, lambda: app.model.query.sort == "refresh_exp", "s")
        await polled(pilot)
        assert app.model.query.sort == "refresh_exp"
        assert table_of(app).selected.id == chosen
        # Its row disappears (deleted elsewhere): the cursor stays at the same position.
        position = app.model.cursor
        auth.force_logout(chosen, "someone-else")
        await polled(pilot)
        assert chosen not in shown_ids(app)
        assert app.model.cursor == min(position, len(app.model) - 1)


class GatedPoller(Poller):
    """The real poller; a poll waits at the gate while it is closed (a slow poll, on demand)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.gate = threading.Event()
        self.gate.set()
        self.waiting = threading.Event()

    def poll(self, req: PollRequest) -> Snapshot:
        if not self.gate.is_set():
            self.waiting.set()
            self.gate.wait(10)
        return super().poll(req)


async def test_sort_and_filter_changed_during_a_poll_are_kept(
    auth: Auth, store: SessionStore, blacklist: Blacklist, settings, clock
):
    a = auth.login("u1", "ann@acme.test", "Ann")[0]
    clock.advance(5)
    b = auth.login("u2", "bob@acme.test", "Bob")[0]
    auth.login("u3", "cy@example.com", "Cy")
    poller = GatedPoller(store.location, blacklist, clock, backoff_start=0.1, backoff_cap=0.5)
    app = SessionmonApp(
        store=store,
        blacklist=blacklist,
        auth=auth,
        settings=settings.with_(interval=0.2, actor="tester"),
        clock=clock,
        poller=poller,
    )
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        for keys, query in (
            (["S"], lambda q: q.reverse),
            (["slash", *"acme", "enter"], lambda q: q.reverse and q.text == "acme"),
        ):
            await polled(pilot)
            poller.gate.clear()
            poller.waiting.clear()
            app.request_poll(reload=True)  # a poll reads the order of the old query ...
            await wait_for(pilot, poller.waiting.is_set, "a poll in flight")
            await pilot.press(*keys)  # ... while the operator changes it
            await wait_for(pilot, lambda q=query: q(app.model.query), "the new query")
            poller.gate.set()
            await polled(pilot)
            assert query(app.model.query), app.model.query
        assert shown_ids(app) == [b.id, a.id]
        assert 'filter "acme"' in table_of(app).border_title


async def test_pause_freezes_the_list_but_not_the_countdowns(make_app, auth: Auth, clock):
    first = auth.login("u1", "one@example.com", "One")[0]
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("p")
        assert app.paused
        assert "PAUSED" in table_of(app).border_title
        auth.login("u2", "two@example.com", "Two")
        before = app.polls
        await wait_for(pilot, lambda: app.polls >= before + 3, "three scheduled polls")
        assert shown_ids(app) == [first.id]
        assert "1:00" in line(app, 0)
        clock.advance(30)
        app.main.tick()
        assert "30s" in line(app, 0)  # countdowns keep ticking while paused
        await pilot.press("p")
        assert not app.paused
        await wait_for(pilot, lambda: len(app.model) == 2, "resumed")


async def test_countdowns_and_state_follow_the_injected_clock(make_app, auth: Auth, clock):
    auth.login("u1", "one@example.com", "One")  # access 60s, refresh 1h
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        table = table_of(app)

        def cells() -> dict[str, tuple[str, str | None]]:
            row = table.row_cells(0, clock.now())
            return {c.key: cell for c, cell in zip(table.columns, row, strict=True)}

        assert cells()["access"] == ("1:00", "countdown--plenty")
        assert cells()["refresh"] == ("1h00m", "countdown--plenty")
        assert cells()["state"] == ("active", "state--active")
        clock.advance(35)
        assert cells()["access"] == ("25s", "countdown--low")
        clock.advance(15)
        assert cells()["access"] == ("10s", "countdown--critical")
        clock.advance(10)
        assert cells()["access"] == ("expired", "countdown--expired")
        assert cells()["state"] == ("refresh due", "state--due")
        app.main.tick()  # the repaint shows it without any query
        assert "expired" in line(app, 0) and "refresh due" in line(app, 0)
        clock.advance(3600)
        assert cells()["refresh"] == ("expired", "countdown--expired")
        assert cells()["state"] == ("expired", "state--expired")


async def test_help_screen_and_command_palette_list_every_action(make_app, auth: Auth):
    from sessionmon.tui.actions import ACTIONS
    from sessionmon.tui.screens.help import HelpScreen

    auth.login("u1", "one@example.com", "One")
    app = make_app(read_only=True)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen), "help")
        assert app.screen.disabled_actions == {
            "force_logout": "read-only",
            "force_logout_user": "read-only",
            "force_logout_matching": "read-only",
        }
        assert app.screen.disabled is False  # the list of refused keys did not disable the screen
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, HelpScreen), "closed")
        commands = list(app.get_system_commands(app.screen))
        titles = " ".join(c.title for c in commands)
        for spec in ACTIONS:
            assert spec.label in titles
        logout = next(c for c in commands if c.title.startswith("Log out (l)"))
        assert "disabled: read-only" in logout.help
