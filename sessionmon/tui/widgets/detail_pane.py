"""The detail pane: every field of the selected session (with its refresh-token generation and the
deadlines its lifetime policies set), the claims its tokens carry and the kid of the key that
signed each (never a token or a signature), its blacklist keys, its audit history (a reuse
detection in the expired colour) and its last rotations. Countdowns tick from stored values and
the policy's pure deadline functions (``core.policy``): never a query.

Nothing wraps: a value too long for its column is cut with an ellipsis ("…"), and the token column
is wide enough for a whole jti (22 characters), so an id copied from the pane is never a wrong one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from rich.console import Group, RenderableType
from rich.style import Style
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Static

from sessionmon.core.auth import REUSE_DETECTED
from sessionmon.core.blacklist import BlacklistEntry
from sessionmon.core.clock import Clock
from sessionmon.core.policy import SessionPolicy
from sessionmon.core.store import AuditEntry, Session
from sessionmon.core.store.base import RotationRecord
from sessionmon.tui.format import ago, clock_time, countdown, date_time, short_agent
from sessionmon.tui.widgets.levels import LEVEL_CLASSES, STATE_CLASSES, level_css

_NOTHING = object()
LINES = 9  # what a panel shows: the pane's height less its border


@dataclass(frozen=True)
class SessionDetail:
    """What the pane shows for one session; ``keys`` is None when Redis could not be asked."""

    session: Session
    keys: list[BlacklistEntry] | None = None
    audit: list[AuditEntry] = field(default_factory=list)
    key_error: str | None = None


def _grid(label_width: int = 9) -> Table:
    """Label / value rows filling the panel's width; a long value ends in "…"."""
    table = Table.grid(padding=(0, 1), expand=True)
    table.add_column(style="dim", no_wrap=True, min_width=label_width)
    table.add_column(overflow="ellipsis", no_wrap=True, ratio=1)
    return table


Styles = Callable[[str], Style]  # component class -> its Rich style (the theme's colours)


def _countdown(styles: Styles, expires: float | None, now: float, life: float | None) -> Text:
    """``in 14:32``, or for a time gone by ``expired 2:14 ago``."""
    text, level = countdown(expires, now, life)
    style = styles(f"countdown--{level}")
    if level != "expired":
        return Text(f"in {text}", style=style)
    if expires is None:
        return Text(text, style=style)
    return Text(f"expired {_since(expires, now)}", style=style)


def _since(expires: float, now: float) -> str:
    """``2:14 ago``, ``just now`` under a second."""
    when = ago(expires, now)
    return "just now" if when == "now" else when


def _expiry_row(
    styles: Styles, grid: Table, expires: float | None, now: float, life: float | None
) -> None:
    """The ``expires in 14:32`` row; ``expired 2:14 ago`` once the time has passed."""
    if expires is not None and expires <= now:
        grid.add_row("expired", Text(_since(expires, now), style=styles("countdown--expired")))
    else:
        grid.add_row("expires", _countdown(styles, expires, now, life))


def _clock_reading(expires: float | None, now: float, life: float | None) -> object:
    """What an expiry shows at ``now`` (the pane is redrawn when it changes)."""
    reading = countdown(expires, now, life)
    if reading[1] == "expired" and expires is not None:
        return _since(expires, now)
    return reading


