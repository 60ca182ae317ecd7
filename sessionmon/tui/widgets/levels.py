"""The colours of countdowns and session states, defined once for every widget that shows them.

A widget adds ``LEVEL_CLASSES`` to its component classes and ``level_css(<its name>)`` to its
CSS; it then draws a level with the component class ``countdown--<level>`` or
``state--<state>``. The colours follow the theme (``$success``, ``$warning``, ``$error``).
"""

from __future__ import annotations

# component class -> the CSS declarations of its style
_RULES = {
    "countdown--plenty": "color: $success;",
    "countdown--low": "color: $warning;",
    "countdown--critical": "color: $error; text-style: bold;",
    "countdown--expired": "color: $error 70%;",
    "state--active": "color: $success;",
    "state--due": "color: $warning;",
    "state--expired": "color: $error 70%;",
}
LEVEL_CLASSES = frozenset(_RULES)
# Session.state() -> its component class
STATE_CLASSES = {
    "active": "state--active",
    "refresh due": "state--due",
    "expired": "state--expired",
}


def level_css(widget: str) -> str:
    """The rules of every level's component class, for the widget type ``widget``."""
    return "\n".join(f"{widget} > .{name} {{ {rule} }}" for name, rule in _RULES.items())
