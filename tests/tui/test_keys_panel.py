"""The keys panel: the key set read through the core, a rotation by another process shown
within seconds, the countdown of the previous key."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from sessionmon.core.auth import Auth
from sessionmon.core.blacklist import Blacklist
from sessionmon.core.clock import FrozenClock
from sessionmon.core.keydir import KeyDirectory
from sessionmon.core.keyring import KeyState
from sessionmon.core.keysource import LiveKeys
from sessionmon.core.settings import Settings
from sessionmon.core.store import SessionStore
from sessionmon.core.tokens import TokenCodec
from sessionmon.tui.app import SessionmonApp
from sessionmon.tui.poller import Poller
from sessionmon.tui.screens.confirm import ConfirmLogout, LogoutKind
from sessionmon.tui.screens.keys import KeysScreen, keys_table
from tests.tui.conftest import SIZE, loaded, wait_for


def text_of(screen: KeysScreen) -> str:
    assert screen.listing is not None
    console = Console(record=True, width=120)
    console.print(keys_table(screen.listing, screen.clock.now()))
    return console.export_text()


async def test_keys_panel_shows_the_set_and_a_rotation_done_elsewhere(
    store: SessionStore,
    blacklist: Blacklist,
    settings: Settings,
    clock: FrozenClock,
    tmp_path: Path,
) -> None:
    directory = KeyDirectory(tmp_path / "keys", "ES256")
    directory.ensure()
    codec = TokenCodec(LiveKeys(directory), clock=clock)
    auth = Auth(store, blacklist, codec, access_ttl=60, refresh_ttl=3600, clock=clock)
    auth.login("u1", "ann@example.com", "Ann")
    app = SessionmonApp(
        store=store,
        blacklist=blacklist,
        auth=auth,
        settings=settings.with_(interval=0.2),
        clock=clock,
        poller=Poller(store.location, blacklist, clock, backoff_start=0.1, backoff_cap=0.5),
    )
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("K")
        await wait_for(pilot, lambda: isinstance(app.screen, KeysScreen), "the keys panel")
        screen = app.screen
        assert isinstance(screen, KeysScreen)
        await wait_for(pilot, lambda: screen.listing is not None, "the key set read")
        assert screen.listing is not None
        old = screen.listing.ring.current.kid
        shown = text_of(screen)
        assert old in shown and "current" in shown and "next" in shown

        directory.rotate(overlap=3600 + 10)  # `sessionmon keys rotate` in another process

        def rotated() -> bool:
            entry = screen.listing.ring.get(old) if screen.listing else None
            return entry is not None and entry.state is KeyState.PREVIOUS

        await wait_for(pilot, rotated, "the rotation on screen", timeout=5)
        shown = text_of(screen)
        (row,) = [line for line in shown.splitlines() if old in line]
        assert "previous" in row and "in 1h00m" in row  # refresh TTL + leeway, counting down
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, KeysScreen), "closed")


async def test_keys_panel_says_why_when_there_is_no_key(
    store: SessionStore, blacklist: Blacklist, settings: Settings, clock: FrozenClock
) -> None:
    from sessionmon.core.errors import ConfigError

    def no_key() -> TokenCodec:
        raise ConfigError("no signing secret for HS256: set SESSIONMON_SECRET")

    auth = Auth(store, blacklist, no_key, access_ttl=60, refresh_ttl=3600, clock=clock)
    app = SessionmonApp(store=store, blacklist=blacklist, auth=auth, settings=settings, clock=clock)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("K")
        await wait_for(pilot, lambda: isinstance(app.screen, KeysScreen), "the keys panel")
        screen = app.screen
        assert isinstance(screen, KeysScreen)
        await wait_for(pilot, lambda: screen.loads > 0, "a read")
        assert screen.listing is None and screen.error and "SESSIONMON_SECRET" in screen.error


async def test_l_in_the_keys_panel_logs_out_exactly_the_sessions_signed_with_the_selected_key(
    store: SessionStore,
    blacklist: Blacklist,
    settings: Settings,
    clock: FrozenClock,
    tmp_path: Path,
) -> None:
    """Three sessions signed with the first key, two with the second (after a rotation): the
    panel selects the current key, the arrows select the previous one, ``l`` opens the confirm
    dialog naming 3, and confirming ends exactly those three (one of which ended meanwhile)."""
    directory = KeyDirectory(tmp_path / "keys", "HS256", clock)
    directory.ensure()
    keys = LiveKeys(directory)
    codec = TokenCodec(keys, clock=clock)
    auth = Auth(store, blacklist, codec, access_ttl=60, refresh_ttl=3600, clock=clock)
    old = [auth.login(f"o{i}", f"o{i}@example.com", "Old")[0] for i in range(3)]
    first = keys.ring().current.kid
    directory.rotate(overlap=3600)
    keys.refresh()
    new = [auth.login(f"n{i}", f"n{i}@example.com", "New")[0] for i in range(2)]
    second = keys.ring().current.kid
    assert {s.access_kid for s in old} == {first} and {s.refresh_kid for s in new} == {second}
    app = SessionmonApp(
        store=store,
        blacklist=blacklist,
        auth=auth,
        settings=settings.with_(interval=0.2),
        clock=clock,
        poller=Poller(store.location, blacklist, clock, backoff_start=0.1, backoff_cap=0.5),
    )
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("K")
        await wait_for(pilot, lambda: isinstance(app.screen, KeysScreen), "the keys panel")
        screen = app.screen
        assert isinstance(screen, KeysScreen)
        await wait_for(pilot, lambda: screen.listing is not None, "the key set read")
        assert screen.selected == second  # the current key first
        kids = [e.kid for e in screen.listing.entries]  # type: ignore[union-attr]
        steps = kids.index(first) - kids.index(second)
        for _ in range(abs(steps)):
            await pilot.press("down" if steps > 0 else "up")
        assert screen.selected == first
        await pilot.press("l")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmLogout), "confirm dialog")
        dialog = app.screen
        assert isinstance(dialog, ConfirmLogout)
        target = dialog.target
        assert target.kind is LogoutKind.SIGNED_WITH and target.kid == first
        assert sorted(target.session_ids) == sorted(s.id for s in old)
        assert target.title == f"Force-logout every session signed with key {first}: 3?"
        auth.force_logout(old[0].id, "elsewhere")  # ended while the dialog is open
        await pilot.press("y")
        await wait_for(
            pilot, lambda: not store.get_sessions([s.id for s in old]), "the three ended"
        )
        await app.workers.wait_for_complete()
    assert [s.id for s in store.get_sessions([s.id for s in new])] == [s.id for s in new]
    for s in old:
        entries = blacklist.entries_for_session(s.id, [s.access_jti])
        assert {e.kind for e in entries} >= {"access", "session"}
    mine = [a for a in store.audit(limit=50) if a.actor == settings.actor]
    assert sorted((a.session_id or "", a.outcome) for a in mine) == sorted(
        [(old[0].id, "not_found")] + [(s.id, "ok") for s in old[1:]]
    )


async def test_l_in_the_keys_panel_with_no_session_of_that_key_says_so(
    store: SessionStore,
    blacklist: Blacklist,
    settings: Settings,
    clock: FrozenClock,
    tmp_path: Path,
) -> None:
    directory = KeyDirectory(tmp_path / "keys", "HS256", clock)
    directory.ensure()
    codec = TokenCodec(LiveKeys(directory), clock=clock)
    auth = Auth(store, blacklist, codec, access_ttl=60, refresh_ttl=3600, clock=clock)
    auth.login("u1", "ann@example.com", "Ann")
    app = SessionmonApp(store=store, blacklist=blacklist, auth=auth, settings=settings, clock=clock)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("K")
        await wait_for(pilot, lambda: isinstance(app.screen, KeysScreen), "the keys panel")
        screen = app.screen
        assert isinstance(screen, KeysScreen)
        await wait_for(pilot, lambda: screen.listing is not None, "the key set read")
        assert screen.listing is not None
        kids = [e.kid for e in screen.listing.entries]
        (next_kid,) = [e.kid for e in screen.listing.entries if e.state is KeyState.NEXT]
        steps = kids.index(next_kid) - kids.index(screen.listing.ring.current.kid)
        for _ in range(abs(steps)):
            await pilot.press("down" if steps > 0 else "up")
        assert screen.selected == next_kid  # the next key: it has signed nothing yet
        await pilot.press("l")

        def told() -> bool:
            return any(
                f"No live session is signed with key {next_kid}" in str(n.message)
                for n in app._notifications
            )

        await wait_for(pilot, told, "the notification")
        assert not isinstance(app.screen, ConfirmLogout)
    assert store.count_sessions() == 1
