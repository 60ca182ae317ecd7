"""Text for cells: countdowns with an urgency level, "ago" times, short ids and user agents.

Pure functions of values and ``now``: the views call them at render time, so countdowns move with
the clock without any query.
"""

from __future__ import annotations

import math
import re
import time

from sessionmon.core.durations import format_duration
from sessionmon.core.store import AuditEntry

# Urgency of a countdown, by the fraction of the token's life that is left.
PLENTY = "plenty"
LOW = "low"
CRITICAL = "critical"
EXPIRED = "expired"

LOW_FRACTION = 0.5
CRITICAL_FRACTION = 0.2


def countdown(expires_at: float | None, now: float, life: float | None) -> tuple[str, str]:
    """``("14:32", level)`` for a token expiring at ``expires_at`` whose full life is ``life``."""
    if expires_at is None:
        return "-", EXPIRED
    remaining = expires_at - now
    if remaining <= 0:
        return "expired", EXPIRED
    text = format_duration(math.ceil(remaining))  # 0.4s left still shows "1s", never "0s"
    if life is None or life <= 0:
        return text, PLENTY
    fraction = remaining / life
    if fraction <= CRITICAL_FRACTION:
        return text, CRITICAL
    if fraction <= LOW_FRACTION:
        return text, LOW
    return text, PLENTY


def ago(when: float | None, now: float) -> str:
    """``"12s ago"``, ``"4:05 ago"``; ``"now"`` under a second; ``"-"`` when unknown."""
    if when is None:
        return "-"
    delta = now - when
    if delta < 1:
        return "now"
    return f"{format_duration(delta)} ago"


def age(since: float | None, now: float) -> str:
    """How long ago something started, without the word "ago"."""
    if since is None:
        return "-"
    return format_duration(max(0.0, now - since))


def short_id(value: str | None, width: int = 8) -> str:
    """The first ``width`` characters of an id (enough to tell sessions apart on screen)."""
    if not value:
        return "-"
    return value[:width]


def clock_time(when: float | None) -> str:
    """``HH:MM:SS`` in local time."""
    if when is None:
        return "--:--:--"
    return time.strftime("%H:%M:%S", time.localtime(when))


def date_time(when: float | None) -> str:
    """``YYYY-MM-DD HH:MM:SS`` in local time."""
    if when is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when))


_BROWSERS = (
    ("Edg/", "Edge"),
    ("Firefox/", "Firefox"),
    ("Chrome/", "Chrome"),
    ("Safari/", "Safari"),
)
_SYSTEMS = (
    ("iPhone", "iOS"),
    ("iPad", "iPadOS"),
    ("Android", "Android"),
    ("Windows", "Windows"),
    ("Mac OS X", "macOS"),
    ("Linux", "Linux"),
)
_TOOL = re.compile(r"^([A-Za-z][\w.-]*)/(\d+(?:\.\d+)?)")


def short_agent(agent: str | None) -> str:
    """``"Firefox 131 · Linux"``, ``"curl 8.10"``; the raw text cut short when unknown."""
    if not agent:
        return "-"
    if agent.startswith("Mozilla/"):
        browser = next((name for mark, name in _BROWSERS if mark in agent), None)
        system = next((name for mark, name in _SYSTEMS if mark in agent), None)
        version = ""
        if browser:
            mark = next(m for m, n in _BROWSERS if n == browser)
            match = re.search(re.escape(mark) + r"(\d+)", agent)
            version = f" {match.group(1)}" if match and browser != "Safari" else ""
        parts = [p for p in (f"{browser}{version}" if browser else None, system) if p]
        if parts:
            return " · ".join(parts)
    match = _TOOL.match(agent)
    if match:
        return f"{match.group(1)} {match.group(2)}"
    return agent[:40]


def plural(n: int, word: str, many: str | None = None) -> str:
    """``"1 session"``, ``"3 sessions"``."""
    return f"{n:,} {word if n == 1 else (many or word + 's')}"


def alert_text(entry: AuditEntry) -> str:
    """The notification for a reuse detection: whose session, and what the core saw."""
    who = entry.email or entry.user_id or "?"
    return f"session {short_id(entry.session_id or '-')} of {who} revoked: {entry.detail_text()}"
