"""The controller's source of truth: apps and their revision history, behind one interface.

Two implementations share this module's SQL (``?`` placeholders, ``ON CONFLICT`` upserts):
``store_sqlite.SqliteStore`` (embedded, the default: ``--data-dir``) and
``store_postgres.PostgresStore`` (``--store postgresql://...``, for controllers on several
machines). ``open_store`` picks one. Every change of one command is one transaction: either
every app of an ``apply`` changes, or none does; a commit is durable before it returns.

Tables:

- ``apps``: one row per app, the retained ``AppState`` and the private ``Rollout`` as JSON;
- ``revisions``: the history, one row per (app, revision): spec, source, diff, status;
- ``counters``: the last revision handed out per app; kept when the app is deleted, so a
  revision number is never reused (agents label containers with it);
- ``secrets``: one row per (secret, version): sizes, times and the value sealed with
  AES-GCM by the controller (``secret_box.py``; the store never sees a value in the clear);
  the last ``SECRET_HISTORY`` versions are kept, for replicas of older revisions;
- ``meta``: the schema version and the store's id (a random id chosen when it was created),
  and the secrets key's check value;
- ``leader``: one row, the leader **term** and who holds it (fencing, below).

**Fencing.** A controller that wins the election calls ``take_over``, which increments the
term in the database and remembers the new value. Every write transaction first locks the
term row (SQLite: ``BEGIN IMMEDIATE`` takes the database's write lock; PostgreSQL:
``SELECT ... FOR UPDATE``) and checks it still holds that term; if another controller took
over since, the transaction raises ``Fenced`` and writes nothing. A ``take_over`` waits for
the write in progress (it needs the same lock), and every later write of the old leader
sees the new term: a deposed leader cannot write, whatever it believes.
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from core.errors import ShoalError
from core.keys import AppKey
from core.logs import get_logger
from core.spec import AppSpec
from core.state import AppState
from services.controller.apps import AppRecord
from services.controller.rollout import Rollout

SCHEMA_VERSION = 2
#: Revisions kept per app (the oldest beyond this are pruned; the current one never is).
HISTORY_LIMIT = 50
#: Versions kept per secret (replicas of a revision still rolling out may need an old one).
SECRET_HISTORY = 10

log = get_logger("shoal.controller.store")

Row = Sequence[Any]


class StoreError(ShoalError):
    """The store cannot be reached or refused an operation (retryable)."""

    retryable = True


class Fenced(ShoalError):
    """Another controller took over the store: this one is no longer the leader."""


@dataclass(frozen=True)
class RevisionRow:
    namespace: str
    name: str
    revision: int
    created: float
    source: str
    template_hash: str
    spec: AppSpec
    changes: list[str]
    status: str


@dataclass(frozen=True)
class SecretRow:
    """One version of a secret as stored: the value only sealed (``secret_box.py``)."""

    namespace: str
    name: str
    version: int
    created: float
    updated: float
    size: int
    sealed: str


_SECRET_COLUMNS = "namespace, name, version, created, updated, size, sealed"


def _secret(r: Row) -> SecretRow:
    return SecretRow(
        str(r[0]), str(r[1]), int(r[2]), float(r[3]), float(r[4]), int(r[5]), str(r[6])
    )


@dataclass(frozen=True)
class Term:
    """The leader row: the term, who took it and when, and the write sequence number."""

    term: int
    holder: str
    since: float
    seq: int


class Store(ABC):
    """The store interface (the SQL is shared; a subclass provides the connection)."""

    #: a URL-ish description for logs
    where: str = ""

    def __init__(self) -> None:
        #: the term this controller took over with (None: not the leader)
        self.term: int | None = None
        self.store_id = ""

    # -- the dialect ----------------------------------------------------------------

    @abstractmethod
    def _execute(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Run one statement (``?`` placeholders); the rows it returns (maybe none)."""

    @abstractmethod
    def _begin(self) -> None:
        """Start a write transaction."""

    @abstractmethod
    def _end(self, commit: bool) -> None:
        """Commit (durably) or roll back the transaction in progress."""

    #: appended to the term row's SELECT inside a write transaction (row lock)
    _lock_term = ""

    @abstractmethod
    def close(self) -> None: ...

    # -- setup --------------------------------------------------------------------------

    def _init_rows(self, store_id: str) -> None:
        """The rows every store has (call inside the schema transaction)."""
        self._execute(
            "INSERT INTO meta (key, value) VALUES ('schema', ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (str(SCHEMA_VERSION),),
        )
        self._execute(
            "INSERT INTO meta (key, value) VALUES ('store_id', ?) ON CONFLICT (key) DO NOTHING",
            (store_id,),
        )
        self._execute(
            "INSERT INTO leader (id, term, holder, since, seq) VALUES (1, 0, '', 0, 0) "
            "ON CONFLICT (id) DO NOTHING"
        )
        self.store_id = str(self._execute("SELECT value FROM meta WHERE key = 'store_id'")[0][0])

    # -- leadership -----------------------------------------------------------------------

    def current_term(self) -> Term:
        rows = self._execute("SELECT term, holder, since, seq FROM leader WHERE id = 1")
        term, holder, since, seq = rows[0]
        return Term(int(term), str(holder), float(since), int(seq))

    def take_over(self, holder: str) -> int:
        """Become the store's writer: a new term, which fences every earlier leader."""
        self.term = None
        with self._locked() as (current, _):
            term = current + 1
            self._execute(
                "UPDATE leader SET term = ?, holder = ?, since = ? WHERE id = 1",
                (term, holder, time.time()),
            )
        self.term = term
        return term

    def step_down(self) -> None:
        """Stop writing (the term in the database stays: the next leader increments it)."""
        self.term = None

    @contextmanager
    def _locked(self) -> Iterator[tuple[int, int]]:
        """A write transaction holding the term row; yields the term and the sequence
        number in the database."""
        self._begin()
        try:
            rows = self._execute("SELECT term, seq FROM leader WHERE id = 1" + self._lock_term)
            yield int(rows[0][0]), int(rows[0][1])
        except BaseException:
            self._end(commit=False)
            raise
        self._end(commit=True)

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """Everything done through the yielded object commits together, or not at all;
        ``Fenced`` (nothing written) unless this store still holds the term it took over."""
        with self._locked() as (current, seq):
            mine = self.term
            if mine is None or current != mine:
                self.term = None
                raise Fenced(
                    f"the store's leader term is {current}, this controller's "
                    f"{'none' if mine is None else mine}: another controller leads"
                )
            self._execute("UPDATE leader SET seq = ? WHERE id = 1", (seq + 1,))
            yield Transaction(self, seq + 1)

    # -- reading --------------------------------------------------------------------------

    def load(self) -> dict[AppKey, AppRecord]:
        """Every app that reads back; a row that does not is logged and skipped (the
        others are served all the same)."""
        out: dict[AppKey, AppRecord] = {}
        for ns, name, state, rollout in self._execute(
            "SELECT namespace, name, state, rollout FROM apps ORDER BY namespace, name"
        ):
            key = AppKey(str(ns), str(name))
            try:
                out[key] = AppRecord(
                    AppState.model_validate_json(state),
                    Rollout.model_validate_json(rollout) if rollout else None,
                )
            except (ValidationError, ValueError) as err:
                log.error("a stored app does not read back; skipped", app=str(key), error=str(err))
        return out

    def keys(self) -> set[AppKey]:
        """Every app the store holds, readable or not."""
        return {
            AppKey(str(ns), str(name))
            for ns, name in self._execute("SELECT namespace, name FROM apps")
        }

    def last_revision(self, key: AppKey) -> int:
        rows = self._execute(
            "SELECT last_revision FROM counters WHERE namespace = ? AND name = ?", tuple(key)
        )
        return int(rows[0][0]) if rows else 0

    def history(self, key: AppKey) -> list[RevisionRow]:
        rows = self._execute(
            "SELECT namespace, name, revision, created, source, template_hash, spec, changes, "
            "status FROM revisions WHERE namespace = ? AND name = ? ORDER BY revision",
            tuple(key),
        )
        return [r for r in (_row(row) for row in rows) if r is not None]

    def revision(self, key: AppKey, revision: int) -> RevisionRow | None:
        rows = self._execute(
            "SELECT namespace, name, revision, created, source, template_hash, spec, changes, "
            "status FROM revisions WHERE namespace = ? AND name = ? AND revision = ?",
            (*key, revision),
        )
        return _row(rows[0]) if rows else None

    # -- secrets --------------------------------------------------------------------------

    def meta(self, key: str) -> str | None:
        rows = self._execute("SELECT value FROM meta WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    def secret(self, namespace: str, name: str, version: int | None = None) -> SecretRow | None:
        """One version of a secret (None: the current one); None when not stored."""
        if version is None:
            rows = self._execute(
                f"SELECT {_SECRET_COLUMNS} FROM secrets WHERE namespace = ? AND name = ? "
                "ORDER BY version DESC LIMIT 1",
                (namespace, name),
            )
        else:
            rows = self._execute(
                f"SELECT {_SECRET_COLUMNS} FROM secrets WHERE namespace = ? AND name = ? "
                "AND version = ?",
                (namespace, name, version),
            )
        return _secret(rows[0]) if rows else None

    def secrets(self, namespace: str | None = None) -> list[SecretRow]:
        """The current version of every secret (of one namespace), sorted."""
        where, params = ("WHERE s.namespace = ? ", (namespace,)) if namespace else ("", ())
        rows = self._execute(
            f"SELECT {', '.join('s.' + c for c in _SECRET_COLUMNS.split(', '))} FROM secrets s "
            "JOIN (SELECT namespace, name, MAX(version) AS version FROM secrets "
            "GROUP BY namespace, name) m ON s.namespace = m.namespace AND s.name = m.name "
            f"AND s.version = m.version {where}ORDER BY s.namespace, s.name",
            params,
        )
        return [_secret(r) for r in rows]

    def secret_versions(self, namespace: str) -> dict[str, int]:
        """Name -> current version of every secret of ``namespace``."""
        rows = self._execute(
            "SELECT name, MAX(version) FROM secrets WHERE namespace = ? GROUP BY name",
            (namespace,),
        )
        return {str(name): int(version) for name, version in rows}


def _row(r: Row) -> RevisionRow | None:
    try:
        return RevisionRow(
            namespace=str(r[0]),
            name=str(r[1]),
            revision=int(r[2]),
            created=float(r[3]),
            source=str(r[4]),
            template_hash=str(r[5]),
            spec=AppSpec.model_validate_json(str(r[6])),
            changes=list(json.loads(str(r[7]))),
            status=str(r[8]),
        )
    except (ValidationError, ValueError) as err:
        log.error("a stored revision does not read back; skipped", revision=r[2], error=str(err))
        return None


class Transaction:
    def __init__(self, store: Store, seq: int) -> None:
        self._x = store._execute
        self.store_id = store.store_id
        #: this transaction's write sequence number (stamped on every app it writes)
        self.seq = seq

    def allocate_revision(self, key: AppKey) -> int:
        """The next revision number of ``key`` (increasing, never reused)."""
        rows = self._x(
            "SELECT last_revision FROM counters WHERE namespace = ? AND name = ?", tuple(key)
        )
        revision = (int(rows[0][0]) if rows else 0) + 1
        self._x(
            "INSERT INTO counters (namespace, name, last_revision) VALUES (?, ?, ?) "
            "ON CONFLICT (namespace, name) DO UPDATE SET last_revision = excluded.last_revision",
            (*key, revision),
        )
        return revision

    def put(self, record: AppRecord) -> AppRecord:
        """Store the record, stamped with this store's id and sequence number: the stamped
        record (what to publish) is returned."""
        state = record.state.model_copy(update={"store_id": self.store_id, "store_seq": self.seq})
        record = AppRecord(state, record.rollout)
        self._x(
            "INSERT INTO apps (namespace, name, state, rollout) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (namespace, name) DO UPDATE SET state = excluded.state, "
            "rollout = excluded.rollout",
            (
                state.namespace,
                state.name,
                state.model_dump_json(),
                record.rollout.model_dump_json() if record.rollout else None,
            ),
        )
        return record

    def add_revision(
        self,
        key: AppKey,
        revision: int,
        created: float,
        source: str,
        spec: AppSpec,
        changes: list[str],
        current: int,
    ) -> None:
        self._x(
            "INSERT INTO revisions (namespace, name, revision, created, source, "
            "template_hash, spec, changes, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, '') "
            "ON CONFLICT (namespace, name, revision) DO UPDATE SET created = excluded.created, "
            "source = excluded.source, template_hash = excluded.template_hash, "
            "spec = excluded.spec, changes = excluded.changes, status = ''",
            (
                *key,
                revision,
                created,
                source,
                spec.template_hash(),
                spec.model_dump_json(),
                json.dumps(changes),
            ),
        )
        self._x(
            "DELETE FROM revisions WHERE namespace = ? AND name = ? AND revision != ? AND "
            "revision NOT IN (SELECT revision FROM revisions WHERE namespace = ? AND name = ? "
            "ORDER BY revision DESC LIMIT ?)",
            (*key, current, *key, HISTORY_LIMIT),
        )

    def set_status(self, key: AppKey, revision: int, status: str) -> None:
        self._x(
            "UPDATE revisions SET status = ? WHERE namespace = ? AND name = ? AND revision = ?",
            (status, *key, revision),
        )

    def delete(self, key: AppKey) -> None:
        """Forget the app and its history; the revision counter stays."""
        self._x("DELETE FROM apps WHERE namespace = ? AND name = ?", tuple(key))
        self._x("DELETE FROM revisions WHERE namespace = ? AND name = ?", tuple(key))

    def put_secret(self, row: SecretRow) -> None:
        """Store one new version of a secret; versions beyond ``SECRET_HISTORY`` go."""
        self._x(
            f"INSERT INTO secrets ({_SECRET_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (row.namespace, row.name, row.version, row.created, row.updated, row.size, row.sealed),
        )
        self._x(
            "DELETE FROM secrets WHERE namespace = ? AND name = ? AND version <= ?",
            (row.namespace, row.name, row.version - SECRET_HISTORY),
        )

    def delete_secret(self, namespace: str, name: str) -> None:
        """Forget every version of a secret."""
        self._x("DELETE FROM secrets WHERE namespace = ? AND name = ?", (namespace, name))

    def set_meta(self, key: str, value: str) -> None:
        self._x(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )
