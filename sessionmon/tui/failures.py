"""Where the monitor's unexpected errors go: a log file, never the screen.

A worker that fails must not show a traceback (Textual would show a crash screen, or with
``exit_on_error=False`` fail silently). ``report_failure`` logs the whole traceback to the
``sessionmon.tui`` logger and returns one line for a notification or the banner. ``run_monitor``
sends that logger to ``$XDG_STATE_HOME/sessionmon/monitor.log``; tests leave it to pytest.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
from dataclasses import dataclass
from pathlib import Path

from sessionmon.core.errors import SessionmonError

log = logging.getLogger("sessionmon.tui")
# Libraries that log warnings of their own (psycopg's pool: "discarding closed connection" after
# a server restart): to the same file, never to the terminal the app draws on.
LIBRARY_LOGGERS = ("psycopg",)

_log_file: Path | None = None


def default_log_path() -> Path:
    """``$XDG_STATE_HOME/sessionmon/monitor.log`` (``~/.local/state/...`` by default)."""
    state = os.environ.get("XDG_STATE_HOME")
    base = Path(state) if state else Path.home() / ".local" / "state"
    return base / "sessionmon" / "monitor.log"


def log_to_file(path: Path | None = None) -> Path | None:
    """Send the monitor's log to ``path`` (rotated at 1 MB); None if it cannot be written."""
    global _log_file
    path = path or default_log_path()
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).propagate = False  # not even when the file cannot be opened
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.RotatingFileHandler(
            path, maxBytes=1_000_000, backupCount=1, encoding="utf-8"
        )
    except OSError:
        for name in LIBRARY_LOGGERS:
            logging.getLogger(name).addHandler(logging.NullHandler())
        return None
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    log.addHandler(handler)
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False  # nothing reaches stderr (the terminal belongs to the app)
    _log_file = path
    return path


def stop_logging_to_file() -> None:
    """Close the handlers ``log_to_file`` added."""
    global _log_file
    libraries = [logging.getLogger(name) for name in LIBRARY_LOGGERS]
    for handler in list(log.handlers):
        if isinstance(handler, logging.FileHandler):
            log.removeHandler(handler)
            for library in libraries:
                library.removeHandler(handler)
            handler.close()
    log.propagate = True
    for library in libraries:
        library.propagate = True
    _log_file = None


def one_line(exc: BaseException, limit: int = 160) -> str:
    """The exception as one short line: its message, or its type when it has none."""
    text = (str(exc) or type(exc).__name__).splitlines()[0]
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class Failure:
    """What failed and why, each one line; ``str()`` is the two together for a notification."""

    what: str  # what was being done ("reading the blacklist")
    detail: str  # why, for a human (an internal error names its type and the log file)
    bug: bool  # not a SessionmonError: logged with its traceback

    def __str__(self) -> str:
        return f"{self.what}: {self.detail}"


def report_failure(what: str, exc: BaseException) -> Failure:
    """Log ``exc`` (with the traceback when it is a bug) and say, in one line, what failed.

    A ``SessionmonError`` is an expected condition with a human message; anything else is a bug,
    shown as "internal error" with a pointer to the log.
    """
    if isinstance(exc, SessionmonError):
        log.warning("%s: %s", what, exc)
        return Failure(what, one_line(exc), bug=False)
    log.error("%s: internal error", what, exc_info=exc)
    where = f" (details in {_shorten(_log_file)})" if _log_file else ""
    return Failure(what, f"internal error: {type(exc).__name__}: {one_line(exc)}{where}", True)


def _shorten(path: Path | None) -> str:
    text = str(path)
    home = os.path.expanduser("~")
    if home not in ("", "/") and text.startswith(home + os.sep):
        return "~" + text[len(home) :]
    return text