class DetailPane(Horizontal):
    """Three columns: session, token claims, blacklist and audit."""

    COMPONENT_CLASSES = set(LEVEL_CLASSES)

    DEFAULT_CSS = (
        level_css("DetailPane")
        + """
    DetailPane { height: 11; border: round $primary 50%; border-title-color: $text-muted; }
    DetailPane > Static { width: 1fr; height: 100%; padding: 0 1; }
    /* "expires", a space, a whole 22-character jti, and the padding */
    DetailPane > #detail-tokens { width: 32; }
    """
    )

    def __init__(
        self,
        clock: Clock,
        access_life: float,
        *,
        policy: SessionPolicy | None = None,
        id: str | None = None,
    ) -> None:
        super().__init__(id=id)
        self.clock = clock
        self.access_life = access_life
        self.policy = policy or SessionPolicy()
        self.detail: SessionDetail | None = None
        self.message = "No session selected."
        self._panels = (
            Static(id="detail-session"),
            Static(id="detail-tokens"),
            Static(id="detail-history"),
        )
        self._shown: list[object] = [_NOTHING] * 3  # what each panel shows (``tick``)

    def compose(self) -> ComposeResult:
        yield from self._panels

    def on_mount(self) -> None:
        self.border_title = "Session detail"
        self.tick()

    def show(self, detail: SessionDetail | None, message: str = "No session selected.") -> None:
        """Show ``detail`` (or ``message`` when None); the same again redraws nothing."""
        if detail == self.detail and message == self.message:
            return
        self.detail = detail
        self.message = message
        self.tick()

    def tick(self) -> None:
        """Redraw (countdowns move) without asking anything of SQLite or Redis.

        A panel is rebuilt only when what it shows changed (the session, or one of its clock
        readings at the resolution shown); the panels have a fixed size, so never a layout.
        """
        if not self.is_mounted:
            return
        now = self.clock.now()
        detail = self.detail
        if detail is None:
            self._update(0, ("message", self.message), lambda: Text(self.message, style="dim"))
            self._update(1, None, lambda: "")
            self._update(2, None, lambda: "")
            return
        s = detail.session
        life = (s.refresh_exp or now) - s.created_at
        self._update(
            0,
            (
                s,
                ago(s.created_at, now),
                ago(s.last_seen_at, now),
                s.state(now),
                tuple(_clock_reading(at, now, life) for _, at, life in self._deadlines(s)),
            ),
            lambda: self._session(s, now),
        )
        self._update(
            1,
            (
                s,
                _clock_reading(s.access_exp, now, self.access_life),
                _clock_reading(s.refresh_exp, now, life),
            ),
            lambda: self._tokens(s, now),
        )
        keys = tuple(
            _clock_reading(e.expires_at, now, e.expires_at - e.revoked_at if e.revoked_at else None)
            for e in detail.keys or ()
        )
        self._update(2, (detail, keys), lambda: self._history(detail, now))

    def _update(self, panel: int, key: object, build: Callable[[], RenderableType]) -> None:
        """Show ``build()`` in ``panel`` unless what it shows is the same as last time (``key``)."""
        if self._shown[panel] is not _NOTHING and self._shown[panel] == key:
            return
        self._shown[panel] = key
        self._panels[panel].update(build(), layout=False)

    def _style(self, component: str) -> Style:
        return self.get_component_rich_style(component, partial=True)

    def _session(self, s: Session, now: float) -> RenderableType:
        t = _grid()
        t.add_row("session", Text(s.id, style="bold"))
        t.add_row("user", " · ".join((s.user_id, s.email or "-", s.name or "-")))
        t.add_row("ip", s.ip or "-")
        t.add_row("agent", s.user_agent or "-")
        t.add_row("created", f"{date_time(s.created_at)} ({ago(s.created_at, now)})")
        t.add_row("last seen", f"{date_time(s.last_seen_at)} ({ago(s.last_seen_at, now)})")
        t.add_row(
            "refreshes",
            f"{s.refresh_count} · gen {s.generation} · source {s.source or '-'}",
        )
        state = s.state(now)
        t.add_row("state", Text(state, style=self._style(STATE_CLASSES[state])))
        t.add_row("ends", self._ends(s, now))
        return t

    def _deadlines(self, s: Session) -> list[tuple[str, float, float]]:
        """The policy deadlines of ``s`` (name, when, the policy's whole span), soonest first."""
        p = self.policy
        out = []
        if (idle := p.idle_deadline(s)) is not None and p.idle_timeout is not None:
            out.append(("idle", idle, p.idle_timeout))
        if (absolute := p.absolute_deadline(s)) is not None and p.absolute_timeout is not None:
            out.append(("absolute", absolute, p.absolute_timeout))
        return sorted(out, key=lambda d: d[1])

    def _ends(self, s: Session, now: float) -> Text:
        """``idle in 29:48 (09:30:00) · absolute in 6h59m (16:00:00)``, the soonest first (a
        narrow pane cuts the end: the countdowns come before the times)."""
        deadlines = self._deadlines(s)
        if not deadlines:
            return Text("no idle or absolute timeout", style="dim")
        out = Text()
        for n, (name, at, life) in enumerate(deadlines):
            if n:
                out.append(" · ")
            text, level = countdown(at, now, life)
            reading = f"in {text}" if level != "expired" else "passed (ends at the next refresh)"
            out.append(f"{name} ")
            out.append(reading, style=self._style(f"countdown--{level}"))
            out.append(f" ({date_time(at) if at - now > 86_400 else clock_time(at)})")
        return out

    def _tokens(self, s: Session, now: float) -> RenderableType:
        """The claims of the live pair; each heading names the kid of the key that signed it."""
        access = _grid(7)
        access.add_row("sub", s.user_id or "-")
        access.add_row("jti", s.access_jti or "-")
        access.add_row("exp", f"{date_time(s.access_exp)}")
        _expiry_row(self._style, access, s.access_exp, now, self.access_life)
        refresh = _grid(7)
        refresh.add_row("jti", s.refresh_jti or "-")
        refresh.add_row("exp", date_time(s.refresh_exp))
        life = (s.refresh_exp or now) - s.created_at
        _expiry_row(self._style, refresh, s.refresh_exp, now, life)
        return Group(
            _heading("access", s.access_kid),
            access,
            _heading("refresh", s.refresh_kid),
            refresh,
        )

    def _history(self, d: SessionDetail, now: float) -> RenderableType:
        parts: list[RenderableType] = [Text("blacklist keys", style="bold")]
        if d.keys is None:
            parts.append(Text(d.key_error or "unknown (Redis unreachable)", style="yellow"))
        elif not d.keys:
            parts.append(_line("none: the session's tokens are not revoked", "dim"))
        else:
            keys = Table.grid(padding=(0, 1), expand=True)
            keys.add_column(no_wrap=True)
            keys.add_column(no_wrap=True)
            keys.add_column(overflow="ellipsis", no_wrap=True, ratio=1)
            for e in d.keys:
                life = e.expires_at - e.revoked_at if e.revoked_at else None
                keys.add_row(
                    e.kind, _countdown(self._style, e.expires_at, now, life), e.reason or ""
                )
            parts.append(keys)
        used = 1 + (len(d.keys) if d.keys else 1)  # the heading and the keys (or one line)
        rotations = d.session.rotation_history()
        # The audit gets what the rotations leave it (at least two rows), then the rotations.
        audit_rows = max(2, LINES - used - 2 - min(len(rotations), 3))
        parts.append(Text("audit", style="bold"))
        if not d.audit:
            parts.append(_line("no operator actions on this session", "dim"))
        else:
            audit = Table.grid(padding=(0, 1), expand=True)
            audit.add_column(no_wrap=True)
            audit.add_column(overflow="ellipsis", no_wrap=True, ratio=2)
            audit.add_column(overflow="ellipsis", no_wrap=True, ratio=1)
            for a in d.audit[: min(4, audit_rows)]:
                # A reuse detection (theft of a refresh token) stands out.
                style = self._style("countdown--expired") if a.action == REUSE_DETECTED else ""
                audit.add_row(
                    Text(clock_time(a.at), style=style),
                    Text(f"{a.action} by {a.actor}: {a.outcome}", style=style),
                    Text(a.reason or "", style=style),
                )
            parts.append(audit)
        used += 1 + (min(len(d.audit), 4, audit_rows) if d.audit else 1)
        parts.append(self._rotations(rotations, max(1, LINES - used - 1)))
        return Group(*parts)

    def _rotations(self, rotations: list[RotationRecord], room: int) -> RenderableType:
        """The newest rotations that fit in ``room`` lines: generation, time, IP, user agent."""
        title = Text("rotations", style="bold", no_wrap=True, overflow="ellipsis")
        if not rotations:
            return Group(title, _line("none yet (the refresh token is the login's)", "dim"))
        shown = rotations[::-1][:room]
        if len(shown) < len(rotations):
            title.append(f" ({len(shown)} newest of {len(rotations)})", style="dim")
        lines = [
            _line(
                f"gen {r.generation}  {clock_time(r.at)}  {r.ip or '-'}  "
                + short_agent(r.user_agent),
                "",
            )
            for r in shown
        ]  # one line each, cut at the end: the generation and the time always show
        return Group(title, *lines)


def _line(text: str, style: str) -> Text:
    """One line that never wraps (the panel's lines are counted)."""
    return Text(text, style=style, no_wrap=True, overflow="ellipsis")


def _heading(name: str, kid: str | None) -> Text:
    """``access · kid 3a4a899953ea726f`` (``kid unknown`` for a session older than kids)."""
    out = Text(name, style="bold")
    out.append(f" · kid {kid or 'unknown'}", style="dim" if kid is None else "")
    return out
