"""What the screen says and where: aligned headers, whole ids, one rounding, plurals, ctrl+c, and a
detail pane that never shows another session's detail. Read from the drawn lines, with a frozen
clock."""

from __future__ import annotations

import re

from textual.geometry import Region
from textual.widget import Widget

from sessionmon.core.auth import Auth
from sessionmon.core.store import SessionStore
from sessionmon.tui.app import DetailLoaded
from sessionmon.tui.widgets.detail_pane import DetailPane, SessionDetail
from sessionmon.tui.widgets.sessions_table import SessionsTable
from sessionmon.tui.widgets.status_bar import StatusBar
from tests.tui.conftest import SIZE, loaded, polled, wait_for

AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/130.0.0.0 Safari/537.36 Edg/130.0.2849.68 SomeVeryLongExtensionToken/1.2.3.4"
)


def drawn(widget: Widget) -> list[str]:
    """The lines ``widget`` draws, as text."""
    region = Region(0, 0, widget.outer_size.width, widget.outer_size.height)
    return [strip.text for strip in widget.render_lines(region)]


def table_line(app, y: int) -> str:
    """Line ``y`` of the sessions table (0: the header)."""
    return app.main.query_one(SessionsTable).render_line(y).text


def end_of(text: str, word: str) -> int:
    """Where ``word`` (standing alone, the first time) ends in ``text``."""
    match = re.search(rf"(?<!\S){re.escape(word)}(?!\S)", text)
    assert match is not None, (word, text)
    return match.end()


def detail_text(app, panel: str) -> list[str]:
    return drawn(app.main.query_one(f"#detail-{panel}"))


def access_expires(app) -> str:
    """The detail pane's "expires" value of the access token."""
    lines = detail_text(app, "tokens")
    return lines[4].strip().removeprefix("expires").strip()


async def detail_of(pilot, session_id: str) -> None:
    app = pilot.app
    pane = app.main.query_one(DetailPane)
    await wait_for(
        pilot, lambda: pane.detail is not None and pane.detail.session.id == session_id, "detail"
    )
    await pilot.pause()


async def test_headers_align_with_their_values_and_stay_put_when_the_sort_changes(
    make_app, auth: Auth, clock
):
    auth.login("u1", "one@example.com", "One")
    clock.advance(1)
    auth.login("u2", "two@example.com", "Two")
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        table = app.main.query_one(SessionsTable)
        header, row = table_line(app, 0), table_line(app, 1)
        # Right-aligned numbers under right-aligned titles: both end in the same cell.
        for title, value in (
            ("access in", "59s"),
            ("refresh in", "59:59"),
            ("last seen", "1s ago"),
            ("age", "1s"),
        ):
            assert end_of(header, title) == end_of(row, value), (header, row)
        # Two spaces at least between neighbouring titles (and the arrow never touches one).
        assert re.search(r"last seen {2,}▲ access in {2,}refresh in {2,}state", header), header
        # Every title keeps its place whatever the sort (the arrow's room is kept).
        titles = ("email", "age", "last seen", "access in", "refresh in", "state")
        places = {t: header.index(t) for t in titles}
        for _ in range(5):
            await pilot.press("s")
            await wait_for(pilot, lambda: app.model.query == table.model.query, "sort")
            await pilot.pause()
            header = table_line(app, 0)
            assert {t: header.index(t) for t in titles} == places, header
            assert header.count("▲") == 1


async def test_detail_pane_shows_whole_ids_and_marks_what_it_cuts(
    make_app, auth: Auth, store: SessionStore
):
    email = "someone.with.a.rather.long.address@example-company.test"
    session = auth.login(email, email, "Web User", ip="10.0.0.1", user_agent=AGENT)[0]  # sub=email
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await detail_of(pilot, session.id)
        tokens = detail_text(app, "tokens")
        assert tokens[0].strip() == f"access · kid {session.access_kid}"  # the signing key
        assert tokens[1].split()[0] == "sub" and tokens[1].rstrip().endswith("…")
        assert tokens[2].split() == ["jti", session.access_jti]  # all 22 characters
        assert len(session.access_jti) == 22
        assert tokens[5].strip() == f"refresh · kid {session.refresh_kid}"  # not pushed down
        assert tokens[6].split() == ["jti", session.refresh_jti]
        assert tokens[8].split()[0] == "expires"
        info = detail_text(app, "session")
        agent = next(line for line in info if line.strip().startswith("agent"))
        assert agent.rstrip().endswith("…") and "Mozilla/5.0" in agent
        assert info[7].split()[0] == "state"
        assert info[8].split()[0] == "ends"  # nine rows, none wrapped


async def test_list_and_detail_pane_show_the_same_countdown(make_app, auth: Auth, clock):
    session = auth.login("u1", "one@example.com", "One")[0]  # access 60s
    app = make_app(interval=3600.0)  # one poll: only the ticks below redraw
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await detail_of(pilot, session.id)
        clock.advance(57.5)
        app.main.tick()
        await pilot.pause()
        assert table_line(app, 1).split()[-3] == "3s"
        assert access_expires(app) == "in 3s"
        # Time passes before the next tick; a redraw of the list in between (a key press, a
        # scroll) must not show another value than the pane does.
        clock.advance(0.6)
        app.main.query_one(SessionsTable).refresh()
        await pilot.pause()
        shown = "3s" if app.frame.now() < clock.now() else "2s"  # "2s" if the 1 Hz tick ran
        assert table_line(app, 1).split()[-3] == shown
        assert access_expires(app) == f"in {shown}"
        app.main.tick()
        await pilot.pause()
        assert table_line(app, 1).split()[-3] == "2s"
        assert access_expires(app) == "in 2s"


