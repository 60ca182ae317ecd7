"""Force-logout through key presses, checked in SQLite and Redis."""

from __future__ import annotations

from sessionmon.core.auth import Auth
from sessionmon.core.blacklist import Blacklist
from sessionmon.core.store import SessionStore
from sessionmon.tui.screens.confirm import ConfirmLogout
from sessionmon.tui.widgets.sessions_table import SessionsTable
from tests.tui.conftest import SIZE, loaded, polled, wait_for


def login_many(auth: Auth, n: int, user: str = "u") -> list:
    return [
        auth.login(f"{user}{i}", f"{user}{i}@example.com", f"User {i}", ip=f"10.0.0.{i}")[0]
        for i in range(n)
    ]


def selected_id(app) -> str:
    return app.main.query_one(SessionsTable).selected.id


async def test_force_logout_one_session(
    make_app, auth: Auth, store: SessionStore, blacklist: Blacklist
):
    sessions = login_many(auth, 3)
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        target = selected_id(app)
        victim = store.get_session(target)
        await pilot.press("l")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmLogout), "confirm dialog")
        assert app.screen.target.session_ids == (target,)
        assert app.screen.target.emails == (victim.email,)
        assert app.screen.focused is app.screen.query_one("#confirm")
        await pilot.press("y")
        await wait_for(pilot, lambda: store.get_session(target) is None, "session deleted")
        tokens = [victim.access_jti, victim.refresh_jti]
        kinds = {e.kind for e in blacklist.entries_for_session(victim.id, tokens)}
        assert kinds == {"access", "refresh", "session"}
        assert blacklist.is_revoked(None, target)
        audit = store.audit(session_id=target)
        assert [(a.action, a.actor, a.outcome) for a in audit] == [("force_logout", "tester", "ok")]
        # The row leaves the sessions view; its keys appear in the blacklist view.
        await wait_for(pilot, lambda: len(app.model) == 2, "row gone")
        table = app.main.query_one(SessionsTable)
        shown = {table.session_at(i).id for i in range(len(app.model))}
        assert shown == {s.id for s in sessions} - {target}
        await wait_for(pilot, lambda: app.main.blacklist.count == 3, "keys listed")
        assert {e.sid for e in app.main.blacklist.entries} == {target}
        assert all(e.ttl > 0 for e in app.main.blacklist.entries)
        # Other sessions are untouched.
        assert len(store.list_sessions()) == 2


async def test_cancel_does_nothing(make_app, auth: Auth, store: SessionStore, blacklist: Blacklist):
    login_many(auth, 2)
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        for cancel in ("n", "escape"):
            await pilot.press("l")
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmLogout), "dialog")
            await pilot.press(cancel)
            await wait_for(pilot, lambda: not isinstance(app.screen, ConfirmLogout), "closed")
        await app.workers.wait_for_complete()
    assert len(store.list_sessions()) == 2
    assert blacklist.count() == 0
    assert store.audit() == []


async def test_reason_field_reached_by_tab_and_enter_confirms(
    make_app, auth: Auth, store: SessionStore, blacklist: Blacklist
):
    login_many(auth, 1)
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        target = selected_id(app)
        await pilot.press("l")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmLogout), "dialog")
        await pilot.press("tab")
        assert app.screen.focused is app.screen.query_one("#reason")
        await pilot.press(*"stolen laptop", "enter")  # y and n type into the field here
        await wait_for(pilot, lambda: store.get_session(target) is None, "deleted")
    [entry] = store.audit(session_id=target)
    assert entry.reason == "stolen laptop"
    assert entry.actor == "tester"


async def test_force_logout_every_session_of_a_user(
    make_app, auth: Auth, store: SessionStore, blacklist: Blacklist
):
    mine = [auth.login("u7", "seven@example.com", "Seven")[0] for _ in range(3)]
    other = auth.login("u8", "eight@example.com", "Eight")[0]
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        assert selected_id(app) == mine[0].id
        await pilot.press("L")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmLogout), "dialog")
        assert app.screen.target.count == 3
        assert "every session of seven@example.com: 3 now" in app.screen.target.title
        await pilot.press("enter")
        await wait_for(pilot, lambda: not store.sessions_for_user("u7"), "user's sessions gone")
        assert store.get_session(other.id) is not None
        for s in mine:
            assert blacklist.is_revoked(s.access_jti, s.id)
        assert {a.action for a in store.audit()} == {"force_logout_user"}


