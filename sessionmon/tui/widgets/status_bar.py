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
    live_exact: bool = True  # False: ``live`` is an estimate, shown as ``~1,234``
    blacklisted: int | None = None
    db_ok: bool = True
    paused: bool = False
    read_only: bool = False
    # Badges for what is wrong with the Redis server: (long, short) words, e.g. NO PERSISTENCE.
    redis_warnings: tuple[tuple[str, str], ...] = ()


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
        """The fullest form that fits; on a narrow screen it condenses (shorter paths, short
        labels, no app name) rather than cut: the counts, the badges and the clock stay."""
        width = self.size.width
        for form in FORMS:
            text = self._line(form, width)
            if text.cell_len <= width:
                return text
        text = self._line(FORMS[-1], width)
        text.truncate(width)
        return text

    def _line(self, form: Form, width: int) -> Text:
        info = self.info
        badges = Text()
        flags = [(info.paused, "PAUSED", "P"), (info.read_only, "READ-ONLY", "RO")]
        flags += [(True, long, short) for long, short in info.redis_warnings]
        for on, long, short in flags:
            if on:
                word = short if form.short_badges else long
                badges.append(f" {word} ", self._style("status--badge"))
                badges.append(" ")
        now = clock_time(info.now)
        clock = Text((now[:5] if form.short_clock else now) + " ", self._style("status--clock"))
        left = self._left(form, shorten(info.db, form.path), shorten(info.redis, form.path))
        gap = width - left.cell_len - badges.cell_len - clock.cell_len
        left.append(" " * max(0, gap))
        left.append_text(badges)
        left.append_text(clock)
        return left

    def _left(self, form: Form, db: str, redis: str) -> Text:
        info = self.info
        label = self._style("status--label")
        sep = Text(" │ ", style=label)
        text = Text(" ")
        if form.name:
            text.append("sessionmon", self._style("status--name"))
            text.append_text(sep)
        text.append("db" + (" " if db else ""), label)
        text.append(db or "●", self._style("status--ok" if info.db_ok else "status--bad"))
        text.append_text(sep)
        text.append("redis ", label)
        if redis:
            text.append(redis + " ")
        status = info.redis_status
        if status.ok is None:
            text.append("● …" if form.short_redis else "● connecting…", self._style("status--wait"))
        elif status.ok:
            latency = (status.latency or 0) * 1000
            if not form.short_redis:
                text.append("● connected ", self._style("status--ok"))
                text.append(f"{latency:.1f} ms", label)
            else:
                text.append("● ", self._style("status--ok"))
                text.append(f"{latency:.1f}ms", label)
        else:
            text.append(
                "● down" if form.short_redis else "● reconnecting", self._style("status--bad")
            )
            if status.last_ok is not None and not form.short_redis:
                text.append(f" · last ok {clock_time(status.last_ok)}", label)
        text.append_text(sep)
        live = "- " if info.live is None else f"{'' if info.live_exact else '~'}{info.live:,} "
        text.append(live, self._style("status--clock"))
        if form.short_counts:
            text.append("sess", label)
        else:
            text.append("session" if info.live == 1 else "sessions", label)
        text.append_text(sep)
        if info.blacklisted is None or not status.ok:
            text.append("? ", self._style("status--wait"))
        else:
            text.append(f"{info.blacklisted:,} ", self._style("status--clock"))
        text.append("bl" if form.short_counts else "blacklisted", label)
        return text


@dataclass(frozen=True)
class Form:
    """How much the status bar says: the longest path shown (None: whole; 0: none), Redis as
    "● 0.4ms", the counts as "12 sess │ 3 bl", the app's name, short badges and clock."""

    path: int | None = None
    short_redis: bool = False
    short_counts: bool = False
    name: bool = True
    short_badges: bool = False
    short_clock: bool = False


# From the fullest to the shortest: the first that fits is drawn.
FORMS = (
    Form(),
    Form(path=24),
    Form(path=16),
    Form(path=16, short_redis=True),
    Form(path=16, short_redis=True, short_counts=True),
    Form(path=16, short_redis=True, short_counts=True, name=False),
    Form(path=10, short_redis=True, short_counts=True, name=False),
    Form(path=10, short_redis=True, short_counts=True, name=False, short_badges=True),
    Form(path=0, short_redis=True, short_counts=True, name=False, short_badges=True),
    Form(
        path=0, short_redis=True, short_counts=True, name=False, short_badges=True, short_clock=True
    ),
)


def shorten(text: str, longest: int | None) -> str:
    """``text`` at most ``longest`` cells, keeping its end (the file name); "" for 0."""
    if longest is None or len(text) <= longest:
        return text
    if longest <= 0:
        return ""
    return "…" + text[-(longest - 1) :]
