"""The status bar: database, Redis state and latency, counts, paused / read-only, the clock."""

from __future__ import annotations

from dataclasses import dataclass

from rich.style import Style
from rich.text import Text
from textual.widget import Widget

from sessionmon.tui.format import clock_time
from sessionmon.tui.poller import RedisStatus


@dataclass
class StatusInfo:
    """What the status bar shows; the app updates it after each poll and every second."""

    db: str
    redis: str
    now: float
    redis_status: RedisStatus
    live: int | None = None
    blacklisted: int | None = None
    db_ok: bool = True
    paused: bool = False
    read_only: bool = False


class StatusBar(Widget):
    """One line at the top of the screen."""

    COMPONENT_CLASSES = {
        "status--name",
        "status--label",
        "status--ok",
        "status--bad",
        "status--wait",
        "status--badge",
        "status--clock",
    }

    DEFAULT_CSS = """
    StatusBar { height: 1; background: $panel; color: $text; }
    StatusBar > .status--name { color: $accent; text-style: bold; }
    StatusBar > .status--label { color: $text-muted; }
    StatusBar > .status--ok { color: $success; }
    StatusBar > .status--bad { color: $error; text-style: bold; }
    StatusBar > .status--wait { color: $warning; }
    StatusBar > .status--badge { background: $warning; color: $background; text-style: bold; }
    StatusBar > .status--clock { color: $text; text-style: bold; }
    """

    def __init__(self, info: StatusInfo, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.info = info

    def show(self, info: StatusInfo) -> None:
        self.info = info
        self.refresh()

    def _style(self, name: str) -> Style:
        return self.get_component_rich_style(name, partial=True)

    def render(self) -> Text:
        info = self.info
        badges = Text()
        if info.paused:
            badges.append(" PAUSED ", self._style("status--badge"))
            badges.append(" ")
        if info.read_only:
            badges.append(" READ-ONLY ", self._style("status--badge"))
            badges.append(" ")
        clock = Text(clock_time(info.now) + " ", style=self._style("status--clock"))
        room = self.size.width - badges.cell_len - clock.cell_len - 1
        db, redis = info.db, info.redis
        left = self._left(db, redis)
        # Too wide: shorten the paths (keeping their ends), never the badges or the clock.
        for _ in range(2):
            over = left.cell_len - room
            if over <= 0:
                break
            if len(db) > 16:
                db = "…" + db[-max(15, len(db) - over - 1) :]
            elif len(redis) > 16:
                redis = "…" + redis[-max(15, len(redis) - over - 1) :]
            left = self._left(db, redis)
        left.truncate(max(0, room))
        gap = self.size.width - left.cell_len - badges.cell_len - clock.cell_len
        left.append(" " * max(0, gap))
        left.append_text(badges)
        left.append_text(clock)
        return left

    def _left(self, db: str, redis: str) -> Text:
        info = self.info
        label = self._style("status--label")
        sep = Text(" │ ", style=label)
        text = Text(" ")
        text.append("sessionmon", self._style("status--name"))
        text.append_text(sep)
        text.append("db ", label)
        text.append(db, self._style("status--ok" if info.db_ok else "status--bad"))
        text.append_text(sep)
        text.append("redis ", label)
        text.append(redis + " ")
        status = info.redis_status
        if status.ok is None:
            text.append("● connecting…", self._style("status--wait"))
        elif status.ok:
            latency = (status.latency or 0) * 1000
            text.append("● connected ", self._style("status--ok"))
            text.append(f"{latency:.1f} ms", label)
        else:
            text.append("● reconnecting", self._style("status--bad"))
            if status.last_ok is not None:
                text.append(f" · last ok {clock_time(status.last_ok)}", label)
        text.append_text(sep)
        text.append("- " if info.live is None else f"{info.live:,} ", self._style("status--clock"))
        text.append("session" if info.live == 1 else "sessions", label)
        text.append_text(sep)
        if info.blacklisted is None or not status.ok:
            text.append("? ", self._style("status--wait"))
        else:
            text.append(f"{info.blacklisted:,} ", self._style("status--clock"))
        text.append("blacklisted", label)
        return text