async def test_status_bar_says_one_session_and_two_sessions(make_app, auth: Auth):
    auth.login("u1", "one@example.com", "One")
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        bar = app.main.query_one(StatusBar)
        await wait_for(pilot, lambda: " 1 session " in bar.render().plain, "one session")
        assert "1 sessions" not in bar.render().plain
        auth.login("u2", "two@example.com", "Two")
        await polled(pilot)
        app.main.tick()
        assert " 2 sessions " in bar.render().plain


async def test_ctrl_c_quits_at_once_from_the_list(make_app, auth: Auth):
    auth.login("u1", "one@example.com", "One")
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("ctrl+c")
        await wait_for(pilot, lambda: app.return_code is not None, "exit")
    assert app.return_code == 0


async def test_ctrl_c_quits_from_the_filter_box(make_app, auth: Auth):
    auth.login("u1", "one@example.com", "One")
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("slash", *"on")
        assert app.focused is app.main.filter_input
        await pilot.press("ctrl+c")
        await wait_for(pilot, lambda: app.return_code is not None, "exit")


async def test_detail_pane_ignores_a_late_answer_about_another_row(
    make_app, auth: Auth, store: SessionStore
):
    first = auth.login("u1", "one@example.com", "One")[0]
    second = auth.login("u2", "two@example.com", "Two")[0]
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await detail_of(pilot, first.id)
        # A worker started for the second row finishes after the cursor came back to the first.
        late = SessionDetail(store.get_session(second.id), [], [])
        app.post_message(DetailLoaded(second.id, late))
        await pilot.pause(0.1)
        pane = app.main.query_one(DetailPane)
        assert pane.detail.session.id == first.id
        assert first.id in "\n".join(detail_text(app, "session"))


async def test_detail_pane_stays_on_its_session_while_rows_resort(
    make_app, auth: Auth, store: SessionStore, clock
):
    sessions = [auth.login(f"u{i}", f"u{i}@example.com", f"U{i}")[0] for i in range(6)]
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        pane = app.main.query_one(DetailPane)
        await pilot.press("down", "down")
        chosen = app.main.query_one(SessionsTable).selected.id
        await detail_of(pilot, chosen)
        shown: list[str | None] = []
        real_show = pane.show

        def record(detail: SessionDetail | None, message: str = "") -> None:
            shown.append(detail.session.id if detail else message)
            real_show(detail, message)

        pane.show = record  # type: ignore[method-assign]
        # Silent refreshes move rows (the default sort is access expiry) under the cursor.
        for step in range(4):
            clock.advance(1)
            for s in sessions[step : step + 3]:
                store.update_access(s.id, f"jti-{step}-{s.id[:4]}", clock.now() + 60, clock.now())
            await polled(pilot)
            await app.workers.wait_for_complete()
            await pilot.pause()
            assert app.main.query_one(SessionsTable).selected.id == chosen
        assert shown and set(shown) == {chosen}, shown
        assert chosen in "\n".join(detail_text(app, "session"))


async def test_tick_rebuilds_only_the_detail_panels_whose_text_moved(make_app, auth: Auth, clock):
    """Each second the pane redraws what changed, nothing else (the history panel of a session
    with no blacklist keys never changes with the clock)."""
    session = auth.login("u1", "one@example.com", "One")[0]  # access 60s, refresh 1h
    app = make_app(interval=3600.0)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await detail_of(pilot, session.id)
        pane = app.main.query_one(DetailPane)

        def contents() -> list[object]:
            return [p.content for p in pane.query("Static")]

        before = contents()
        pane.tick()  # same second: nothing to redraw
        assert all(a is b for a, b in zip(contents(), before, strict=True))
        clock.advance(10)
        app.main.tick()
        await pilot.pause()
        after = contents()
        assert after[1] is not before[1]  # the countdowns moved
        assert after[2] is before[2]  # keys and audit did not
        assert access_expires(app) == "in 50s"


async def test_tick_repaints_the_clock_columns_of_the_rows_only(make_app, auth: Auth, clock):
    auth.login("u1", "one@example.com", "One")
    app = make_app(interval=3600.0)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        table = app.main.query_one(SessionsTable)
        await pilot.pause()
        table._repaint_regions.clear()
        table.refresh_clock()
        (region,) = table._repaint_regions
        widths, gaps = table.widths(), table.gaps
        age = [c.key for c in table.columns].index("age")
        x = 1 + sum(widths[:age]) + sum(gaps[:age])
        offset = table.content_offset
        width = table.scrollable_content_region.width
        assert region == Region(x, 1, width - x, table.page_height).translate(offset)
        clock.advance(10)
        app.main.tick()
        await pilot.pause()
        assert table_line(app, 1).split()[-3] == "50s"


async def test_detail_pane_says_how_long_ago_a_token_expired(make_app, auth: Auth, clock):
    session = auth.login("u1", "one@example.com", "One")[0]  # access 60s, refresh 1h
    clock.advance(60 + 134)  # the access token expired 2:14 ago
    app = make_app(interval=3600.0)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await detail_of(pilot, session.id)
        tokens = detail_text(app, "tokens")
        assert tokens[4].split() == ["expired", "2:14", "ago"], tokens
        assert tokens[8].split()[:2] == ["expires", "in"], tokens  # the refresh token lives on
        assert not any("expires expired" in " ".join(line.split()) for line in tokens)
        clock.advance(1)
        app.main.tick()
        await pilot.pause()
        assert detail_text(app, "tokens")[4].split() == ["expired", "2:15", "ago"]
