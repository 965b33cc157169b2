"""The SQLite store's own settings (the interface is tested on both stores in
tests/integration/test_controller_store.py)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

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


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def loose_umask() -> Iterator[None]:
    """The usual 022: a file made without care would be world-readable."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.usefixtures("loose_umask")
def test_a_new_store_is_private_to_its_user(tmp_path: Path) -> None:
    path = tmp_path / "data" / "controller.db"
    store = SqliteStore(path)
    store.take_over("c1")
    with store.transaction() as tx:  # a write: the WAL and shared-memory files exist
        tx.put(created())
    assert _mode(path.parent) == 0o700
    for name in ("controller.db", "controller.db-wal", "controller.db-shm"):
        assert _mode(path.parent / name) == 0o600, name
    store.close()


@pytest.mark.usefixtures("loose_umask")
def test_a_store_file_open_to_others_is_made_0600_and_the_folder_is_warned_about(
    tmp_path: Path,
) -> None:
    path = tmp_path / "controller.db"
    SqliteStore(path).close()
    path.chmod(0o644)
    tmp_path.chmod(0o755)
    with structlog.testing.capture_logs() as logs:
        store = SqliteStore(path)
    assert _mode(path) == 0o600
    assert _mode(tmp_path) == 0o755  # the operator's folder: told, not changed
    events = {e["event"]: e for e in logs}
    assert events["the store's file was open to other users; made 0600"]["was"] == "0o644"
    assert events["the store's folder is open to other users: chmod 700 it"]["mode"] == "0o755"
    store.close()
