"""``wrk`` as the load generator: installed by the benchmark's setup when missing (Debian package),
driven with a Lua script that sends ``GET <path>`` with a different session's access token on each
request (``Authorization: Bearer``, read from a private file) and prints its summary as JSON.

Where wrk cannot be installed, ``run_async_client`` does the same with a bounded asyncio client
(a fixed number of keep-alive connections, each one request at a time, for a fixed duration). It is
Python on the same two cores, so it leaves the servers less CPU than wrk does: its figures are not
comparable with wrk's, only with each other.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

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


def ensure_wrk() -> str | None:
    """The path of ``wrk``; installs the Debian package when it is missing. ``None`` (and a line
    saying why) when it cannot be had: the caller falls back to ``run_async_client``."""
    found = shutil.which("wrk")
    if found:
        return found
    apt = shutil.which("apt-get")
    if apt is None:
        print("  [setup] wrk is not installed and there is no apt-get", flush=True)
        return None
    print("  [setup] apt-get install -y wrk", flush=True)
    try:
        proc = subprocess.run(
            [apt, "install", "-y", "wrk"], capture_output=True, text=True, check=False, timeout=600
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        print(f"  [setup] apt-get could not install wrk: {exc}", flush=True)
        return None
    found = shutil.which("wrk")
    if found is None:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        print(f"  [setup] apt-get could not install wrk: {tail[0]}", flush=True)
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


def run_async_client(
    url: str, path: str, token_file: Path, *, seconds: float, connections: int
) -> WrkResult:
    """The wrk run's figures from a bounded asyncio client (see the module docstring)."""
    return asyncio.run(_drive(url, path, token_file, seconds, connections))


async def _drive(
    url: str, path: str, token_file: Path, seconds: float, connections: int
) -> WrkResult:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    tokens = [t for t in token_file.read_text().splitlines() if t]
    requests = [
        (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {token}\r\n\r\n"
        ).encode()
        for token in tokens
    ]
    latencies: list[float] = []
    counts = {"status": 0, "socket": 0}
    deadline = time.perf_counter() + seconds

    async def connection(offset: int) -> None:
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            counts["socket"] += 1
            return
        i = offset
        try:
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                writer.write(requests[i % len(requests)])
                i += 1
                status = int((await reader.readline()).split()[1])
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                await reader.readexactly(length)
                latencies.append(time.perf_counter() - start)
                if not 200 <= status < 400:
                    counts["status"] += 1
        except (OSError, ValueError, IndexError, asyncio.IncompleteReadError):
            counts["socket"] += 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(connection(k * 7919) for k in range(connections)))
    elapsed = time.perf_counter() - started
    ordered = sorted(latencies) or [0.0]

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000

    return WrkResult(
        requests=len(latencies),
        seconds=elapsed,
        status_errors=counts["status"],
        socket_errors=counts["socket"],
        p50_ms=pct(50),
        p99_ms=pct(99),
        max_ms=ordered[-1] * 1000,
    )
