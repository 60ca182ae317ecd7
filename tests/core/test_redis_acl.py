"""sessionmon as a Redis ACL user with exactly the README's permissions: every blacklist and auth
operation works and the server refuses nothing (its ACL LOG stays empty); the blacklist and auth
test files pass as that user; a user without them gets one clear error, never "revoked"."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sessionmon.core.auth import LogoutFailed
from sessionmon.core.blacklist import KIND_SESSION, RevokeRequest
from sessionmon.core.errors import RedisUnavailable
from sessionmon.core.event_stream import StreamReader
from sessionmon.core.revocation_cache import CachedRevocations
from sessionmon.core.runtime import open_runtime
from sessionmon.core.settings import Settings
from sessionmon.core.store import DatabaseUrl
from tests.conftest import TEST_SECRET
from tests.redis_acl import CONFIG_REFUSED, SESSIONMON_RULES, TEST_INSPECTION, add_user, denials
from tests.redis_server import RedisProcess, system_redis_server

REPO = Path(__file__).resolve().parents[2]
PREFIX = "smacl:"


@pytest.fixture(autouse=True)
def secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SESSIONMON_SECRET", TEST_SECRET)


@pytest.fixture
def acl_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    """The machine's redis-server (Redis 7 ACLs), else the embedded one's binary."""
    proc = RedisProcess(tmp_path / "acl-redis", binary=system_redis_server()).start()
    yield proc
    proc.stop()


def test_the_readme_lists_exactly_these_rules() -> None:
    readme = (REPO / "README.md").read_text()
    line = f"ACL SETUSER sessionmon on >PASSWORD {SESSIONMON_RULES.format(prefix='sessionmon:')}"
    assert line in readme


def test_every_operation_as_the_acl_user_is_permitted(
    acl_redis: RedisProcess, db_url: DatabaseUrl
) -> None:
    proc = acl_redis
    user = add_user(proc, "sessionmon", SESSIONMON_RULES.format(prefix=PREFIX))
    settings = Settings(
        db=db_url, redis_url=user.url, prefix=PREFIX, access_ttl=60, refresh_ttl=3600,
        redis_wait_replicas=0,
    )  # fmt: skip
    with open_runtime(settings) as rt:
        guard = rt.blacklist.guard
        assert guard is not None
        server = guard.settings()
        assert server.source == "INFO"  # CONFIG is not granted: INFO says enough
        assert server.may_evict is False
        auth = rt.auth
        session, access, refresh = auth.login("u1", "ann@example.com", "Ann")
        _, other_access, _ = auth.login("u2", "bob@example.com", "Bob")
        assert auth.authenticate(access, refresh).user is not None
        result = auth.force_logout(session.id, "tester")
        assert result.revoked, result
        assert auth.authenticate(access, refresh).user is None
        assert rt.blacklist.is_revoked(None, session.id)
        assert auth.force_logout_user("u2", "tester").revoked
        assert auth.authenticate(other_access).user is None
        assert rt.blacklist.count() >= 2
        assert rt.blacklist.page(0, 10)
        assert rt.blacklist.entries_for_session(session.id)
        _, found = rt.blacklist.scan(0)
        assert found
        key = rt.blacklist.sid_key("extra")
        rt.blacklist.revoke([RevokeRequest(KIND_SESSION, "extra", time.time() + 60)])
        assert rt.blacklist.unrevoke([key]) == 1
        reader = StreamReader(rt.client, PREFIX)
        reader.latest(5)
        reader.since(time.time() - 60)
        reader.after("0", block_ms=10)
        reader.last_id()
        cache = CachedRevocations(rt.blacklist)
        try:
            assert cache.start(wait=10), cache.last_error
            assert cache.is_revoked(None, session.id)
        finally:
            cache.close()
    assert denials(proc) == [CONFIG_REFUSED]


def test_the_blacklist_and_auth_tests_pass_as_the_acl_user(acl_redis: RedisProcess) -> None:
    """The test files' own key operations, as the user (plus the reads the tests check with)."""
    proc = acl_redis
    user = add_user(
        proc, "sessionmon", f"{SESSIONMON_RULES.format(prefix='smtest:')} {TEST_INSPECTION}"
    )
    env = {k: v for k, v in os.environ.items() if k != "SESSIONMON_TEST_PG_URL"}
    env.update(SESSIONMON_TEST_REDIS_URL=user.url, PYTHONPATH=str(REPO))
    files = [
        "tests/core/test_blacklist.py",
        "tests/core/test_auth.py",
        "tests/core/test_auth_logout_presented.py",
        "tests/core/test_bulk_logout.py",
        "tests/core/test_events.py",
    ]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *files],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:]
    assert " passed" in done.stdout.splitlines()[-1]
    assert denials(proc) == []


def test_a_user_without_the_permissions_gets_one_clear_error(
    acl_redis: RedisProcess, db_url: DatabaseUrl
) -> None:
    proc = acl_redis
    no_eval = add_user(proc, "noeval", SESSIONMON_RULES.format(prefix=PREFIX).replace("+eval ", ""))
    settings = Settings(db=db_url, redis_url=no_eval.url, prefix=PREFIX, access_ttl=60)
    with open_runtime(settings) as rt:
        session, access, _ = rt.auth.login("u1", "ann@example.com", "Ann")
        with pytest.raises(LogoutFailed) as failed:
            rt.auth.force_logout(session.id, "tester")
        message = str(failed.value)
        assert message.startswith("nothing was revoked or deleted: Redis refused the command: ")
        assert "NOPERM" in message and "'eval'" in message and len(message.splitlines()) == 1
        assert not failed.value.result.revoked
        assert rt.store.get_session(session.id) is not None
        assert rt.auth.authenticate(access).user is not None  # reads are still allowed
    wrong_prefix = add_user(proc, "elsewhere", SESSIONMON_RULES.format(prefix="other:"))
    with (
        open_runtime(settings.with_(redis_url=wrong_prefix.url)) as rt,
        pytest.raises(RedisUnavailable, match=r"NOPERM .* access one of the keys"),
    ):
        rt.blacklist.is_revoked("j", "s")