async def test_force_logout_marked_sessions(
    make_app, auth: Auth, store: SessionStore, blacklist: Blacklist
):
    sessions = login_many(auth, 4)
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        table = app.main.query_one(SessionsTable)
        first = table.session_at(0).id
        await pilot.press("space")  # marks row 0 and moves down
        await pilot.press("down", "space")  # marks row 2
        third = table.session_at(2).id
        assert set(app.model.marks) == {first, third}
        await pilot.press("l")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmLogout), "dialog")
        assert set(app.screen.target.session_ids) == {first, third}
        await pilot.press("y")
        await wait_for(pilot, lambda: len(store.list_sessions()) == 2, "two deleted")
        await wait_for(pilot, lambda: not app.model.marks, "marks cleared")
    left = {s.id for s in store.list_sessions()}
    assert left == {s.id for s in sessions} - {first, third}
    assert blacklist.is_revoked(None, first) and blacklist.is_revoked(None, third)


async def test_dialog_acts_on_the_session_captured_at_keypress(
    make_app, auth: Auth, store: SessionStore, blacklist: Blacklist, clock
):
    login_many(auth, 3)
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        captured = selected_id(app)
        await pilot.press("l")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmLogout), "dialog")
        # Underneath the dialog the list re-sorts and the cursor ends on another session.
        app.set_query(app.model.reversed_sort())
        await polled(pilot)
        app.main.query_one(SessionsTable).move_cursor(0)
        under_cursor = selected_id(app)
        assert under_cursor != captured
        await pilot.press("y")
        await wait_for(pilot, lambda: store.get_session(captured) is None, "captured deleted")
        await app.workers.wait_for_complete()
        assert store.get_session(under_cursor) is not None
        assert not blacklist.is_revoked(None, under_cursor)


async def test_read_only_refuses(make_app, auth: Auth, store: SessionStore, blacklist: Blacklist):
    login_many(auth, 2)
    app = make_app(read_only=True)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("l")
        await pilot.press("L")
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmLogout)
        assert any("read-only" in n.message for n in app._notifications)
        # Shown disabled in the footer and the help screen.
        assert app.main.check_action("force_logout", ()) is None
        assert app.main.check_action("force_logout_user", ()) is None
        assert app.main.disabled_actions() == {
            "force_logout": "read-only",
            "force_logout_user": "read-only",
            "force_logout_matching": "read-only",
        }
        assert "READ-ONLY" in str(app.main.query_one("#status").render())
        await app.workers.wait_for_complete()
    assert len(store.list_sessions()) == 2
    assert blacklist.count() == 0


async def test_user_logout_ends_a_session_that_started_while_the_dialog_was_open(
    make_app, auth: Auth, store: SessionStore, blacklist: Blacklist, clock
):
    """``L`` targets the user: the dialog says "every session of ...", confirming ends the one
    an attacker opened meanwhile too, and the result says that one appeared after the dialog."""
    login_many(auth, 2, user="other")
    mine = [auth.login("u7", "ann@example.com", "Ann", ip=f"10.7.0.{i}")[0] for i in range(2)]
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        table = app.main.query_one(SessionsTable)
        at = next(i for i in range(len(app.model)) if table.session_at(i).user_id == "u7")
        table.move_cursor(at)
        await pilot.press("L")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmLogout), "dialog")
        dialog = app.screen
        assert set(dialog.target.session_ids) == {s.id for s in mine}
        title = str(dialog.query_one("#title").render())
        assert "every session of ann@example.com: 2 now" in title, title
        fresh = auth.login("u7", "ann@example.com", "Ann", ip="203.0.113.9")[0]  # meanwhile
        seen: list[str] = []
        original = app.notify

        def record(message: str, **kwargs: object) -> None:
            seen.append(message)
            original(message, **kwargs)  # type: ignore[arg-type]

        app.notify = record  # type: ignore[method-assign]
        await pilot.press("y")
        await wait_for(pilot, lambda: not store.sessions_for_user("u7"), "every session ended")
        for s in [*mine, fresh]:
            assert blacklist.is_revoked(s.access_jti, s.id)
        await wait_for(pilot, lambda: any("deleted" in m for m in seen), "the result")
        done = next(m for m in seen if "deleted" in m)
        assert "3 sessions deleted" in done and "1 appeared after the dialog opened" in done, done
        assert len(store.list_sessions()) == 2  # the other users are untouched


