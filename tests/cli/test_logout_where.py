"""``sessionmon logout --where``: dry run, the run itself, its report, and bad input."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable

from sessionmon.core.auth import Auth
from sessionmon.core.blacklist import Blacklist
from sessionmon.core.clock import FrozenClock
from sessionmon.core.keys import KeyMaterial
from sessionmon.core.store import SessionStore
from sessionmon.core.tokens import TokenCodec
from tests.cli.test_cli import assert_clean_error

Run = Callable[..., subprocess.CompletedProcess[str]]


def seed(auth: Auth, n: int = 12) -> list[str]:
    """``n`` sessions from 10.1.0.x with curl, and two others; returns the 10.1 ids."""
    ids = [
        auth.login(f"u{i}", f"u{i}@example.com", None, f"10.1.0.{i}", "curl/8")[0].id
        for i in range(n)
    ]
    auth.login("ann", "ann@example.com", "Ann", "192.168.0.2", "Firefox")
    auth.login("bob", "bob@example.com", "Bob", "10.2.0.1", "Firefox")
    return ids


def test_dry_run_counts_and_samples_then_the_run_ends_that_many(
    run_cli: Run, auth: Auth, store: SessionStore
) -> None:
    ids = seed(auth)
    dry = run_cli("logout", "--where", "--ip", "10.1.0.0/16", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.splitlines()
    assert lines[0] == "would end 12 live sessions (ip in 10.1.0.0/16)"
    assert "... and 2 more" in lines[-1]
    assert store.count_sessions() == 14  # changed nothing

    as_json = json.loads(
        run_cli("logout", "--where", "--ip", "10.1.0.0/16", "--dry-run", "--json").stdout
    )
    assert as_json["would_end"] == 12 and len(as_json["sample"]) == 10
    assert {s["id"] for s in as_json["sample"]} <= set(ids)

    run = run_cli(
        "logout",
        "--where",
        "--ip",
        "10.1.0.0/16",
        "--user-agent",
        "CURL",
        "--batch",
        "5",
        "--reason",
        "incident 9",
        "--json",
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert (report["total"], report["ended"], report["done"], report["gone"]) == (12, 12, 12, 0)
    assert report["outcome"] == "complete" and report["error"] is None
    assert report["keys"] == 36  # access, refresh, session: each with its TTL
    assert store.get_sessions(ids) == []
    assert store.count_sessions() == 2
    audit = json.loads(run_cli("audit", "--json", "--limit", "50").stdout)
    ended = [r for r in audit if r["action"] == "force_logout_query"]
    assert sorted(r["session_id"] for r in ended) == sorted(ids)
    assert all(r["reason"] == "incident 9" for r in ended)

    again = run_cli("logout", "--resume", report["job"])
    assert again.returncode == 0
    assert f"logout job {report['job']} is already complete" in again.stderr
    assert again.stdout.startswith("ended 12 sessions")


def test_no_match_and_bad_input(run_cli: Run, auth: Auth, store: SessionStore) -> None:
    seed(auth, 2)
    nothing = run_cli("logout", "--where", "--ip", "172.16.0.0/12")
    assert_clean_error(nothing, 1, "no live sessions match (ip in 172.16.0.0/12)")
    assert_clean_error(run_cli("logout", "--where", "--ip", "10.0.0.0/99"), 2, "--ip: not an IP")
    assert_clean_error(
        run_cli("logout", "--where", "--issued-before", "soon"), 2, "--issued-before: not a time"
    )
    assert_clean_error(run_cli("logout", "--where", "--idle-for", "a while"), 2, "--idle-for")
    assert_clean_error(run_cli("logout", "--where"), 2, "--where needs at least one filter")
    assert_clean_error(run_cli("logout", "--ip", "10.0.0.0/8"), 2, "--ip selects sessions by query")
    assert_clean_error(run_cli("logout", "--where", "--user", "u0", "abc"), 2, "give no SESSION_ID")
    assert_clean_error(run_cli("logout", "--resume", "20990101-000000-abcdef"), 2, "no logout job")
    assert store.count_sessions() == 4


def test_where_kid_ends_exactly_the_sessions_signed_with_that_key(
    run_cli: Run, store: SessionStore, blacklist: Blacklist, clock: FrozenClock
) -> None:
    """Two keys: --kid selects a session when its access or its refresh token has that kid;
    ``ls --json`` shows both kids."""
    old_key = KeyMaterial("HS256", b"k" * 32, b"k" * 32, kid="aaaa1111")
    new_key = KeyMaterial("HS256", b"n" * 32, b"n" * 32, kid="bbbb2222")
    old = Auth(store, blacklist, TokenCodec(old_key, clock=clock), clock=clock)
    new = Auth(store, blacklist, TokenCodec(new_key, clock=clock), clock=clock)
    signed_old = [old.login(f"o{i}", f"o{i}@example.com", None)[0].id for i in range(3)]
    signed_new = [new.login(f"n{i}", f"n{i}@example.com", None)[0].id for i in range(2)]

    listed = {s["id"]: s for s in json.loads(run_cli("ls", "--json").stdout)}
    assert {listed[i]["access_kid"] for i in signed_old} == {"aaaa1111"}
    assert {listed[i]["refresh_kid"] for i in signed_new} == {"bbbb2222"}
    assert all(s["rotations"] == [] for s in listed.values())

    dry = run_cli("logout", "--where", "--kid", "aaaa1111", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines()[0] == "would end 3 live sessions (signed with key aaaa1111)"
    run = run_cli("logout", "--where", "--kid", "aaaa1111", "--json")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["ended"] == 3
    assert store.get_sessions(signed_old) == []
    assert [s.id for s in store.get_sessions(signed_new)] == signed_new

    assert_clean_error(
        run_cli("logout", "--where", "--kid", "cccc3333"), 1, "(signed with key cccc3333)"
    )
    assert_clean_error(run_cli("logout", "--where", "--kid", " "), 2, "--kid: empty key id")
    assert_clean_error(run_cli("logout", "--kid", "bbbb2222"), 2, "--kid selects sessions by query")
    assert store.count_sessions() == 2
