"""Every action of the monitor in one list: the key bindings, the help screen and the command
palette are all made from it, so none of them can forget one."""

from __future__ import annotations

from dataclasses import dataclass

from textual.binding import Binding


@dataclass(frozen=True)
class ActionSpec:
    """One operator action."""

    keys: str  # Textual key names, comma separated
    action: str  # action name on the main screen
    label: str  # short footer label
    description: str  # help screen and command palette
    display: str  # how the key is written in the help screen
    destructive: bool = False  # refused in --read-only mode
    show: bool = True  # shown in the footer
    priority: bool = False


ACTIONS: tuple[ActionSpec, ...] = (
    ActionSpec(
        "l",
        "force_logout",
        "Log out",
        "Force-logout the selected (or marked) sessions",
        "l",
        destructive=True,
    ),
    ActionSpec(
        "L",
        "force_logout_user",
        "Log out user",
        "Force-logout every session of the selected user",
        "L",
        destructive=True,
    ),
    ActionSpec("space", "toggle_mark", "Mark", "Mark or unmark the selected session", "space"),
    ActionSpec(
        "slash", "filter", "Filter", "Filter by email, name, session id or IP (Escape clears)", "/"
    ),
    ActionSpec("s", "cycle_sort", "Sort", "Sort by the next column", "s"),
    ActionSpec("S", "reverse_sort", "Reverse", "Reverse the sort order", "S", show=False),
    ActionSpec(
        "p", "toggle_pause", "Pause", "Pause or resume the list (countdowns keep ticking)", "p"
    ),
    ActionSpec("r", "refresh", "Refresh", "Poll SQLite and Redis now", "r"),
    ActionSpec(
        "tab",
        "switch_view",
        "Sessions/Blacklist",
        "Switch between sessions and blacklist",
        "tab",
        priority=True,
    ),
    ActionSpec("escape", "clear_filter", "Clear filter", "Clear the filter", "escape", show=False),
    ActionSpec("question_mark", "help", "Help", "Show the keys and what they do", "?"),
    ActionSpec("q", "quit", "Quit", "Quit the monitor", "q"),
)

DESTRUCTIVE = frozenset(a.action for a in ACTIONS if a.destructive)


def bindings() -> list[Binding]:
    """Key bindings for the main screen, with ids (so a keymap can rebind them)."""
    return [
        Binding(
            a.keys,
            a.action,
            a.label,
            show=a.show,
            priority=a.priority,
            id=f"sessionmon.{a.action}",
        )
        for a in ACTIONS
    ]
