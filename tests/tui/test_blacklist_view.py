"""The blacklist view: only its own keys in the footer, and `/` filtering it (through key presses,
checked against what Redis holds)."""

from __future__ import annotations

from textual.widgets import Input
from textual.widgets._footer import FooterKey

from sessionmon.core.auth import Auth
from sessionmon.core.blacklist import KIND_ACCESS, Blacklist, RevokeRequest
from sessionmon.core.blacklist_search import search
from sessionmon.core.store import SessionStore
from sessionmon.tui.screens.confirm import ConfirmLogout
from sessionmon.tui.widgets.blacklist_table import WINDOW
from tests.tui.conftest import SIZE, loaded, wait_for


def footer_actions(app) -> dict[str, bool]:
    """Action -> enabled, for every key the footer shows."""
    return {k.action: not k.has_class("-disabled") for k in app.main.query(FooterKey)}


def shown_keys(app) -> list[str]:
    table = app.main.blacklist
    return [table.entry_at(i).key for i in range(table.row_count)]


async def to_blacklist(pilot) -> None:
    app = pilot.app
    await pilot.press("tab")
    await wait_for(pilot, lambda: app.focused is app.main.blacklist, "blacklist view")
    await pilot.pause()


async def test_footer_shows_only_the_keys_that_work_in_the_view(
    make_app, auth: Auth, store: SessionStore
):
    ann = auth.login("u1", "ann@example.com", "Ann")[0]
    auth.login("u2", "bob@example.com", "Bob")
    auth.force_logout(ann.id, "oncall", "test")
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.pause()
        on_sessions = footer_actions(app)
        for action in ("force_logout", "force_logout_user", "toggle_mark", "filter", "cycle_sort"):
            assert on_sessions.get(action) is True, action
        await to_blacklist(pilot)
        await wait_for(pilot, lambda: "force_logout" not in footer_actions(app), "footer")
        on_blacklist = footer_actions(app)
        for action in ("force_logout", "force_logout_user", "toggle_mark", "cycle_sort"):
            assert action not in on_blacklist, action
        for action in ("filter", "switch_view", "toggle_pause", "refresh", "help", "quit"):
            assert on_blacklist.get(action) is True, action
        # The hidden keys do nothing here: no dialog, no mark, no new sort.
        sort = app.model.query
        await pilot.press("l", "L", "space", "s")
        await pilot.pause(0.2)
        assert not isinstance(app.screen, ConfirmLogout)
        assert app.model.marks == {} and app.model.query == sort
        assert len(store.list_sessions()) == 1
        # Back on the sessions view they are there again.
        await pilot.press("shift+tab")
        await wait_for(pilot, lambda: "force_logout" in footer_actions(app), "footer again")


async def test_slash_filters_the_blacklist_and_the_box_follows_the_view(
    make_app, auth: Auth, blacklist: Blacklist
):
    ann = auth.login("u1", "ann@example.com", "Ann")[0]
    bob = auth.login("u2", "bob@acme.test", "Bob")[0]
    cy = auth.login("u3", "cy@example.com", "Cy")[0]
    auth.force_logout(ann.id, "alice-oncall", "suspicious IP")
    auth.force_logout(bob.id, "oncall", "password reset")
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        # A sessions filter first: it stays with the sessions view.
        await pilot.press("slash", *"cy", "enter")
        await wait_for(pilot, lambda: len(app.model) == 1, "sessions filtered")
        await to_blacklist(pilot)
        box = app.main.query_one("#filter", Input)
        assert box.value == "" and not box.has_class("-shown")
        assert app.main.blacklist.row_count == 6
        await pilot.press("slash")
        assert "blacklist keys" in box.placeholder
        await pilot.press(*"ANN@EX")  # case-insensitive
        table = app.main.blacklist
        # Keys may come slower than the filter's debounce: "ANN" may be searched first.
        await wait_for(
            pilot,
            lambda: table.search is not None and table.search.text == "ANN@EX",
            "the search for ANN@EX",
        )
        assert table.filtered and table.row_count == 3
        assert {table.entry_at(i).sid for i in range(3)} == {ann.id}
        assert 'filter "ANN@EX": 3 of 6 keys' in table.border_title
        await pilot.press("enter")
        assert app.focused is table
        # Every field an operator may know: session id, key (jti), reason, actor.
        for text, sid in (
            (bob.id[:10], bob.id),
            (ann.access_jti[:12], ann.id),
            ("password re", bob.id),
            ("alice", ann.id),
        ):
            await pilot.press("slash")
            box.value = ""
            await pilot.press(*text, "enter")
            await wait_for(
                pilot,
                lambda s=sid: (
                    table.search is not None
                    and table.search.text == box.value
                    and {table.entry_at(i).sid for i in range(table.row_count)} == {s}
                ),
                text,
            )
        # The sessions view kept its own filter; the box shows each view's own.
        await pilot.press("shift+tab")
        await wait_for(pilot, lambda: app.focused is app.main.sessions, "sessions view")
        assert box.value == "cy" and len(app.model) == 1
        await pilot.press("tab")
        await wait_for(pilot, lambda: app.focused is table, "blacklist view")
        assert box.value == "alice" and table.row_count == 3
        # Escape clears the blacklist filter only.
        await pilot.press("escape")
        await wait_for(pilot, lambda: not table.filtered and table.row_count == 6, "cleared")
        assert "filter" not in table.border_title
        assert app.model.query.text == "cy"
    assert cy.id  # never revoked: not in any result above


