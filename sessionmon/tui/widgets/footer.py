"""The footer: Textual's, condensed instead of cut when the screen is narrow.

At 80 columns the full labels do not fit. Rather than cutting the line (which hid ``?`` and
``q``), the footer tries, in order: the full labels; the compact style; the short labels of the
``ActionSpec`` table; without the command palette hint; then keys without labels from the right
end; at last fewer keys. ``?`` Help and ``q`` Quit (the ``pinned`` actions) are docked at the
right end and always shown.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.cells import cell_len
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import HorizontalGroup
from textual.widgets import Footer
from textual.widgets._footer import FooterKey

from sessionmon.tui.actions import SPECS


@dataclass(frozen=True)
class Key:
    """One key the footer can show."""

    binding: Binding
    display: str
    enabled: bool
    tooltip: str
    label: str
    short: str
    pinned: bool


@dataclass(frozen=True)
class Variant:
    """How the footer is drawn: style, the label of each key ("" for none), which keys."""

    compact: bool
    labels: tuple[str, ...]
    shown: tuple[bool, ...]
    palette: bool


def key_width(display: str, label: str, compact: bool) -> int:
    """Cells a ``FooterKey`` takes (with its margin), as Textual's footer CSS draws it."""
    if not label:
        return cell_len(display) + (1 if compact else 0)
    if compact:
        return cell_len(display) + 1 + cell_len(label) + 1
    return cell_len(display) + 2 + cell_len(label) + 1


def variants(keys: list[Key]) -> list[Variant]:
    """From the fullest to the most condensed."""
    full = tuple(k.label for k in keys)
    short = tuple(k.short for k in keys)
    every = tuple(True for _ in keys)
    out = [
        Variant(False, full, every, True),
        Variant(True, full, every, True),
        Variant(True, short, every, True),
        Variant(True, short, every, False),
    ]
    unpinned = [i for i, k in enumerate(keys) if not k.pinned]
    labels = list(short)
    for i in reversed(unpinned):  # labels go from the right end first
        labels[i] = ""
        out.append(Variant(True, tuple(labels), every, False))
    shown = list(every)
    for i in reversed(unpinned):  # then keys
        shown[i] = False
        out.append(Variant(True, tuple(labels), tuple(shown), False))
    return out


def width_of(keys: list[Key], variant: Variant, palette_display: str) -> int:
    """Cells the footer needs for ``variant`` (1 spare between the two groups)."""
    total = 1
    for key, label, shown in zip(keys, variant.labels, variant.shown, strict=True):
        if shown:
            total += key_width(key.display, label, variant.compact)
    if variant.palette:
        # Its own border cell and padding.
        total += 2 + key_width(palette_display, "palette", variant.compact)
    return total


class KeysFooter(Footer):
    """Keys that work in the current view, condensed to fit; ``?`` and ``q`` always shown."""

    DEFAULT_CSS = """
    KeysFooter #pinned-keys { dock: right; width: auto; height: 1; }
    KeysFooter #pinned-keys FooterKey.-command-palette {
        dock: none; border-left: vkey $foreground 20%; padding-right: 1;
    }
    KeysFooter.-compact #pinned-keys FooterKey.-command-palette { padding-right: 0; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, show_command_palette=False)
        self.variant: Variant | None = None
        self._drawn_for: tuple[int, tuple[Key, ...]] | None = None

    def keys(self) -> list[Key]:
        """The keys of the current screen's shown bindings, one per action."""
        seen: set[str] = set()
        out = []
        for _node, binding, enabled, tooltip in self.screen.active_bindings.values():
            if not binding.show or binding.action in seen:
                continue
            seen.add(binding.action)
            spec = SPECS.get(binding.action)
            label = spec.label if spec else binding.description
            out.append(
                Key(
                    binding,
                    self.app.get_key_display(binding),
                    enabled,
                    tooltip,
                    label,
                    spec.short_label if spec else label,
                    bool(spec and spec.pinned),
                )
            )
        return out

    def _palette(self) -> tuple[Binding, bool, str] | None:
        if not self.app.ENABLE_COMMAND_PALETTE:
            return None
        try:
            _node, binding, enabled, tooltip = self.screen.active_bindings[
                self.app.COMMAND_PALETTE_BINDING
            ]
        except KeyError:
            return None
        return binding, enabled, tooltip

    def choose(self, keys: list[Key], width: int) -> Variant:
        """The fullest variant that fits ``width`` (the most condensed if none does)."""
        palette = self._palette()
        display = self.app.get_key_display(palette[0]) if palette else ""
        options = variants(keys)
        for variant in options:
            if variant.palette and palette is None:
                continue
            if width_of(keys, variant, display) <= width:
                return variant
        return options[-1]

    def compose(self) -> ComposeResult:
        if not self._bindings_ready:
            return
        keys = self.keys()
        width = self.size.width
        variant = self.choose(keys, width)
        self.variant = variant
        self._drawn_for = (width, tuple(keys))
        self.compact = variant.compact
        pinned = []
        for key, label, shown in zip(keys, variant.labels, variant.shown, strict=True):
            if not shown:
                continue
            widget = FooterKey(
                key.binding.key,
                key.display,
                label,
                key.binding.action,
                disabled=not key.enabled,
                tooltip=key.tooltip or (key.label if not label else ""),
            ).data_bind(compact=Footer.compact)
            if key.pinned:
                pinned.append(widget)
            else:
                yield widget
        palette = self._palette() if variant.palette else None
        with HorizontalGroup(id="pinned-keys"):
            yield from pinned
            if palette is not None:
                binding, enabled, _tooltip = palette
                yield FooterKey(
                    binding.key,
                    self.app.get_key_display(binding),
                    binding.description,
                    binding.action,
                    classes="-command-palette",
                    disabled=not enabled,
                    tooltip=binding.tooltip or binding.description,
                ).data_bind(compact=Footer.compact)

    def on_resize(self) -> None:
        if not self._bindings_ready or self._drawn_for is None:
            return
        if self.choose(self.keys(), self.size.width) != self.variant:
            self.call_after_refresh(self.recompose)
