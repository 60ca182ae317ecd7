"""Every action of the monitor in one list: the key bindings, the footer, the help screen and the
command palette are all made from it, so none of them can forget one."""

from __future__ import annotations

from dataclasses import dataclass

from textual.binding import Binding

SESSIONS = "sessions"
BLACKLIST = "blacklist"
HEALTH = "health"
VIEW_CYCLE = (SESSIONS, BLACKLIST, HEALTH)  # the order tab goes through them
BOTH = frozenset({SESSIONS, BLACKLIST})
EVERY_VIEW = frozenset(VIEW_CYCLE)


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
    views: frozenset[str] = BOTH  # the views where it works (elsewhere it is hidden)
    short: str = ""  # the footer label on a narrow screen (default: ``label``)
    pinned: bool = False  # always in the footer, at its right end, whatever the width

    @property
    def short_label(self) -> str:
        return self.short or self.label


ACTIONS: tuple[ActionSpec, ...] = (
    ActionSpec(
        "l",
        "force_logout",
        "Log out",
        "Force-logout the selected (or marked) sessions",
        "l",
        destructive=True,
        views=frozenset({SESSIONS}),
        short="Logout",
    ),
    ActionSpec(
        "L",
        "force_logout_user",
        "Log out user",
        "Force-logout every session of the selected user",
        "L",
        destructive=True,
        views=frozenset({SESSIONS}),
        short="User",
    ),
    ActionSpec(
        "A",
        "force_logout_matching",
        "Log out matching",
        "Force-logout every session the filter matches (the dialog names how many; confirming "
        "ends exactly those)",
        "A",
        destructive=True,
        views=frozenset({SESSIONS}),
        show=False,
    ),
    ActionSpec(
        "space",
        "toggle_mark",
        "Mark",
        "Mark or unmark the selected session",
        "space",
        views=frozenset({SESSIONS}),
    ),
    ActionSpec(
        "slash",
        "filter",
        "Filter",
        "Filter the view: sessions by email, name, session id or IP; blacklist keys by email, "
        "user, session id, key, reason or actor (Escape clears)",
        "/",
    ),
    ActionSpec(
        "s", "cycle_sort", "Sort", "Sort by the next column", "s", views=frozenset({SESSIONS})
    ),
    ActionSpec(
        "S",
        "reverse_sort",
        "Reverse",
        "Reverse the sort order (the view shows the top of the new order; the cursor stays on "
        "its row)",
        "S",
        short="Rev",
    ),
    ActionSpec(
        "p", "toggle_pause", "Pause", "Pause or resume the lists (countdowns keep ticking)", "p"
    ),
    ActionSpec(
        "r",
        "refresh",
        "Refresh",
        "Poll the database and Redis now (in the health view: run the checks again)",
        "r",
        short="Poll",
        views=EVERY_VIEW,
    ),
    ActionSpec(
        "tab",
        "switch_view",
        "Next view",
        "Switch view: sessions, blacklist, health (doctor's checks)",
        "tab",
        priority=True,
        short="View",
        views=EVERY_VIEW,
    ),
    ActionSpec(
        "shift+tab",
        "previous_view",
        "Previous view",
        "Switch to the previous view (health, blacklist, sessions)",
        "shift+tab",
        priority=True,
        show=False,
        views=EVERY_VIEW,
    ),
    ActionSpec(
        "H",
        "history",
        "History",
        "Show the sessions that ended (who, when, how, by whom and why), searchable by user "
        "or reason, date range and how",
        "H",
        views=EVERY_VIEW,
        short="Hist",
    ),
    ActionSpec(
        "left",
        "columns_left",
        "Columns ←",
        "Scroll the columns left when some are hidden (narrow screen; the countdowns stay)",
        "←",
        show=False,
    ),
    ActionSpec(
        "right",
        "columns_right",
        "Columns →",
        "Scroll the columns right when some are hidden (the bottom border names them)",
        "→",
        show=False,
    ),
    ActionSpec("escape", "clear_filter", "Clear filter", "Clear the filter", "escape", show=False),
    ActionSpec(
        "K",
        "keys",
        "Keys",
        "Show the signing keys: kid, state, age, when the previous key can go (there, l logs "
        "out every session signed with the selected key, after a confirmation naming how many)",
        "K",
        show=False,
        views=EVERY_VIEW,
    ),
    ActionSpec(
        "e",
        "activity",
        "Activity",
        "Show the live activity feed: every process's logins, refreshes, logouts and rejections, "
        "per-second sparklines of the last 5 minutes and the rates (filter by kind and user)",
        "e",
        show=False,
        views=EVERY_VIEW,
    ),
    ActionSpec(
        "question_mark",
        "help",
        "Help",
        "Show the keys and what they do",
        "?",
        pinned=True,
        views=EVERY_VIEW,
    ),
    ActionSpec(
        "q",
        "quit",
        "Quit",
        "Quit the monitor (ctrl+c too, from anywhere)",
        "q",
        pinned=True,
        views=EVERY_VIEW,
    ),
)

DESTRUCTIVE = frozenset(a.action for a in ACTIONS if a.destructive)
VIEWS: dict[str, frozenset[str]] = {a.action: a.views for a in ACTIONS}
SPECS: dict[str, ActionSpec] = {a.action: a for a in ACTIONS}


def works_in(action: str, view: str) -> bool:
    """True when ``action`` does something in ``view`` ("sessions", "blacklist", "health")."""
    return view in VIEWS.get(action, BOTH)


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
