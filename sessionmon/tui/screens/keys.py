"""The keys panel: the signing key set (kid, state, age, when a previous key can go), read through
the core (``MonitorBackend.key_listing``; never a key file) once a second, so a rotation or a
retirement done anywhere shows within a second or two. Up and down select a key; ``l`` closes the
panel with that kid, and the main screen asks to log out every session signed with it."""

from __future__ import annotations

from collections.abc import Callable

from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from sessionmon.core.clock import Clock
from sessionmon.core.durations import format_duration
from sessionmon.core.errors import SessionmonError
from sessionmon.core.keyadmin import KeyListing
from sessionmon.core.keyring import KeyState

STATE_STYLES = {
    KeyState.NEXT: "cyan",
    KeyState.CURRENT: "bold green",
    KeyState.PREVIOUS: "yellow",
    KeyState.RETIRED: "dim",
}


def keys_table(listing: KeyListing, now: float, selected: str | None = None) -> Table:
    """One row per key: kid, algorithm, state, age, and for a previous key its countdown (the
    ``selected`` kid's row in reverse video)."""
    table = Table(box=None, padding=(0, 2), expand=True)
    for name in ("KID", "ALG", "STATE", "AGE", "CAN GO"):
        table.add_column(name, no_wrap=True, style="bold" if name == "KID" else "")
    for e in listing.entries:
        age = e.age(now)
        can_go = e.can_go_at(listing.overlap)
        if can_go is None:
            when = Text("-", style="dim")
        elif can_go <= now:
            when = Text("now (retire it, or the next rotation does)", style="green")
        else:
            when = Text("in " + format_duration(can_go - now), style="yellow")
        table.add_row(
            e.kid,
            e.algorithm,
            Text(e.state.value, style=STATE_STYLES[e.state]),
            "-" if age is None else format_duration(age),
            when,
            style="reverse" if e.kid == selected else None,
        )
    return table


class KeysScreen(ModalScreen[str | None]):
    """The signing keys; Escape, q or K closes it (result None); ``l`` closes it with the
    selected kid (log out every session signed with it, after a confirmation)."""

    DEFAULT_CSS = """
    KeysScreen { align: center middle; background: $background 60%; }
    KeysScreen > #keys {
        width: 96; max-width: 100%; height: auto; max-height: 100%;
        border: thick $primary; background: $surface; padding: 1 2;
    }
    KeysScreen #keys-title { text-style: bold; margin-bottom: 1; }
    KeysScreen #keys-foot { color: $text-muted; margin-top: 1; }
    """

    BINDINGS = [
        Binding("escape,q,K", "close", "Close", id="keys.close"),
        Binding("up,k", "move(-1)", "Previous key", show=False),
        Binding("down,j", "move(1)", "Next key", show=False),
        Binding("l", "logout_signed", "Log out its sessions", id="keys.logout"),
    ]

    def __init__(self, load: Callable[[], KeyListing], clock: Clock, interval: float = 1.0) -> None:
        super().__init__()
        self.load = load
        self.clock = clock
        self.interval = interval
        self.listing: KeyListing | None = None
        self.error: str | None = None
        self.selected: str | None = None  # the kid ``l`` acts on (the current key at first)
        self.loads = 0  # completed reads (tests wait on it)

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="keys"):
            yield Static("Signing keys", id="keys-title")
            yield Static("reading the key set…", id="keys-table")
            yield Static("", id="keys-foot")

    def on_mount(self) -> None:
        self.reload()
        self.set_interval(self.interval, self.reload)

    def reload(self) -> None:
        self._read()

    @work(thread=True, group="keys", exclusive=True, exit_on_error=False)
    def _read(self) -> None:
        try:
            listing, error = self.load(), None
        except SessionmonError as exc:  # no key configured, a damaged key set, no database
            listing, error = None, str(exc)
        self.app.call_from_thread(self.show, listing, error)

    def show(self, listing: KeyListing | None, error: str | None) -> None:
        self.listing, self.error = listing, error
        self.loads += 1
        self._draw()

    def _draw(self) -> None:
        listing, error = self.listing, self.error
        table = self.query_one("#keys-table", Static)
        foot = self.query_one("#keys-foot", Static)
        if listing is None:
            table.update(Text(f"cannot read the key set: {error}", style="red"))
            foot.update("Escape, q or K closes this.")
            return
        ring = listing.ring
        if self.selected is None or ring.get(self.selected) is None:
            self.selected = ring.current.kid
        table.update(keys_table(listing, self.clock.now(), self.selected))
        kind = "rotating key set" if ring.managed else "one configured key (not rotated here)"
        foot.update(
            f"{ring.algorithm}, {kind}: {ring.where}. A previous key verifies for "
            f"{format_duration(listing.overlap)} (longest token + leeway). Rotate and retire "
            f"with `sessionmon keys`.\n↑↓ select a key · l log out every session signed with it · "
            "Escape, q or K close"
        )

    def action_move(self, step: int) -> None:
        if self.listing is None:
            return
        kids = [e.kid for e in self.listing.entries]
        at = kids.index(self.selected) if self.selected in kids else 0
        self.selected = kids[max(0, min(len(kids) - 1, at + step))]
        self._draw()

    def action_logout_signed(self) -> None:
        if self.listing is None or self.selected is None:
            self.notify("No key selected (the key set is not read)", severity="warning")
            return
        self.dismiss(self.selected)

    def action_close(self) -> None:
        self.dismiss(None)
