"""The terminal the monitor draws on, and its real size.

Textual draws on stderr but asks ``shutil.get_terminal_size()`` for the size, which looks at
stdout: with the output piped (``sessionmon --demo | tee log``) that says 80x24, and the monitor
drew an 80x24 frame inside a larger terminal, with stale pieces around it. The driver here asks
the terminal it draws on (stderr), then stdin, stdout and the controlling tty. When stderr is
not a terminal there is nothing to draw on: ``run_monitor`` refuses with one line instead.
"""

from __future__ import annotations

import contextlib
import os
import sys

NOT_A_TERMINAL = (
    "the monitor draws on stderr, which is not a terminal here (redirected?); run it with stderr "
    "on a terminal, or use `sessionmon ls` for a listing"
)


def terminal_size(fds: tuple[int, ...] = (2, 0, 1)) -> tuple[int, int] | None:
    """(columns, lines) of the first of ``fds`` that is a terminal, else of ``/dev/tty``; None
    when there is no terminal at all."""
    for fd in fds:
        with contextlib.suppress(OSError, ValueError):
            size = os.get_terminal_size(fd)
            if size.columns > 0 and size.lines > 0:
                return size.columns, size.lines
    with contextlib.suppress(OSError):
        fd = os.open("/dev/tty", os.O_RDONLY | os.O_NOCTTY)
        try:
            size = os.get_terminal_size(fd)
            if size.columns > 0 and size.lines > 0:
                return size.columns, size.lines
        finally:
            os.close(fd)
    return None


def draws_on_a_terminal() -> bool:
    """Whether stderr, where the monitor is drawn, is a terminal."""
    try:
        return os.isatty(sys.__stderr__.fileno()) if sys.__stderr__ else False
    except (OSError, ValueError):
        return False


def driver_class() -> type | None:
    """Textual's driver for this platform, sized from the real terminal (None: Textual's own,
    e.g. on Windows or when ``TEXTUAL_DRIVER`` names one)."""
    if sys.platform == "win32" or os.environ.get("TEXTUAL_DRIVER"):
        return None
    from textual.drivers.linux_driver import LinuxDriver

    class TerminalDriver(LinuxDriver):
        """``LinuxDriver`` that asks the terminal it draws on for its size."""

        def _get_terminal_size(self) -> tuple[int, int]:
            return terminal_size() or super()._get_terminal_size()

    return TerminalDriver
