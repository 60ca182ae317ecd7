"""Several processes on one PostgreSQL database: four uvicorn workers of the example app and two
monitors see each other's logins and force-logouts without a restart, within about a second."""

from __future__ import annotations

import time

import httpx
import pytest

from sessionmon.core.store import SessionStore, SqliteStore
from sessionmon.tui.screens.confirm import ConfirmLogout
from sessionmon.tui.widgets.sessions_table import SessionsTable
from tests.tui.conftest import SIZE, loaded, wait_for
from tests.web.conftest import start_webapp  # noqa: F401 - the fixture

# Poll interval of the monitors here is 0.2 s; LISTEN/NOTIFY makes a commit visible at the next
# poll. The deadlines leave room for a loaded 2-core machine; the time taken is asserted too.
SEEN_WITHIN = 1.0
DEADLINE = 10.0


def shown_ids(app) -> set[str]:
    table = app.main.query_one(SessionsTable)
    return {s.id for i in range(len(app.model)) if (s := table.session_at(i)) is not None}


async def test_four_workers_and_two_monitors_see_each_other(
    make_app,
    store: SessionStore,
    start_webapp,  # noqa: F811
):
    if isinstance(store, SqliteStore):
        pytest.skip("several hosts share a PostgreSQL database, not a SQLite file")
    web = start_webapp(workers=4)
    first, second = make_app(), make_app()
    async with first.run_test(size=SIZE) as p1, second.run_test(size=SIZE) as p2:
        await loaded(p1)
        await loaded(p2)
        clients = [httpx.Client(base_url=web.url, timeout=10) for _ in range(6)]
        try:
            started = time.monotonic()
            sessions = []
            for i, client in enumerate(clients):  # six logins, spread over the workers
                r = client.post("/login", json={"email": f"user{i}@example.com"})
                assert r.status_code == 200, r.text
                sessions.append(r.json()["user"]["session_id"])
            want = set(sessions)
            for pilot, app in ((p1, first), (p2, second)):
                await wait_for(pilot, lambda a=app: want <= shown_ids(a), "logins", DEADLINE)
            took = time.monotonic() - started
            assert took < SEEN_WITHIN + 2.0, f"logins took {took:.2f}s to show"

            # The first monitor force-logs-out one session; the second sees it go, and every
            # worker refuses its cookie from then on.
            victim = sessions[0]
            table = first.main.query_one(SessionsTable)
            at = next(i for i in range(len(first.model)) if table.session_at(i).id == victim)
            table.move_cursor(at)
            await p1.press("l")
            await wait_for(p1, lambda: isinstance(first.screen, ConfirmLogout), "dialog")
            await p1.press("y")
            await wait_for(p1, lambda: store.get_session(victim) is None, "deleted", DEADLINE)
            gone = time.monotonic()
            await wait_for(p2, lambda: victim not in shown_ids(second), "gone there", DEADLINE)
            assert time.monotonic() - gone < SEEN_WITHIN + 2.0
            for _ in range(8):  # whichever worker answers
                r = clients[0].get("/me")
                assert r.status_code == 401 and r.json()["reason"] == "revoked", r.text
            assert clients[1].get("/me").status_code == 200
        finally:
            for client in clients:
                client.close()
