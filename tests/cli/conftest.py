"""Run the real console script in a subprocess."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

SCRIPT = Path(sys.executable).parent / "sessionmon"


@pytest.fixture
def run_cli(cli_env: dict[str, str]) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``run_cli("ls", "--json", input=..., env_extra={...})`` -> CompletedProcess (text)."""

    def run(
        *args: str,
        input: str | None = None,
        env_extra: dict[str, str] | None = None,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        env = dict(cli_env)
        if env_extra:
            env.update(env_extra)
        return subprocess.run(
            [str(SCRIPT), *args],
            input=input,
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
        )

    return run
