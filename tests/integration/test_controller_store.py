"""The store interface, on both stores: SQLite (a file) and a real PostgreSQL (Debian's
``postgresql``, started by the test setup). Records, history, counters that never go back,
atomic batches, unreadable rows skipped, stamps, and fencing between two controllers."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.keys import AppKey
from services.controller import store as store_module
from services.controller.apps import AppRecord
from services.controller.rollout import Rollout
from services.controller.secret_box import SecretBox, row_label
from services.controller.store import Fenced, SecretRow, Store, StoreError
from services.controller.stores import open_store
from tests.support.net import free_port
from tests.unit.controller.helpers import created, spec

pytestmark = pytest.mark.integration

KEY = AppKey("default", "web")


@pytest.fixture(params=["sqlite", "postgresql"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a store lives: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "controller.db")
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def stores(location: str) -> Iterator[list[Store]]:
    """Open stores on ``location`` (``opened(...)``); closed after the test."""
    opened: list[Store] = []
    yield opened
    for store in opened:
        store.close()


@pytest.fixture
def open_at(location: str, stores: list[Store]) -> object:
    def open_one() -> Store:
        store = open_store(location)
        stores.append(store)
        return store

    return open_one


def leader(open_at: object, holder: str = "c1") -> Store:
    store: Store = open_at()  # type: ignore[operator]
    store.take_over(holder)
    return store


def test_records_and_history_survive_a_reopen(open_at: object) -> None:
    store = leader(open_at)
    record = created()
    rolling = AppRecord(record.state, Rollout(from_revision=1, started=1.0, progress_at=2.0))
    with store.transaction() as tx:
        assert tx.allocate_revision(KEY) == 1
        tx.add_revision(KEY, 1, 5.0, "apply web.yaml", spec(), ["created"], 1)
        stored = tx.put(rolling)
    store.close()

    again: Store = open_at()  # type: ignore[operator]
    assert again.store_id == store.store_id
    assert again.load() == {KEY: stored}
    assert stored.rollout == rolling.rollout
    assert stored.state.model_copy(update={"store_id": "", "store_seq": 0}) == rolling.state
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


def test_every_write_is_stamped_with_the_store_and_a_growing_sequence(open_at: object) -> None:
    store = leader(open_at)
    seqs = []
    for image in ("a:1", "a:2"):
        with store.transaction() as tx:
            put = tx.put(created(spec(image)))
        assert put.state.store_id == store.store_id != ""
        seqs.append(put.state.store_seq)
    assert seqs[0] < seqs[1] == store.current_term().seq
    assert store.load()[KEY].state.store_seq == seqs[1]


def test_revision_numbers_are_never_reused_after_delete(open_at: object) -> None:
    store = leader(open_at)
    with store.transaction() as tx:
        tx.allocate_revision(KEY)
        tx.allocate_revision(KEY)
        tx.add_revision(KEY, 2, 1.0, "", spec(), [], 2)
        tx.put(created())
    with store.transaction() as tx:
        tx.delete(KEY)
    assert store.load() == {}
    assert store.keys() == set()
    assert store.history(KEY) == []
    with store.transaction() as tx:
        assert tx.allocate_revision(KEY) == 3
    assert store.last_revision(AppKey("default", "other")) == 0


def test_a_failed_batch_changes_nothing(open_at: object) -> None:
    store = leader(open_at)

    def batch() -> None:
        with store.transaction() as tx:
            tx.allocate_revision(KEY)
            tx.put(created())
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        batch()
    assert store.load() == {}
    assert store.last_revision(KEY) == 0
    with store.transaction() as tx:  # the store is usable again
        assert tx.allocate_revision(KEY) == 1


def test_status_and_pruning(open_at: object, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "HISTORY_LIMIT", 3)
    store = leader(open_at)
    with store.transaction() as tx:
        for rev in range(1, 7):
            tx.add_revision(KEY, rev, float(rev), "", spec(f"x:{rev}"), [], 1)
        tx.set_status(KEY, 6, "failed: never ready")
    rows = store.history(KEY)
    assert [r.revision for r in rows] == [1, 4, 5, 6]  # the current one (1) is kept
    assert rows[-1].status == "failed: never ready"


def test_a_row_that_does_not_read_back_is_skipped_and_the_others_load(open_at: object) -> None:
    store = leader(open_at)
    other = AppKey("default", "api")
    with store.transaction() as tx:
        tx.put(created())
        tx.put(created(spec(name="api")))
    store._execute("UPDATE apps SET state = ? WHERE name = ?", ('{"broken": ', "web"))
    loaded = store.load()
    assert set(loaded) == {other}
    assert store.keys() == {KEY, other}


def test_without_a_term_nothing_is_written(open_at: object) -> None:
    store: Store = open_at()  # type: ignore[operator]
    with pytest.raises(Fenced), store.transaction() as tx:
        tx.put(created())
    assert store.keys() == set()


def test_a_deposed_leader_cannot_write(open_at: object) -> None:
    first = leader(open_at, "c1")
    with first.transaction() as tx:
        tx.put(created())
    second = leader(open_at, "c2")
    assert second.term == (first.term or 0) + 1
    assert second.current_term().holder == "c2"

    with pytest.raises(Fenced), first.transaction() as tx:
        tx.delete(KEY)
    assert first.term is None  # it knows it is deposed: every later write fails too
    with pytest.raises(Fenced), first.transaction() as tx:
        tx.delete(KEY)
    assert set(second.load()) == {KEY}
    assert second.last_revision(KEY) == 0
    with second.transaction() as tx:
        tx.delete(KEY)
    assert second.keys() == set()


def test_a_take_over_waits_for_the_write_in_progress(open_at: object) -> None:
    first = leader(open_at, "c1")
    second: Store = open_at()  # type: ignore[operator]
    took: list[int] = []
    thread = threading.Thread(target=lambda: took.append(second.take_over("c2")))
    with first.transaction() as tx:
        tx.put(created())
        thread.start()  # blocks on the term row until this transaction ends
    thread.join(30)
    assert took == [(first.term or 0) + 1]
    assert set(second.load()) == {KEY}  # the leader's last write is in, then fenced
    with pytest.raises(Fenced), first.transaction() as tx:
        tx.delete(KEY)


def test_an_unreachable_postgresql_is_a_store_error() -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"
    with pytest.raises(StoreError, match="cannot reach the PostgreSQL store"):
        open_store(url)


def test_a_lost_postgresql_connection_is_reopened(postgres_url: str) -> None:
    import psycopg

    store = open_store(postgres_url)
    try:
        store.take_over("c1")
        [(pid,)] = store._execute("SELECT pg_backend_pid()")
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(StoreError):
            store.keys()
        with store.transaction() as tx:  # a new connection; the term is still this store's
            tx.put(created())
        assert store.keys() == {KEY}
    finally:
        store.close()


def test_secret_versions_are_kept_sealed_pruned_and_deleted(
    open_at: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "SECRET_HISTORY", 3)
    box = SecretBox(os.urandom(32))
    store = leader(open_at)

    def row(name: str, version: int, value: bytes, namespace: str = "default") -> SecretRow:
        sealed = box.seal(value, row_label(namespace, name, version))
        return SecretRow(namespace, name, version, 1.0, float(version), len(value), sealed)

    with store.transaction() as tx:
        tx.set_meta("secrets_key_check", box.check_value())
        for version in range(1, 6):
            tx.put_secret(row("db", version, f"value {version}".encode()))
        tx.put_secret(row("api", 1, b"api value"))
        tx.put_secret(row("db", 1, b"prod value", "prod"))
    store.close()

    again: Store = open_at()  # type: ignore[operator]
    check = again.meta("secrets_key_check")
    assert check is not None
    assert box.opens(check)
    assert again.secret_versions("default") == {"db": 5, "api": 1}
    assert again.secret_versions("nothing") == {}
    current = again.secret("default", "db")
    assert current is not None
    assert (current.version, current.size, current.updated) == (5, 7, 5.0)
    assert box.open(current.sealed, row_label("default", "db", 5)) == b"value 5"
    old = again.secret("default", "db", 3)
    assert old is not None
    assert box.open(old.sealed, row_label("default", "db", 3)) == b"value 3"
    assert again.secret("default", "db", 2) is None  # beyond SECRET_HISTORY: pruned
    assert [(r.namespace, r.name, r.version) for r in again.secrets()] == [
        ("default", "api", 1),
        ("default", "db", 5),
        ("prod", "db", 1),
    ]
    assert [r.name for r in again.secrets("prod")] == ["db"]
    # the store holds ciphertext only
    raw = again._execute("SELECT namespace, name, sealed FROM secrets")
    assert not any(b"value" in str(r).encode() for r in raw)

    again.take_over("c2")
    with again.transaction() as tx:
        tx.delete_secret("default", "db")
    assert again.secret_versions("default") == {"api": 1}
    assert again.secret("default", "db") is None
    assert again.secret("prod", "db") is not None


def test_a_secret_write_is_fenced_like_any_other(open_at: object) -> None:
    first = leader(open_at, "c1")
    leader(open_at, "c2")
    with pytest.raises(Fenced), first.transaction() as tx:
        tx.put_secret(SecretRow("default", "db", 1, 1.0, 1.0, 1, "x"))
    assert first.secret("default", "db") is None
