"""An 80x24 terminal (an SSH session's default): the countdowns and the state stay on screen, the
other columns give way by priority and scroll back with left / right, the status bar and the
footer condense instead of being cut; and ``S`` shows the top of the new order. Through the
Pilot, with a frozen clock."""

from __future__ import annotations

from textual.widgets._footer import FooterKey

from sessionmon.core.auth import Auth
from sessionmon.core.blacklist import KIND_ACCESS, Blacklist, RevokeRequest
from sessionmon.tui.widgets.footer import KeysFooter
from sessionmon.tui.widgets.sessions_table import COLUMNS, SessionsTable
from sessionmon.tui.widgets.status_bar import StatusBar
from tests.tui.conftest import loaded, polled, wait_for

AGENT = "Mozilla/5.0 (X11; Linux x86_64; rv:131.0) Gecko/20100101 Firefox/131.0"
ALL_TITLES = [c.title for c in COLUMNS if c.title]
ALWAYS = ("email", "access in", "refresh in", "state")


def header(app) -> str:
    return app.main.query_one(SessionsTable).render_line(0).text


def row(app, y: int = 1) -> str:
    return app.main.query_one(SessionsTable).render_line(y).text


def status_text(app) -> str:
    return app.main.query_one(StatusBar).render().plain


def footer_keys(app) -> dict[str, FooterKey]:
    return {k.key: k for k in app.main.query(FooterKey)}


def login_people(auth: Auth, n: int) -> list:
    return [
        auth.login(
            f"u{i}",
            f"someone.number{i}@a-long-company-name.example",
            f"Person Number{i}",
            ip=f"198.51.100.{i + 10}",
            user_agent=AGENT,
        )[0]
        for i in range(n)
    ]


async def resized(pilot, width: int, height: int) -> None:
    app = pilot.app
    await pilot.resize_terminal(width, height)
    table = app.main.current_table
    await wait_for(
        pilot,
        lambda: app.size == (width, height) and table.size.width == width - 2,
        f"resized to {width}x{height}",
    )
    footer = app.main.query_one(KeysFooter)
    await wait_for(
        pilot, lambda: footer._drawn_for is not None and footer._drawn_for[0] == width, "footer"
    )
    await pilot.pause()


def assert_footer_fits(app, width: int) -> None:
    keys = footer_keys(app)
    for key in ("question_mark", "q"):
        region = keys[key].region
        assert region.width > 0 and region.right <= width, (key, region)
    pinned = app.main.query_one("#pinned-keys").region
    for key in keys.values():
        assert key.region.right <= width, (key.key, key.region)
        if key.parent is not app.main.query_one("#pinned-keys"):
            assert key.region.right <= pinned.x, (key.key, key.region, pinned)


async def test_resizing_from_200_to_80_and_back(make_app, auth: Auth, clock):
    login_people(auth, 3)
    app = make_app()
    async with app.run_test(size=(200, 50)) as pilot:
        await loaded(pilot)
        await resized(pilot, 200, 50)
        table = app.main.query_one(SessionsTable)
        assert all(title in header(app) for title in ALL_TITLES), header(app)
        assert not table.border_subtitle
        assert " 3 sessions " in status_text(app) and "blacklisted" in status_text(app)
        assert footer_keys(app)["S"].description == "Reverse"

        await resized(pilot, 80, 24)
        text = header(app)
        assert all(title in text for title in ALWAYS), text
        assert "session" in text  # the session id goes last of the optional columns
        for gone in ("user agent", "ip", "name", "gen", "age", "last seen"):
            assert f" {gone} " not in f" {text} ", text
        assert row(app).split()[-3:] == ["1:00", "1h00m", "active"], row(app)
        assert table.border_subtitle == (
            "hidden: name, ip, user agent, gen, age, last seen · ← → scroll"
        )
        status = status_text(app)
        assert len(status) <= 80 and "3 sess" in status and "bl" in status, status
        assert status.rstrip()[-8:].count(":") == 2  # the clock is whole, not cut
        assert_footer_fits(app, 80)
        assert "S" in footer_keys(app)

        # Right: the hidden columns come back one at a time; the countdowns stay.
        seen = set()
        for _ in range(6):
            await pilot.press("right")
            await pilot.pause()
            text = header(app)
            assert all(title in text for title in ALWAYS), text
            seen |= {t for t in ALL_TITLES if f" {t} " in f" {text} "}
        assert {"ip", "user agent", "age", "last seen"} <= seen, seen
        assert "ip" in table.border_subtitle or "user agent" in table.border_subtitle
        for _ in range(6):
            await pilot.press("left")
            await pilot.pause()
        assert " name " in f" {header(app)} ", header(app)

        await resized(pilot, 200, 50)
        assert all(title in header(app) for title in ALL_TITLES), header(app)
        assert table.border_subtitle == "" and table.column_start is None
        assert " 3 sessions " in status_text(app)
        assert_footer_fits(app, 200)
        assert footer_keys(app)["r"].description == "Refresh"

        await resized(pilot, 80, 24)  # back to the priorities, not to where it was scrolled
        assert " session " in f" {header(app)} " and " name " not in f" {header(app)} "


