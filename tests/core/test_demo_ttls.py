"""The demo's short token lives apply unless a flag, env var or the config file set them."""

from __future__ import annotations

from pathlib import Path

import pytest

from sessionmon.core.settings import load_settings
from sessionmon.demo import DEMO_ACCESS_TTL, DEMO_REFRESH_TTL, demo_ttls


@pytest.fixture(autouse=True)
def no_user_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))


def test_defaults_become_demo_ttls() -> None:
    s = demo_ttls(load_settings({}, env={}))
    assert (s.access_ttl, s.refresh_ttl) == (DEMO_ACCESS_TTL, DEMO_REFRESH_TTL)


def test_explicit_ttls_are_kept_even_when_equal_to_the_default(tmp_path: Path) -> None:
    flag = demo_ttls(load_settings({"access_ttl": "15m"}, env={}))
    assert (flag.access_ttl, flag.refresh_ttl) == (900.0, DEMO_REFRESH_TTL)
    env = demo_ttls(load_settings({}, env={"SESSIONMON_REFRESH_TTL": "7d"}))
    assert (env.access_ttl, env.refresh_ttl) == (DEMO_ACCESS_TTL, 7 * 86400.0)
    cfg = tmp_path / "c.toml"
    cfg.write_text('access_ttl = "1m"\n')
    from_file = demo_ttls(load_settings({"config": str(cfg)}, env={}))
    assert from_file.access_ttl == 60.0
