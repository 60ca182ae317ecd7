"""A banner under the status bar that says plainly what is wrong (Redis down, database trouble)."""

from __future__ import annotations

from textual.widgets import Static


class Banner(Static):
    """Hidden while everything is fine; one line per problem otherwise."""

    DEFAULT_CSS = """
    Banner {
        display: none;
        height: auto;
        padding: 0 1;
        background: $error;
        color: $text;
        text-style: bold;
    }
    Banner.-shown { display: block; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("", id=id, markup=False)
        self.problems: list[str] = []

    def show_problems(self, problems: list[str]) -> None:
        """Show these lines, or hide the banner when there are none."""
        if problems == self.problems:
            return
        self.problems = list(problems)
        self.update("\n".join(problems))
        self.set_class(bool(problems), "-shown")
