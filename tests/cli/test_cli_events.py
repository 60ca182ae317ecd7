"""``sessionmon events`` over the real console script: the last events, --since, --kind, --user,
--json, exit codes, and --follow across a Redis restart (nothing lost, nothing repeated)."""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import pytest
import redis

from sessionmon.core.auth import Auth
from sessionmon.core.blacklist import connect
from sessionmon.core.event_stream import StreamWriter, stream_key
from sessionmon.core.events import Event, EventKind
from tests.cli.conftest import SCRIPT
from tests.cli.test_cli_keys import managed
from tests.redis_server import StartRedis, free_port

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def feed(auth: Auth, redis_client: redis.Redis, prefix: str) -> Iterator[StreamWriter]:
    """The core's events go to the test's Redis, where the console script reads them."""
    writer = StreamWriter(redis_client, prefix, linger=0)
    auth.events = writer
    yield writer
    writer.close()


def activity(auth: Auth, feed: StreamWriter) -> None:
    """Two logins, a rejection, a logout."""
    auth.login("u1", "ann@example.com", "Ann", ip="10.0.0.1")
    bob, _, _ = auth.login("u2", "bob@example.com", "Bob")
    auth.authenticate("not a token", ip="203.0.113.9")
    auth.logout(bob.id)
    assert feed.flush()


def test_the_last_events_as_lines_and_json(run_cli: Run, auth: Auth, feed: StreamWriter) -> None:
    activity(auth, feed)
    out = run_cli("events")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 4
    assert "login" in lines[0] and "ann@example.com" in lines[0] and "ip 10.0.0.1" in lines[0]
    assert "rejection" in lines[2] and "reason malformed" in lines[2]
    assert "logout" in lines[3] and "bob@example.com" in lines[3]
    out = run_cli("events", "--json", "--limit", "2")
    assert out.returncode == 0
    docs = [json.loads(line) for line in out.stdout.splitlines()]
    assert [d["kind"] for d in docs] == ["rejection", "logout"]
    assert docs[0]["reason"] == "malformed" and docs[0]["ip"] == "203.0.113.9"
    assert set(docs[1]) == {
        "id",
        "kind",
        "at",
        "session_id",
        "user_id",
        "email",
        "reason",
        "actor",
        "count",
    }
    assert docs[1]["actor"] == "user" and docs[1]["count"] == 1

    def stream_order(entry_id: str) -> tuple[int, ...]:
        return tuple(int(part) for part in entry_id.split("-"))

    assert stream_order(docs[0]["id"]) < stream_order(docs[1]["id"])


def test_kind_and_user_filters(run_cli: Run, auth: Auth, feed: StreamWriter) -> None:
    activity(auth, feed)
    out = run_cli("events", "--kind", "login", "--json")
    assert [json.loads(x)["email"] for x in out.stdout.splitlines()] == [
        "ann@example.com",
        "bob@example.com",
    ]
    out = run_cli("events", "--kind", "login,logout", "--user", "BOB@example.com", "--json")
    assert [json.loads(x)["kind"] for x in out.stdout.splitlines()] == ["login", "logout"]
    out = run_cli("events", "--user", "u1", "--json")
    assert [json.loads(x)["kind"] for x in out.stdout.splitlines()] == ["login"]
    out = run_cli("events", "--kind", "key_rotation")
    assert (out.returncode, out.stdout, out.stderr) == (1, "", "no events match\n")
    out = run_cli("events", "--kind", "logins")
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and "no such kind 'logins'" in out.stderr


def test_since(run_cli: Run, redis_client: redis.Redis, prefix: str) -> None:
    key = stream_key(prefix)
    now_ms = int(time.time() * 1000)
    for i, minutes_ago in enumerate((60, 30, 5, 1)):
        at = (now_ms - minutes_ago * 60_000) / 1000
        redis_client.xadd(
            key, Event(EventKind.LOGIN, at, user_id=f"u{i}").fields(), id=f"{int(at * 1000)}-0"
        )
    out = run_cli("events", "--since", "10m", "--json")
    assert out.returncode == 0, out.stderr
    assert [json.loads(x)["user_id"] for x in out.stdout.splitlines()] == ["u2", "u3"]
    out = run_cli("events", "--since", "2h", "--json")
    assert len(out.stdout.splitlines()) == 4
    out = run_cli("events", "--since", "30s")
    assert (out.returncode, out.stderr) == (1, "no events\n")
    out = run_cli("events", "--since", "yesterday-ish")
    assert out.returncode == 2 and out.stderr.startswith("sessionmon: --since:")
    assert out.stderr.count("\n") == 1


