"""``wrk`` as the load generator: installed by the benchmark's setup when missing (Debian package),
driven with a Lua script that sends ``GET <path>`` with a different session's access token on each
request (``Authorization: Bearer``, read from a private file) and prints its summary as JSON.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.data import CACHE_DIR

LUA = r"""
local reqs = {}
local n = 0
local i = 0

init = function(args)
  for line in io.lines(args[1]) do
    if #line > 0 then
      n = n + 1
      reqs[n] = wrk.format("GET", args[2], {["Authorization"] = "Bearer " .. line})
    end
  end
  i = math.random(n)
end

request = function()
  i = i % n + 1
  return reqs[i]
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %d, "duration_us": %d, "status_errors": %d, "connect": %d, ' ..
    '"read": %d, "write": %d, "timeout": %d, "p50_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
"""


@dataclass
class WrkResult:
    """One wrk run."""

    requests: int
    seconds: float
    status_errors: int  # responses that were not 2xx/3xx
    socket_errors: int
    p50_ms: float
    p99_ms: float
    max_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def clean(self) -> bool:
        return self.requests > 0 and self.status_errors == 0 and self.socket_errors == 0


def ensure_wrk() -> str:
    """The path of ``wrk``; installs the Debian package when it is missing (as root)."""
    found = shutil.which("wrk")
    if found:
        return found
    apt = shutil.which("apt-get")
    if apt is None:
        raise RuntimeError("wrk is not installed and there is no apt-get to install it")
    print("  [setup] apt-get install -y wrk", flush=True)
    proc = subprocess.run(
        [apt, "install", "-y", "wrk"], capture_output=True, text=True, check=False, timeout=600
    )
    found = shutil.which("wrk")
    if found is None:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"wrk is missing and apt-get could not install it: {tail[0]}")
    return found


def script() -> Path:
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    path = CACHE_DIR / "wrk-tokens.lua"
    path.write_text(LUA)
    return path


def run_wrk(
    wrk: str,
    url: str,
    path: str,
    token_file: Path,
    *,
    seconds: float,
    connections: int,
    threads: int = 2,
) -> WrkResult:
    """One fixed-duration run; raises when wrk fails or prints no summary."""
    cmd = [
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(script()),
        url,
        "--",
        str(token_file),
        path,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=False)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("WRKJSON ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {(proc.stderr or proc.stdout)[-500:]}")
    d = json.loads(line.removeprefix("WRKJSON "))
    return WrkResult(
        requests=d["requests"],
        seconds=d["duration_us"] / 1e6,
        status_errors=d["status_errors"],
        socket_errors=d["connect"] + d["read"] + d["write"] + d["timeout"],
        p50_ms=d["p50_us"] / 1000,
        p99_ms=d["p99_us"] / 1000,
        max_ms=d["max_us"] / 1000,
    )
