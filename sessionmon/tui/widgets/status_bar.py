"""The status bar: database, Redis state and latency, counts, the activity feed's event rates,
paused / read-only, the clock."""

from __future__ import annotations

from dataclasses import dataclass, field

from rich.style import Style
from rich.text import Text
from textual.widget import Widget

from sessionmon.core.event_rates import FeedRates, FeedState, Rates
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
    # Logins, refreshes, revocations and rejections per second over the last minute (the feed).
    rates: FeedRates = field(default_factory=lambda: FeedRates(FeedState.OFF))


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
        if form.rates < RATES_NONE:
            text.append_text(sep)
            text.append_text(self._rates(form.rates))
        return text

    def _rates(self, level: int) -> Text:
        """The feed's rates: words, then short names (``in 1.2 rf 3.4 rv 0 rj 0.1 /s``), then
        the rejections only; or why they are unknown (never zeros that are not known)."""
        feed = self.info.rates
        label = self._style("status--label")
        wait = self._style("status--wait")
        if feed.state is FeedState.OFF:
            return Text("events off" if level == RATES_FULL else "ev off", style=label)
        if feed.state is FeedState.DOWN:
            return Text("events: Redis down" if level == RATES_FULL else "ev ?", style=wait)
        if feed.state is FeedState.STARTING or feed.rates is None:
            return Text("events …" if level == RATES_FULL else "ev …", style=wait)
        r = feed.rates
        value = self._style("status--clock")
        bad = self._style("status--bad") if r.alarming else value
        parts = _rate_parts(r, level)
        text = Text()
        for i, (name, rate, is_rejections) in enumerate(parts):
            if i:
                text.append(" ")
            if level == RATES_FULL:
                text.append(rate_text(rate), bad if is_rejections else value)
                text.append(f" {name}/s", label)
            else:
                text.append(f"{name} ", label)
                text.append(rate_text(rate), bad if is_rejections else value)
        if level != RATES_FULL:
            text.append("/s", label)
        return text


# How the event rates are said: "1.2 logins/s 3.4 refreshes/s ...", "in 1.2 rf 3.4 rv 0 rj 2/s",
# only the rejections ("rj 2/s"), or not at all.
RATES_FULL, RATES_SHORT, RATES_REJECTIONS, RATES_NONE = range(4)


def rate_text(rate: float) -> str:
    """``0``, ``<0.1``, ``0.2``, ``12``, ``1.2k`` (events per second)."""
    if rate == 0:
        return "0"
    if rate < 0.05:
        return "<0.1"
    if rate < 9.95:
        return f"{rate:.1f}"
    if rate < 999.5:
        return f"{rate:.0f}"
    return f"{rate / 1000:.1f}k"


def _rate_parts(r: Rates, level: int) -> list[tuple[str, float, bool]]:
    """(name, rate, is the rejections) of each rate said at ``level``."""
    if level == RATES_FULL:
        names = ("logins", "refreshes", "revoked", "rejected")
    else:
        names = ("in", "rf", "rv", "rj")
    rates = (r.logins, r.refreshes, r.revocations, r.rejections)
    parts = [(n, v, i == 3) for i, (n, v) in enumerate(zip(names, rates, strict=True))]
    return parts[3:] if level == RATES_REJECTIONS else parts


@dataclass(frozen=True)
class Form:
    """How much the status bar says: the longest path shown (None: whole; 0: none), Redis as
    "● 0.4ms", the counts as "12 sess │ 3 bl", the app's name, short badges and clock, and how
    the event rates are said (``RATES_*``)."""

    path: int | None = None
    short_redis: bool = False
    short_counts: bool = False
    name: bool = True
    short_badges: bool = False
    short_clock: bool = False
    rates: int = RATES_FULL


_SHORT = {"short_redis": True, "short_counts": True, "name": False}
# From the fullest to the shortest: the first that fits is drawn. The rates are shortened first
# (the names become two letters), and at 80 columns they stay whole at the cost of the paths.
FORMS = (
    Form(),
    Form(rates=RATES_SHORT),
    Form(path=24, rates=RATES_SHORT),
    Form(path=16, rates=RATES_SHORT),
    Form(path=16, short_redis=True, rates=RATES_SHORT),
    Form(path=16, short_redis=True, short_counts=True, rates=RATES_SHORT),
    Form(path=16, **_SHORT, rates=RATES_SHORT),
    Form(path=10, **_SHORT, rates=RATES_SHORT),
    Form(path=0, **_SHORT, rates=RATES_SHORT),
    Form(path=0, **_SHORT, short_badges=True, rates=RATES_SHORT),
    Form(path=0, **_SHORT, short_badges=True, rates=RATES_REJECTIONS),
    Form(path=0, **_SHORT, short_badges=True, short_clock=True, rates=RATES_REJECTIONS),
    Form(path=0, **_SHORT, short_badges=True, short_clock=True, rates=RATES_NONE),
)


def shorten(text: str, longest: int | None) -> str:
    """``text`` at most ``longest`` cells, keeping its end (the file name); "" for 0."""
    if longest is None or len(text) <= longest:
        return text
    if longest <= 0:
        return ""
    return "…" + text[-(longest - 1) :]