async def test_marked_logout_acts_only_on_the_ids_marked_at_the_key_press(
    make_app, auth: Auth, store: SessionStore, blacklist: Blacklist
):
    """A marked set is exactly what was marked: a session of the same user that starts while
    the dialog is open stays."""
    mine = [auth.login("u7", "ann@example.com", "Ann", ip=f"10.7.0.{i}")[0] for i in range(2)]
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("space", "space")
        assert set(app.model.marks) == {s.id for s in mine}
        await pilot.press("l")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmLogout), "dialog")
        fresh = auth.login("u7", "ann@example.com", "Ann", ip="203.0.113.9")[0]
        await pilot.press("y")
        await wait_for(pilot, lambda: len(store.list_sessions()) == 1, "the marked two ended")
    assert [s.id for s in store.list_sessions()] == [fresh.id]
    assert not blacklist.is_revoked(fresh.access_jti, fresh.id)


async def test_a_sort_changed_while_a_poll_runs_is_not_undone_by_that_poll(
    make_app, auth: Auth, clock
):
    """The poll that was running when the operator changed the sort was made for the old sort:
    its result is dropped, the new sort is read and stays."""
    for i in range(5):
        auth.login(f"u{i}", f"user{i}@example.com", f"User {i}")
        clock.advance(1)
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        before = app.polls
        app.request_poll(reload=True)  # a poll of the old sort is now running
        wanted = app.model.next_sort()
        app.set_query(wanted)
        await wait_for(pilot, lambda: app.polls >= before + 2 and not app.polling, "both polls")
        await polled(pilot)
        assert app.model.query == wanted
        table = app.main.query_one(SessionsTable)
        shown = [table.session_at(i) for i in range(len(app.model))]
        keys = [getattr(s, wanted.sort) for s in shown]
        assert keys == sorted(keys, reverse=wanted.descending), (wanted, keys)


async def test_log_out_every_session_the_filter_matches(
    make_app, auth: Auth, store: SessionStore, blacklist: Blacklist
):
    """``A`` names how many sessions the filter matches and ends exactly those: one that starts
    to match while the dialog is open is not touched; without a filter it refuses."""
    corp = [auth.login(f"c{i}", f"c{i}@corp.example", f"Corp {i}")[0] for i in range(3)]
    other = auth.login("h1", "h1@home.example", "Home")[0]
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("A")
        await wait_for(
            pilot, lambda: any("Filter first" in n.message for n in app._notifications), "refusal"
        )
        assert not isinstance(app.screen, ConfirmLogout)

        await pilot.press("slash", *"CORP.EX", "enter")
        await wait_for(pilot, lambda: len(app.model) == 3, "the filter applied")
        await pilot.press("A")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmLogout), "dialog")
        target = app.screen.target
        assert target.count == 3 and set(target.session_ids) == {s.id for s in corp}
        assert target.title == "Force-logout every session matching 'CORP.EX': 3?"
        late = auth.login("c9", "c9@corp.example", "Late")[0]  # matches, but after the key press
        await pilot.press("tab", *"phishing wave", "enter")
        await wait_for(pilot, lambda: not store.get_sessions([s.id for s in corp]), "ended")
    assert store.get_session(late.id) is not None and store.get_session(other.id) is not None
    for s in corp:
        assert blacklist.is_revoked(s.refresh_jti, s.id)
    audit = store.audit()
    assert sorted(a.session_id for a in audit) == sorted(s.id for s in corp)
    assert {(a.action, a.reason) for a in audit} == {("force_logout", "phishing wave")}
