"""``make screenshots`` draws its PNGs with CairoSVG in a monospace font (real files, no fakes)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image
from rich.console import Console

from sessionmon.tui.screenshots import to_png

CYAN = "#00ffff"  # a colour the SVG's window frame does not use


def ink_rows(png: Path) -> list[tuple[int, int]]:
    """(leftmost, rightmost) x of the cyan text, one pair per line of text drawn."""
    image = Image.open(png).convert("RGB")
    width, height = image.size
    pixels = image.load()
    lines: list[tuple[int, int]] = []
    inside = False
    for y in range(height):
        xs = [x for x in range(width) if (p := pixels[x, y])[0] < 90 and min(p[1], p[2]) > 180]
        if xs and not inside:
            lines.append((min(xs), max(xs)))
        elif xs:
            left, right = lines[-1]
            lines[-1] = (min(left, *xs), max(right, *xs))
        inside = bool(xs)
    return lines


def test_pngs_are_drawn_in_a_monospace_font(tmp_path: Path):
    console = Console(record=True, width=30, file=(tmp_path / "out.txt").open("w"))
    console.print(f"[{CYAN}]llllllllll[/]")
    console.print(f"[{CYAN}]WWWWWWWWWW[/]")
    console.file.close()
    svg = tmp_path / "text.svg"
    svg.write_text(console.export_svg(title="fonts"), encoding="utf-8")

    (png,) = to_png([svg])

    assert png == tmp_path / "text.png"
    with Image.open(png) as image:
        assert image.format == "PNG"
        assert image.size[0] > 300  # the SVG's own size (30 columns), not a thumbnail
    narrow, wide = ink_rows(png)
    # Ten l and ten W take the same width in a monospace font; about a third in DejaVu Sans.
    assert narrow[1] - narrow[0] > 0.8 * (wide[1] - wide[0]), (narrow, wide)
