"""The original design's flow end to end with a 2 s access TTL, on real Redis and SQLite."""

from __future__ import annotations

import time

from sessionmon.core.auth import Auth
from sessionmon.core.blacklist import Blacklist
from sessionmon.core.store import SqliteStore
from sessionmon.core.tokens import Reason, TokenCodec


def test_login_expiry_silent_refresh_force_logout(
    store: SqliteStore, blacklist: Blacklist, codec: TokenCodec
) -> None:
    codec.clock = store.clock = blacklist.clock = _RealClock()
    codec.leeway = blacklist.leeway = 0
    auth = Auth(store, blacklist, codec, access_ttl=2, refresh_ttl=60, clock=codec.clock)
    session, access, refresh = auth.login("u1", "Ann@Example.com", "Ann")

    ok = auth.authenticate(access, refresh)
    assert ok.user is not None and ok.user.email == "ann@example.com" and not ok.refreshed

    time.sleep(2.2)
    assert auth.authenticate(access).reason is Reason.EXPIRED
    refreshed = auth.authenticate(access, refresh)
    assert refreshed.ok and refreshed.new_access_token
    row = store.get_session(session.id)
    assert row is not None and row.refresh_count == 1 and row.access_exp > session.access_exp

    result = auth.force_logout(session.id, actor="ops", reason="incident")
    assert result.ok and result.deleted == 1
    assert auth.authenticate(refreshed.new_access_token).reason is Reason.REVOKED
    assert auth.authenticate(None, refresh).reason is Reason.REVOKED
    assert store.get_session(session.id) is None


class _RealClock:
    def now(self) -> float:
        return time.time()
