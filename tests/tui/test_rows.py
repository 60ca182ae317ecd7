"""The sessions view draws from memory only: rows are read by workers, never on the UI thread."""

from __future__ import annotations

import threading

import pytest

from sessionmon.core.auth import Auth
from sessionmon.core.store import Session
from sessionmon.core.store.postgres import PostgresReader
from sessionmon.core.store.sqlite_reader import SqliteReader
from sessionmon.tui.rows import GONE, RowCache
from sessionmon.tui.widgets.sessions_table import SessionsTable
from tests.tui.conftest import SIZE, loaded, wait_for


async def test_rows_are_read_off_the_ui_thread_and_drawn_once_they_arrive(
    make_app, auth: Auth, clock, monkeypatch: pytest.MonkeyPatch
):
    ui = threading.current_thread()
    reads: list[tuple[str, int]] = []
    for reader in (SqliteReader, PostgresReader):
        original = reader.rows

        def traced(self, keys, _original=original):  # type: ignore[no-untyped-def]
            keys = list(keys)
            reads.append((threading.current_thread().name, len(keys)))
            assert threading.current_thread() is not ui, "a row read on the UI thread"
            return _original(self, keys)

        monkeypatch.setattr(reader, "rows", traced)
    for i in range(400):
        auth.login(f"u{i}", f"user{i:03d}@example.com", f"User {i}")
        clock.advance(1)
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        table = app.main.query_one(SessionsTable)
        first_screen = [table.session_at(i) for i in range(table.page_height)]
        assert all(isinstance(s, Session) for s in first_screen)  # came with the poll
        polled_reads = len(reads)
        await pilot.press("end")  # far beyond what the poll read
        bottom = len(app.model) - 1
        await wait_for(pilot, lambda: table.session_at(bottom) is not None, "the last rows read")
        assert len(reads) > polled_reads  # by the rows worker
        assert table.selected is not None and table.selected.id == table.session_at(bottom).id
        line = table.render_line(0)  # drawing never waits or reads: memory only
        assert line is not None
    assert reads and all(name != ui.name for name, _ in reads)


def test_row_cache_keeps_rows_of_the_last_order_and_is_bounded() -> None:
    cache = RowCache(limit=10)
    s = Session("a", "u", None, None, 0.0, 0.0, None, None, None, None, None, None)
    gen = cache.new_generation()
    cache.put([1, 2], {1: s}, gen)
    assert cache.get(1) is s and cache.get(2) is GONE and cache.get(3) is None
    assert cache.fresh(1)
    cache.new_generation()
    assert cache.get(1) is s and not cache.fresh(1)  # drawn, but read again
    cache.put(range(100, 120), {}, cache.generation)
    assert len(cache) <= 10
    stale = cache.generation - 3
    cache.put([5], {5: s}, stale)  # read for an order long gone: dropped
    assert cache.get(5) is None
