"""LineTable's subclasses must provide the row model; forgetting one fails at definition."""

from __future__ import annotations

import pytest

from sessionmon.tui.widgets.blacklist_table import BlacklistTable
from sessionmon.tui.widgets.sessions_table import SessionsTable
from sessionmon.tui.widgets.table import LineTable


def test_a_table_without_its_row_model_is_refused_when_defined() -> None:
    with pytest.raises(TypeError, match="row_count, cursor, set_cursor, row_cells, now"):

        class Incomplete(LineTable):
            pass


def test_the_real_tables_provide_everything() -> None:
    for cls in (SessionsTable, BlacklistTable):
        for name in LineTable.SUBCLASS_PROVIDES:
            assert getattr(cls, name) is not getattr(LineTable, name), (cls, name)
