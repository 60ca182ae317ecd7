"""The command palette lists every action and runs it (and never crashes on key labels)."""

from __future__ import annotations

from textual.command import CommandList, CommandPalette

from sessionmon.core.auth import Auth
from sessionmon.tui.actions import ACTIONS
from tests.tui.conftest import SIZE, loaded, wait_for


async def test_palette_lists_every_action_and_runs_one(make_app, auth: Auth):
    auth.login("u1", "ann@example.com", "Ann")
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        titles = [str(c.title) for c in app.get_system_commands(app.screen)]
        for spec in ACTIONS:
            assert any(t.startswith(spec.label) for t in titles), spec.label
        await pilot.press("ctrl+p")
        await wait_for(pilot, lambda: isinstance(app.screen, CommandPalette), "palette open")
        await pilot.press(*"pause")
        results = app.screen.query_one(CommandList)

        def pause_first() -> bool:
            if not results.option_count or results.highlighted != 0:
                return False
            return str(results.get_option_at_index(0).prompt).startswith("Pause")

        await wait_for(pilot, pause_first, "Pause first among the matches")
        await pilot.press("enter")
        await wait_for(pilot, lambda: not isinstance(app.screen, CommandPalette), "palette closed")
        await wait_for(pilot, lambda: app.paused, "paused through the palette")
