"""The SQLite store's own settings (the interface is tested on both stores in
tests/integration/test_controller_store.py)."""

from __future__ import annotations

from pathlib import Path

from services.controller.store_sqlite import SqliteStore
from services.controller.stores import open_store
from tests.unit.controller.helpers import created


def test_commits_are_durable_before_they_return(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "c.db")
    assert store.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_path_opens_sqlite_and_each_store_has_its_own_id(tmp_path: Path) -> None:
    one = open_store(tmp_path / "a" / "c.db")
    two = open_store(str(tmp_path / "b.db"))
    assert isinstance(one, SqliteStore)
    assert one.store_id
    assert two.store_id
    assert one.store_id != two.store_id
    one.take_over("c1")
    with one.transaction() as tx:
        tx.put(created())
    one.close()
    assert open_store(tmp_path / "a" / "c.db").store_id == one.store_id
