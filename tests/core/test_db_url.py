"""``--db`` / ``SESSIONMON_DB``: which backend a value names, and never a password on screen."""

from __future__ import annotations

from pathlib import Path

import pytest

from sessionmon.core.errors import ConfigError
from sessionmon.core.settings import load_settings
from sessionmon.core.store import Backend, DatabaseUrl


@pytest.mark.parametrize(
    ("value", "path"),
    [
        ("sessions.db", Path("sessions.db")),
        ("/var/lib/sessionmon/s.db", Path("/var/lib/sessionmon/s.db")),
        ("sqlite:///relative/s.db", Path("relative/s.db")),
        ("sqlite:////absolute/s.db", Path("/absolute/s.db")),
        ("./postgresql:/x", Path("postgresql:/x")),  # no "//": a (strange) relative path
    ],
)
def test_paths_and_sqlite_urls_are_sqlite(value: str, path: Path) -> None:
    db = DatabaseUrl.parse(value)
    assert db.backend is Backend.SQLITE and db.path == path and db.anchor == path


@pytest.mark.parametrize(
    "value",
    [
        "postgresql://postgres@127.0.0.1:5432/test",
        "postgres://u:pw@db.internal/sessions?sslmode=require",
        "postgresql://u@h/db?options=-csearch_path%3Dtenant",
    ],
)
def test_postgres_urls_are_postgres(value: str) -> None:
    db = DatabaseUrl.parse(value)
    assert db.backend is Backend.POSTGRES and db.path is None and db.url == value


@pytest.mark.parametrize(
    "value",
    ["mysql://root@127.0.0.1/db", "redis://127.0.0.1:6379/0", "http://x/y", "sqlite://x.db"],
)
def test_an_unknown_scheme_is_an_error_never_a_relative_path(value: str) -> None:
    with pytest.raises(ConfigError, match="--db"):
        DatabaseUrl.parse(value)


@pytest.mark.parametrize(
    "value",
    ["postgresql://u:pw@/db", "postgresql://u:pw@host", "postgresql://u:pw@host/"],
)
def test_a_postgres_url_needs_a_host_and_a_database(value: str) -> None:
    with pytest.raises(ConfigError) as err:
        DatabaseUrl.parse(value)
    assert "pw" not in str(err.value)


def test_password_is_masked_wherever_the_url_is_shown(tmp_path: Path) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path)}
    s = load_settings({"db": "postgresql://ops:s3cret@db:5433/prod?password=also"}, env=env)
    shown = [str(s.db), s.db.display, repr(s.db.display), s.redis_display]
    assert all("s3cret" not in t and "also" not in t for t in shown), shown
    assert str(s.db) == "postgresql://ops:***@db:5433/prod?password=***"
    with pytest.raises(ConfigError) as err:
        load_settings({"db": "mysql://ops:s3cret@db/prod"}, env=env)
    assert "s3cret" not in str(err.value)


def test_the_embedded_redis_of_a_postgres_database_lives_in_the_data_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    a = DatabaseUrl.parse("postgresql://ops:one@db:5432/prod")
    b = DatabaseUrl.parse("postgresql://ops:two@db:5432/prod")  # another password: same place
    c = DatabaseUrl.parse("postgresql://ops@db:5432/staging")
    assert a.anchor == b.anchor and a.anchor != c.anchor
    assert a.anchor.parent.parent == tmp_path / "sessionmon"
    assert "one" not in str(a.anchor)


def test_application_name_comes_from_the_url_or_is_sessionmon() -> None:
    from sessionmon.core.store.url import application_name

    assert application_name(DatabaseUrl.parse("postgresql://u@h/db")) == "sessionmon"
    named = DatabaseUrl.parse("postgresql://u@h/db?application_name=billing-ops&sslmode=disable")
    assert application_name(named) == "billing-ops"
