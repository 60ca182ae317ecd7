"""Which Redis the suite runs against: SESSIONMON_TEST_REDIS_CLUSTER=1 is a fixture-started
Redis Cluster (see tests/conftest.py); tests that need one server skip under it, saying why."""

from __future__ import annotations

import os

import pytest

CLUSTER = os.environ.get("SESSIONMON_TEST_REDIS_CLUSTER", "") not in ("", "0")


def single_node_only(why: str) -> pytest.MarkDecorator:
    """Skip (saying why) under SESSIONMON_TEST_REDIS_CLUSTER=1: the test needs one server."""
    return pytest.mark.skipif(CLUSTER, reason=f"single Redis server only: {why}")
