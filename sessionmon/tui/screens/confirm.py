"""The force-logout confirm dialog: a ``ModalScreen[bool]`` that says exactly what will happen.

A single session or a marked set is fixed when the operator pressed the key: whatever the list
does underneath while the dialog is open, confirming acts on exactly those ids. A user logout
targets the user: confirming ends every session the user has at that moment (one that started
while the dialog was open included, as an attacker's fresh login would), and the dialog says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from sessionmon.tui.format import plural


class LogoutKind(Enum):
    """What a force-logout acts on."""

    SESSION = "session"  # the session under the cursor (its id, captured at the key press)
    MARKED = "marked"  # the marked sessions (their ids, captured at the key press)
    USER = "user"  # every session of the user when the operator confirms
    MATCHING = "matching"  # the sessions the filter matched at the key press (their ids)
    SIGNED_WITH = "signed_with"  # the sessions signed with a key at the key press (their ids)


# The kinds that end a set read by a query, in batches (each one audited).
BY_QUERY = frozenset({LogoutKind.MATCHING, LogoutKind.SIGNED_WITH})


@dataclass(frozen=True)
class LogoutTarget:
    """What a force-logout will act on, captured when the key was pressed."""

    kind: LogoutKind
    session_ids: tuple[str, ...]  # for USER: the user's sessions when the dialog opened
    emails: tuple[str, ...]
    user_id: str | None = None
    query: str | None = None  # MATCHING: the filter text
    kid: str | None = None  # SIGNED_WITH: the key

    @property
    def count(self) -> int:
        return len(self.session_ids)

    @property
    def who(self) -> str:
        return (self.emails[0] if self.emails else "") or self.user_id or "?"

    @property
    def title(self) -> str:
        if self.kind is LogoutKind.USER:
            return f"Force-logout every session of {self.who}: {self.count} now?"
        if self.kind is LogoutKind.MATCHING:
            return f"Force-logout every session matching {self.query!r}: {self.count:,}?"
        if self.kind is LogoutKind.SIGNED_WITH:
            return f"Force-logout every session signed with key {self.kid}: {self.count:,}?"
        return f"Force-logout {plural(self.count, 'session')}?"

    @property
    def button(self) -> str:
        if self.kind is LogoutKind.USER:
            return "Log out the user"
        return f"Log out {plural(self.count, 'session')}"


class ConfirmLogout(ModalScreen[bool]):
    """Names what will be logged out. ``y``/Enter confirm, Tab to the reason, ``n``/Esc cancel."""

    DEFAULT_CSS = """
    ConfirmLogout { align: center middle; background: $background 60%; }
    ConfirmLogout > #dialog {
        width: 76; height: auto; max-height: 90%;
        border: thick $error 80%; background: $surface; padding: 1 2;
    }
    ConfirmLogout #title { text-style: bold; color: $text; width: 100%; margin-bottom: 1; }
    ConfirmLogout #targets { height: auto; max-height: 12; color: $text; margin-bottom: 1; }
    ConfirmLogout #explain { color: $text-muted; margin-bottom: 1; }
    ConfirmLogout #reason { margin-bottom: 1; }
    ConfirmLogout #buttons { height: auto; align-horizontal: right; }
    ConfirmLogout #buttons Button { margin-left: 2; }
    ConfirmLogout #hint { color: $text-muted; margin-top: 1; }
    """

    BINDINGS = [
        Binding("y", "confirm", "Confirm", id="confirm.yes"),
        Binding("n,escape", "cancel", "Cancel", id="confirm.no"),
    ]

    MAX_LISTED = 8

    def __init__(self, target: LogoutTarget) -> None:
        super().__init__()
        self.target = target
        self.reason: str | None = None

    def compose(self) -> ComposeResult:
        t = self.target
        with Vertical(id="dialog"):
            yield Label(t.title, id="title", markup=False)
            lines = [
                f"{sid}  {email}"
                for sid, email in zip(
                    t.session_ids[: self.MAX_LISTED], self._emails(), strict=False
                )
            ]
            if t.count > self.MAX_LISTED:
                lines.append(f"… and {t.count - self.MAX_LISTED:,} more")
            yield Static("\n".join(lines), id="targets", markup=False)
            explain = (
                "Their access and refresh tokens and the session ids go on the blacklist "
                "(each key lives as long as its token), then the sessions are deleted."
            )
            if t.kind is LogoutKind.USER:
                explain += " A session of this user that starts before you confirm is ended too."
            elif t.kind is LogoutKind.MATCHING:
                explain += (
                    " Exactly the sessions listed, as the filter matched them when you pressed"
                    " the key; one that starts to match later is not touched."
                )
            elif t.kind is LogoutKind.SIGNED_WITH:
                explain += (
                    " Exactly the sessions listed: those whose access or refresh token was"
                    " signed with this key when you pressed l. The key itself stays as it is"
                    " (retire it with `sessionmon keys retire`)."
                )
            yield Static(explain, id="explain")
            yield Input(placeholder="reason (optional, goes to the audit log)", id="reason")
            with Horizontal(id="buttons"):
                yield Button("Cancel", id="cancel")
                yield Button(t.button, variant="error", id="confirm")
            yield Static("y / Enter confirm · Tab reason · n / Esc cancel", id="hint")

    def _emails(self) -> list[str]:
        t = self.target
        if len(t.emails) == len(t.session_ids):
            return list(t.emails)
        return [t.emails[0] if t.emails else ""] * len(t.session_ids)

    def on_mount(self) -> None:
        self.query_one("#cancel", Button).can_focus = False  # Tab goes confirm <-> reason
        self.query_one("#confirm", Button).focus()

    def action_confirm(self) -> None:
        self.reason = self.query_one("#reason", Input).value.strip() or None
        self.dismiss(True)

    def action_cancel(self) -> None:
        self.dismiss(False)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_confirm()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "confirm":
            self.action_confirm()
        else:
            self.action_cancel()