async def test_blacklist_view_at_80_columns(make_app, auth: Auth, blacklist: Blacklist, clock):
    login_people(auth, 1)
    now = clock.now()
    blacklist.revoke(
        [RevokeRequest(KIND_ACCESS, "sid-1", now + 300, "jti-1", "u1", "x@example.com")],
        reason="stolen laptop",
        actor="oncall",
    )
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        await pilot.press("tab")
        table = app.main.blacklist
        await wait_for(pilot, lambda: table.loaded and table.row_count == 1, "blacklist")
        await resized(pilot, 80, 24)
        text = table.render_line(0).text
        for title in ("kind", "subject", "reason", "ttl"):
            assert title in text, text
        assert table.render_line(1).text.split()[-1] == "5:10"  # 5 min + the leeway
        assert table.border_subtitle.startswith("hidden: revoked at")
        assert_footer_fits(app, 80)
        assert footer_keys(app)["S"].description  # reverse works here too, and says so


async def test_reverse_shows_the_top_of_the_new_order_and_keeps_the_cursor(
    make_app, auth: Auth, clock
):
    sessions = []
    for i in range(40):
        sessions.append(auth.login(f"u{i}", f"u{i:02d}@example.com", f"U{i}")[0])
        clock.advance(1)  # the later the login, the later the access expiry
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(pilot)
        table = app.main.query_one(SessionsTable)
        await pilot.press("down", "down", "down")
        chosen = table.selected.id
        assert chosen == sessions[3].id and table.top == 0
        await pilot.press("S")
        await wait_for(
            pilot,
            lambda: table.session_at(0) is not None and table.session_at(0).id == sessions[-1].id,
            "the reversed order",
        )
        await pilot.pause()
        # The top of the new order is on screen; the cursor is still on its session (row 36,
        # below the fold), and the detail pane with it.
        assert table.top == 0
        assert "u39@example.com" in row(app, 1)
        assert table.selected.id == chosen and app.model.cursor == 36
        assert app.main.query_one("#detail").detail.session.id == chosen
        await polled(pilot)  # later polls leave the view where it is
        assert table.top == 0 and table.selected.id == chosen
        await pilot.press("down")  # moving the cursor brings it back into view
        assert app.model.cursor == 37
        assert table.top <= 37 < table.top + table.page_height


async def test_reverse_in_the_blacklist_shows_the_top_too(
    make_app, auth: Auth, blacklist: Blacklist, clock
):
    login_people(auth, 1)
    now = clock.now()
    blacklist.revoke(
        [
            RevokeRequest(KIND_ACCESS, f"sid-{i}", now + 100 + i, f"jti-{i:02d}", "u", "u@x.test")
            for i in range(60)
        ],
        reason="r",
        actor="a",
    )
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(pilot)
        await pilot.press("tab")
        table = app.main.blacklist
        await wait_for(pilot, lambda: table.loaded and table.row_count == 60, "blacklist")
        await pilot.press("down", "down", "down")
        chosen = table.entry_at(table.cursor).key
        assert chosen == blacklist.token_key("sid-3", "jti-03")
        await pilot.press("S")
        await wait_for(
            pilot,
            lambda: (
                table.entry_at(0) is not None
                and table.entry_at(0).key == blacklist.token_key("sid-59", "jti-59")
            ),
            "the reversed order",
        )
        await pilot.pause()
        assert table.top == 0
        assert table.entry_at(table.cursor).key == chosen and table.cursor == 56
        await polled(pilot)
        assert table.top == 0 and table.entry_at(table.cursor).key == chosen
