"""The help screen: every key, what it does, and which are disabled right now (read-only)."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from sessionmon.tui.actions import ACTIONS, EVERY_VIEW, VIEW_CYCLE


def keys_table(disabled: dict[str, str]) -> Table:
    """A table of keys; ``disabled`` maps an action to why it is disabled. The last column says
    where a key works when it does not work in every view."""
    table = Table(box=None, padding=(0, 2), show_header=False, expand=True)
    table.add_column(style="bold", no_wrap=True, width=9)
    table.add_column(ratio=1)
    table.add_column(style="dim", no_wrap=True)
    for spec in ACTIONS:
        why = disabled.get(spec.action)
        views = [v for v in VIEW_CYCLE if v in spec.views]
        where = (
            ""
            if spec.views == EVERY_VIEW
            else " and ".join(views) + " view" + "s" * (len(views) > 1)
        )
        if why:
            table.add_row(
                Text(spec.display, style="dim strike"),
                Text(f"{spec.description}  (disabled: {why})", style="dim"),
                where,
            )
        else:
            table.add_row(Text(spec.display, style="bold"), spec.description, where)
    table.add_row("", "", "")
    table.add_row(Text("↑ ↓ j k", style="bold"), "Move the cursor (PgUp, PgDn, Home, End too)")
    table.add_row(Text("click", style="bold"), "Select a row; click a column header to sort by it")
    table.add_row(Text("ctrl+p", style="bold"), "Command palette: every action by name")
    return table


class HelpScreen(ModalScreen[None]):
    """Keys and what they do."""

    DEFAULT_CSS = """
    HelpScreen { align: center middle; background: $background 60%; }
    HelpScreen > #help {
        width: 96; max-width: 100%; height: auto; max-height: 100%;
        border: thick $primary; background: $surface; padding: 1 2;
    }
    HelpScreen #help-title { text-style: bold; margin-bottom: 1; }
    HelpScreen #help-foot { color: $text-muted; margin-top: 1; }
    """

    BINDINGS = [Binding("escape,q,question_mark", "close", "Close", id="help.close")]

    def __init__(self, disabled: dict[str, str]) -> None:
        super().__init__()
        self.disabled_actions = disabled  # not ``disabled``: that would disable the screen

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help"):
            yield Static("sessionmon monitor: keys", id="help-title")
            yield Static(keys_table(self.disabled_actions))
            yield Static(
                "Countdowns: green plenty of the token's life left, yellow under half, "
                "red under a fifth. Escape, q or ? closes this.",
                id="help-foot",
            )

    def action_close(self) -> None:
        self.dismiss(None)
