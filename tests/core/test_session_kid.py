"""Per-session kid and rotation history (schema version 4) on both stores: written at login,
silent refresh and rotation in the statements that already run, matched by ``SessionQuery.kid``,
and migrated from a version-3 database."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from sessionmon.core.auth import Auth
from sessionmon.core.blacklist import Blacklist
from sessionmon.core.clock import FrozenClock
from sessionmon.core.keydir import KeyDirectory
from sessionmon.core.keysource import LiveKeys
from sessionmon.core.policy import SessionPolicy
from sessionmon.core.session_query import SessionQuery, matching_sessions
from sessionmon.core.store import SCHEMA_VERSION, SessionStore, SqliteStore, open_store
from sessionmon.core.store.base import RotationRecord, Session
from sessionmon.core.store.schema import ROTATION_HISTORY
from sessionmon.core.tokens import ACCESS, REFRESH, TokenCodec
from tests.core.forge import segments


def kid_of(token: str) -> str:
    return str(segments(token)[0]["kid"])


def expire_access(auth: Auth, clock: FrozenClock) -> None:
    clock.advance(auth.access_ttl + auth.codec.leeway + 1)


@pytest.fixture
def key_dir(tmp_path: Path, clock: FrozenClock) -> KeyDirectory:
    directory = KeyDirectory(tmp_path / "keys", "HS256", clock)
    directory.ensure()
    return directory


@pytest.fixture
def live_keys(key_dir: KeyDirectory) -> LiveKeys:
    return LiveKeys(key_dir)


@pytest.fixture
def rotating_auth(
    store: SessionStore, blacklist: Blacklist, live_keys: LiveKeys, clock: FrozenClock
) -> Auth:
    codec = TokenCodec(live_keys, leeway=10, clock=clock)
    return Auth(store, blacklist, codec, access_ttl=60, refresh_ttl=3600, clock=clock)


def test_login_records_the_kid_that_signed_each_token(
    auth: Auth, store: SessionStore, codec: TokenCodec
) -> None:
    session, access, refresh = auth.login("u1", "ann@example.com", "Ann", "10.0.0.1", "UA")
    row = store.get_session(session.id)
    assert row is not None
    assert row.access_kid == kid_of(access) == codec.key_source.ring().current.kid
    assert row.refresh_kid == kid_of(refresh)
    assert row.rotation_history() == [] and row.rotations is None


def test_rotation_records_the_new_kids_and_appends_the_history(
    rotating_auth: Auth,
    store: SessionStore,
    key_dir: KeyDirectory,
    live_keys: LiveKeys,
    clock: FrozenClock,
) -> None:
    auth = rotating_auth
    session, _, refresh = auth.login("u1", "ann@example.com", "Ann", "10.0.0.1", "UA-login")
    first_kid = kid_of(refresh)
    key_dir.rotate(overlap=3600)
    live_keys.refresh()
    clock.advance(30)
    result = auth.refresh(refresh, ip="10.0.0.2", user_agent="UA-tab")
    assert result.ok and result.new_access_token and result.new_refresh_token
    second_kid = kid_of(result.new_refresh_token)
    assert second_kid != first_kid and kid_of(result.new_access_token) == second_kid
    row = store.get_session(session.id)
    assert row is not None and (row.access_kid, row.refresh_kid) == (second_kid, second_kid)
    (record,) = row.rotation_history()
    assert (record.generation, record.ip, record.user_agent) == (1, "10.0.0.2", "UA-tab")
    assert record.at == pytest.approx(clock.now(), abs=1e-3)  # JSON keeps 15 digits
    # The sessions signed with the old key are no longer this one; with the new key they are.
    now = clock.now()
    assert not list(matching_sessions(store, SessionQuery(kid=first_kid), now))
    assert [s.id for s in matching_sessions(store, SessionQuery(kid=second_kid), now)] == [
        session.id
    ]


def test_the_history_keeps_the_last_rotations_only(
    auth: Auth, store: SessionStore, clock: FrozenClock
) -> None:
    session, _, refresh = auth.login("u1", "ann@example.com", "Ann", "10.0.0.1", "UA")
    for n in range(1, ROTATION_HISTORY + 4):
        clock.advance(20)
        result = auth.refresh(refresh, ip=f"10.0.1.{n}", user_agent=f"UA-{n}")
        assert result.ok and result.new_refresh_token
        refresh = result.new_refresh_token
    row = store.get_session(session.id)
    assert row is not None
    history = row.rotation_history()
    assert len(history) == ROTATION_HISTORY
    assert [h.generation for h in history] == list(range(4, ROTATION_HISTORY + 4))
    last = history[-1]
    assert (last.generation, last.ip, last.user_agent) == (row.generation, "10.0.1.13", "UA-13")
    assert last.at == pytest.approx(clock.now(), abs=1e-3)
    assert row.to_json()["rotations"][-1]["ip"] == "10.0.1.13"


def test_a_grace_window_duplicate_appends_nothing(
    auth: Auth, store: SessionStore, clock: FrozenClock
) -> None:
    session, _, refresh = auth.login("u1", "ann@example.com", "Ann")
    clock.advance(20)
    assert auth.refresh(refresh, ip="10.0.0.2").ok
    assert auth.refresh(refresh, ip="10.0.0.3").ok  # another tab, within the grace window
    row = store.get_session(session.id)
    assert row is not None and [h.ip for h in row.rotation_history()] == ["10.0.0.2"]


def test_silent_refresh_without_rotation_records_the_access_kid(
    store: SessionStore,
    blacklist: Blacklist,
    live_keys: LiveKeys,
    key_dir: KeyDirectory,
    clock: FrozenClock,
) -> None:
    codec = TokenCodec(live_keys, leeway=10, clock=clock)
    auth = Auth(
        store,
        blacklist,
        codec,
        access_ttl=60,
        refresh_ttl=3600,
        clock=clock,
        policy=SessionPolicy(rotate_refresh=False),
    )
    session, _, refresh = auth.login("u1", "ann@example.com", "Ann")
    old = kid_of(refresh)
    key_dir.rotate(overlap=3600)
    live_keys.refresh()
    expire_access(auth, clock)
    result = auth.authenticate(None, refresh)
    assert result.ok and result.new_access_token and result.new_refresh_token is None
    row = store.get_session(session.id)
    assert row is not None
    assert row.access_kid == kid_of(result.new_access_token) != old
    assert row.refresh_kid == old  # the refresh token was not replaced
    # Either kid selects it.
    for kid in (old, row.access_kid):
        query = SessionQuery(kid=kid)
        assert [s.id for s in matching_sessions(store, query, clock.now())] == [session.id]
        assert query.describe() == f"signed with key {kid}"


def test_kid_query_needs_a_live_session_and_composes(store: SessionStore) -> None:
    now = time.time()

    def row(sid: str, access_kid: str | None, refresh_kid: str | None, exp: float) -> Session:
        return Session(sid, "u", "a@x", None, now - 10, now - 10, "10.0.0.1", None, "a", now + 5,
                       "r", exp, access_kid=access_kid, refresh_kid=refresh_kid)  # fmt: skip

    for s in (
        row("live-a", "k1", "k2", now + 100),
        row("live-b", "k2", "k1", now + 100),
        row("live-c", "k2", "k2", now + 100),
        row("ended", "k1", "k1", now - 1),
        row("unknown", None, None, now + 100),
    ):
        store.insert_session(s)
    found = [s.id for s in matching_sessions(store, SessionQuery(kid="k1"), now)]
    assert found == ["live-a", "live-b"]
    with_ip = SessionQuery(kid="k1", ip=None, user_agent="nothing")
    assert not list(matching_sessions(store, with_ip, now))
    assert not SessionQuery(kid="k1").empty


def test_the_store_starts_an_unreadable_history_afresh(
    auth: Auth, store: SessionStore, clock: FrozenClock
) -> None:
    """A damaged ``rotations`` value never stops a rotation: the history starts again."""
    session, _, refresh = auth.login("u1", "ann@example.com", "Ann")
    with store.transaction() as conn:  # type: ignore[attr-defined]
        m = "?" if store.backend.value == "sqlite" else "%s"
        conn.execute(f"UPDATE sessions SET rotations = {m} WHERE id = {m}", ("{oops", session.id))
    clock.advance(20)
    result = auth.refresh(refresh, ip="10.0.0.9")
    assert result.ok
    row = store.get_session(session.id)
    assert row is not None and [h.ip for h in row.rotation_history()] == ["10.0.0.9"]


def test_unreadable_rotation_history_reads_as_none() -> None:
    assert RotationRecord.parse_list("not json") == []
    assert RotationRecord.parse_list('{"a": 1}') == []
    good = {"generation": 2, "at": 5, "ip": 7, "user_agent": "UA"}
    assert RotationRecord.parse_list('[1, {"generation": "x", "at": 1}, ' + str(good).replace(
        "'", '"') + "]") == [RotationRecord(2, 5.0, None, "UA")]  # fmt: skip


def test_a_v3_sqlite_database_migrates_to_v4(
    db_path: Path, blacklist: Blacklist, codec: TokenCodec, clock: FrozenClock
) -> None:
    import sqlite_utils

    from sessionmon.core.store.sqlite_schema import MIGRATIONS

    conn = sqlite3.connect(db_path)
    for migration in MIGRATIONS[:3]:
        migration(sqlite_utils.Database(conn))
    conn.execute("PRAGMA user_version = 3")
    now = clock.now()
    _, a = codec.mint(ACCESS, sub="u1", sid="v3", ttl=60, now=now)
    refresh, r = codec.mint(REFRESH, sub="u1", sid="v3", ttl=3600, now=now, gen=0)
    conn.execute(
        "INSERT INTO sessions (id, user_id, email, name, created_at, last_seen_at, access_jti, "
        "access_exp, refresh_jti, refresh_exp, refresh_count, generation) "
        "VALUES (?,?,?,?,?,?,?,?,?,?,0,0)",
        ("v3", "u1", "ann@example.com", "Ann", now, now, a.jti, a.exp, r.jti, r.exp),
    )
    conn.commit()
    conn.close()
    with SqliteStore(db_path, clock=clock) as store:
        assert store.migrated_from == 3 and store.schema_version() == SCHEMA_VERSION
        row = store.get_session("v3")
        assert row is not None
        assert (row.access_kid, row.refresh_kid, row.rotation_history()) == (None, None, [])
        auth = Auth(store, blacklist, codec, clock=clock)
        clock.advance(5)
        result = auth.refresh(refresh, ip="10.9.9.9")
        assert result.ok and result.new_refresh_token
        row = store.get_session("v3")
        assert row is not None and row.refresh_kid == kid_of(result.new_refresh_token)
        assert [h.ip for h in row.rotation_history()] == ["10.9.9.9"]


def test_a_v3_postgres_schema_migrates_to_v4(clock: FrozenClock) -> None:
    import psycopg

    from sessionmon.core.store.postgres_schema import MIGRATIONS, VERSION_TABLE
    from tests.support import pg

    with pg.fresh_schema() as url:
        with psycopg.connect(url) as conn, conn.cursor() as cur:
            cur.execute(f"CREATE TABLE {VERSION_TABLE} (version integer NOT NULL)")
            for number, migration in enumerate(MIGRATIONS[:3], start=1):
                migration(cur)
                cur.execute(f"INSERT INTO {VERSION_TABLE} (version) VALUES (%s)", (number,))
            cur.execute(
                "INSERT INTO sessions (id, user_id, created_at, last_seen_at, refresh_jti, "
                "refresh_exp, generation) VALUES ('v3', 'u1', 1, 1, 'j', %s, 2)",
                (clock.now() + 60,),
            )
        store = open_store(url, clock=clock)
        try:
            assert store.migrated_from == 3 and store.schema_version() == SCHEMA_VERSION
            row = store.get_session("v3")
            assert row is not None and row.generation == 2
            assert (row.access_kid, row.refresh_kid, row.rotations) == (None, None, None)
        finally:
            store.close()


def test_a_grace_window_duplicate_after_a_key_rotation_is_the_same_pair(
    rotating_auth: Auth,
    store: SessionStore,
    key_dir: KeyDirectory,
    live_keys: LiveKeys,
    clock: FrozenClock,
) -> None:
    """The key set rotates between the first presentation and a concurrent tab's: the tab gets
    the same tokens, signed with the same (now previous) key the row records."""
    auth = rotating_auth
    session, _, refresh = auth.login("u1", "ann@example.com", "Ann")
    clock.advance(20)
    first = auth.refresh(refresh)
    assert first.ok and first.new_refresh_token and first.new_access_token
    key_dir.rotate(overlap=3600)
    live_keys.refresh()
    again = auth.refresh(refresh)  # within the grace window
    assert (again.new_access_token, again.new_refresh_token) == (
        first.new_access_token,
        first.new_refresh_token,
    )
    row = store.get_session(session.id)
    assert row is not None and row.refresh_kid == kid_of(first.new_refresh_token)
    assert row.refresh_kid != live_keys.ring().current.kid