def test_usage_errors_and_an_unreachable_redis(run_cli: Run) -> None:
    out = run_cli("events")
    assert (out.returncode, out.stderr) == (1, "no events\n")
    out = run_cli("events", "--limit", "0")
    assert out.returncode == 2 and "--limit must be at least 1" in out.stderr
    dead = f"redis://127.0.0.1:{free_port()}/0"
    out = run_cli("events", env_extra={"SESSIONMON_REDIS_URL": dead})
    assert out.returncode == 3 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr


class Lines:
    """A stream read line by line in a thread, so the test can wait with a deadline."""

    def __init__(self, stream: IO[str]) -> None:
        self.queue: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self.queue.put(line.rstrip("\n"))

    def next(self, timeout: float = 20.0) -> str:
        try:
            return self.queue.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no line within {timeout}s") from None

    def until(self, text: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            line = self.next(max(0.1, deadline - time.monotonic()))
            if text in line:
                return line


def test_follow_resumes_after_a_redis_restart_without_loss_or_repeats(
    cli_env: dict[str, str], start_redis: StartRedis, prefix: str
) -> None:
    server = start_redis()  # AOF, fsync always: the stream survives a crash
    client = connect(server.url, timeout=1)
    writer = StreamWriter(client, prefix, linger=0)

    def emit(user: str) -> None:
        writer.emit(Event(EventKind.LOGIN, time.time(), user_id=user))
        assert writer.flush(10)

    emit("before-1")
    emit("before-2")
    env = {**cli_env, "SESSIONMON_REDIS_URL": server.url}
    proc = subprocess.Popen(
        [str(SCRIPT), "events", "--follow", "--json", "--limit", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        out, err = Lines(proc.stdout), Lines(proc.stderr)
        users = [json.loads(out.next())["user_id"]]  # the last one: --limit 1
        emit("live-1")
        users.append(json.loads(out.next())["user_id"])
        server.stop()
        assert "retrying" in err.next()
        server.start()
        emit("after-1")
        emit("after-2")
        users += [json.loads(out.next())["user_id"] for _ in range(2)]
        assert "Redis is back" in err.until("back")
        emit("marker")
        users.append(json.loads(out.next())["user_id"])
        assert users == ["before-2", "live-1", "after-1", "after-2", "marker"]
        assert out.queue.empty()  # nothing repeated after the marker either
        assert proc.poll() is None  # still following
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        writer.close()
        client.close()


def test_operator_commands_append_to_the_feed_unless_no_events(
    run_cli: Run, auth: Auth, tmp_path: Path
) -> None:
    env = managed(tmp_path)
    assert run_cli("keys", "rotate", "--reason", "quarterly", env_extra=env).returncode == 0
    session, _, _ = auth.login("u1", "ann@example.com", "Ann")
    assert run_cli("logout", session.id, "--reason", "stolen").returncode == 0
    out = run_cli("events", "--json")
    docs = [json.loads(x) for x in out.stdout.splitlines()]
    assert [d["kind"] for d in docs] == ["key_rotation", "force_logout"]
    assert docs[0]["reason"].startswith("keys_rotate ") and docs[0]["reason"].endswith(
        "(quarterly)"
    )
    assert docs[1]["session_id"] == session.id and docs[1]["reason"] == "stolen"
    # --no-events (or SESSIONMON_EVENTS=0): the same commands append nothing.
    assert run_cli("keys", "rotate", "--no-events", env_extra=env).returncode == 0
    other, _, _ = auth.login("u2", "bob@example.com", "Bob")
    done = run_cli("logout", other.id, env_extra={"SESSIONMON_EVENTS": "0"})
    assert done.returncode == 0
    assert len(run_cli("events").stdout.splitlines()) == 2
    bad = run_cli("events", "--events-maxlen", "0")
    assert bad.returncode == 2 and "--events-maxlen" in bad.stderr
