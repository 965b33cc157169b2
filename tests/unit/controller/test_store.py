"""The SQLite store: records, history, counters that never go back, atomic batches."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.keys import AppKey
from services.controller import store as store_module
from services.controller.apps import AppRecord
from services.controller.rollout import Rollout
from services.controller.store import Store
from tests.unit.controller.helpers import created, spec

KEY = AppKey("default", "web")


def test_records_and_history_survive_a_reopen(tmp_path: Path) -> None:
    db = tmp_path / "controller.db"
    store = Store(db)
    record = created()
    rolling = AppRecord(record.state, Rollout(from_revision=1, started=1.0, progress_at=2.0))
    with store.transaction() as tx:
        assert tx.allocate_revision(KEY) == 1
        tx.add_revision(KEY, 1, 5.0, "apply web.yaml", spec(), ["created"], 1)
        tx.put(rolling)
    store.close()

    again = Store(db)
    assert again.load() == {KEY: rolling}
    assert all(isinstance(key, AppKey) for key in again.load())
    assert again.last_revision(KEY) == 1
    [row] = again.history(KEY)
    assert (row.revision, row.created, row.source, row.changes) == (
        1,
        5.0,
        "apply web.yaml",
        ["created"],
    )
    assert row.spec == spec()
    assert row.template_hash == spec().template_hash()
    assert again.revision(KEY, 1) == row
    assert again.revision(KEY, 2) is None


def test_revision_numbers_are_never_reused_after_delete(tmp_path: Path) -> None:
    store = Store(tmp_path / "c.db")
    with store.transaction() as tx:
        tx.allocate_revision(KEY)
        tx.allocate_revision(KEY)
        tx.add_revision(KEY, 2, 1.0, "", spec(), [], 2)
        tx.put(created())
    with store.transaction() as tx:
        tx.delete(KEY)
    assert store.load() == {}
    assert store.history(KEY) == []
    with store.transaction() as tx:
        assert tx.allocate_revision(KEY) == 3
    assert store.last_revision(AppKey("default", "other")) == 0


def test_a_failed_batch_changes_nothing(tmp_path: Path) -> None:
    store = Store(tmp_path / "c.db")

    def batch() -> None:
        with store.transaction() as tx:
            tx.allocate_revision(KEY)
            tx.put(created())
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        batch()
    assert store.load() == {}
    assert store.last_revision(KEY) == 0


def test_status_and_pruning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "HISTORY_LIMIT", 3)
    store = Store(tmp_path / "c.db")
    with store.transaction() as tx:
        for rev in range(1, 7):
            tx.add_revision(KEY, rev, float(rev), "", spec(f"x:{rev}"), [], 1)
        tx.set_status(KEY, 6, "failed: never ready")
    rows = store.history(KEY)
    assert [r.revision for r in rows] == [1, 4, 5, 6]  # the current one (1) is kept
    assert rows[-1].status == "failed: never ready"
