"""Durations as people write and read them: ``30s``, ``15m``, ``1h30m``, ``7d``; ``14:32``."""

from __future__ import annotations

import math
import re

from sessionmon.core.errors import ConfigError

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)?")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}


def parse_duration(text: str | float | int) -> float:
    """Parse ``30s``, ``15m``, ``7d``, ``1h30m`` or a plain number of seconds into seconds."""
    if isinstance(text, bool):
        raise ConfigError(f"not a duration: {text!r}")
    if isinstance(text, int | float):
        if text < 0:
            raise ConfigError(f"duration must not be negative: {text}")
        return float(text)
    s = str(text).strip().lower().replace(" ", "")
    if not s:
        raise ConfigError("empty duration")
    if s.startswith("-"):
        raise ConfigError(f"duration must not be negative: {text!r}")
    total, pos = 0.0, 0
    while pos < len(s):
        m = _DURATION_PART.match(s, pos)
        if not m:
            raise ConfigError(f"not a duration: {text!r} (use e.g. 30s, 15m, 2h, 7d)")
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if not math.isfinite(total):
        raise ConfigError(f"duration too large: {text!r}")
    return total


def format_duration(seconds: float) -> str:
    """Short human form: ``42s``, ``14:32``, ``3h05m``, ``6d23h``."""
    if seconds < 0:
        seconds = 0
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}:{s % 60:02d}"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600:02d}h"