async def test_blacklist_filter_searches_the_whole_index_not_the_loaded_window(
    make_app, blacklist: Blacklist, clock
):
    now = clock.now()
    # More keys than one window; the wanted user's keys expire last (far outside the window).
    crowd = [
        RevokeRequest(KIND_ACCESS, f"sid{i}", now + 600 + i, f"jti-crowd-{i:05d}", f"u{i}")
        for i in range(WINDOW * 2)
    ]
    blacklist.revoke(crowd, reason="bulk", actor="script")
    target = [
        RevokeRequest(KIND_ACCESS, "sid-target", now + 90_000, "jti-target-1", "u9", "zoe@x.test"),
        RevokeRequest(KIND_ACCESS, "sid-target", now + 90_001, "jti-target-2", "u9", "zoe@x.test"),
    ]
    blacklist.revoke(target, reason="incident", actor="oncall")
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await to_blacklist(pilot)
        table = app.main.blacklist
        await wait_for(pilot, lambda: table.loaded, "first window")
        assert all(e.email != "zoe@x.test" for e in table.entries)  # not loaded
        await pilot.press("slash", *"zoe@x", "enter")
        await wait_for(pilot, lambda: table.row_count == 2 and table.search is not None, "found")
        assert shown_keys(app) == [
            blacklist.token_key("sid-target", "jti-target-1"),
            blacklist.token_key("sid-target", "jti-target-2"),
        ]
        assert f"2 of {len(crowd) + 2:,} keys" in table.border_title
        await pilot.press("S")  # reversed: latest expiry first, without a new search
        await wait_for(pilot, lambda: table.descending, "reversed")
        assert shown_keys(app)[0] == blacklist.token_key("sid-target", "jti-target-2")


async def test_a_force_logout_shows_up_in_a_filtered_blacklist(
    make_app, auth: Auth, blacklist: Blacklist
):
    auth.login("u1", "ann@example.com", "Ann")
    bob = auth.login("u2", "bob@acme.test", "Bob")[0]
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await to_blacklist(pilot)
        await pilot.press("slash", *"acme", "enter")
        table = app.main.blacklist
        await wait_for(pilot, lambda: table.search is not None, "first search")
        assert table.row_count == 0
        assert 'filter "acme": 0 of 0 keys' in table.border_title
        await pilot.press("shift+tab")
        await wait_for(pilot, lambda: app.focused is app.main.sessions, "sessions view")
        while app.main.sessions.selected.id != bob.id:
            await pilot.press("down")
        await pilot.press("l")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmLogout), "dialog")
        await pilot.press("y")
        await wait_for(pilot, lambda: table.row_count == 3, "bob's keys in the filtered view")
        assert {table.entry_at(i).sid for i in range(3)} == {bob.id}
        assert blacklist.is_revoked(None, bob.id)


def test_search_walks_every_page_once_even_with_equal_expiries(blacklist: Blacklist, clock):
    now = clock.now()
    # 50 keys sharing one expiry, and 20 more: pages of 7 cut through the ties.
    same = [RevokeRequest(KIND_ACCESS, f"s{i}", now + 500, f"tie-{i:02d}", "u1") for i in range(50)]
    more = [
        RevokeRequest(KIND_ACCESS, f"m{i}", now + 600 + i, f"more-{i:02d}", "u2") for i in range(20)
    ]
    blacklist.revoke(same, reason="r", actor="a")
    blacklist.revoke(more, reason="r", actor="a")
    for descending in (False, True):
        result = search(blacklist, "u", descending=descending, page=7)
        keys = [e.key for e in result.entries]
        assert len(keys) == 70 and len(set(keys)) == 70
        expiries = [e.expires_at for e in result.entries]
        assert expiries == sorted(expiries, reverse=descending)
        assert result.scanned == 70 and not result.capped
    result = search(blacklist, "tie-", page=7)
    assert len(result.entries) == 50
    capped = search(blacklist, "u", page=7, cap=10)
    assert capped.capped and len(capped.entries) == 10
    # The first ten in expiry order, not any ten.
    assert {e.key for e in capped.entries} <= {blacklist.token_key(r.sid, r.jti) for r in same}
    # A non-ASCII needle cannot use the raw-bytes shortcut but is still found.
    blacklist.revoke(
        [RevokeRequest(KIND_ACCESS, "sx", now + 700, "jti-lea", "u3", "léa@example.com")],
        reason="r",
        actor="a",
    )
    assert [e.key for e in search(blacklist, "LÉA").entries] == [
        blacklist.token_key("sx", "jti-lea")
    ]
