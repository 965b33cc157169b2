"""The controller's source of truth: apps and their revision history in SQLite.

One file, ``<data-dir>/controller.db``, in WAL mode. Commands are rare, so the store is
synchronous and every change of one command is one transaction: either every app of an
``apply`` changes, or none does.

Tables:

- ``apps``: one row per app, the retained ``AppState`` and the private ``Rollout`` as JSON;
- ``revisions``: the history, one row per (app, revision): spec, source, diff, status;
- ``counters``: the last revision handed out per app; kept when the app is deleted, so a
  revision number is never reused (agents label containers with it).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from core.keys import AppKey
from core.spec import AppSpec
from core.state import AppState
from services.controller.apps import AppRecord
from services.controller.rollout import Rollout

SCHEMA_VERSION = 1
#: Revisions kept per app (the oldest beyond this are pruned; the current one never is).
HISTORY_LIMIT = 50

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS apps (
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    state TEXT NOT NULL,
    rollout TEXT,
    PRIMARY KEY (namespace, name)
);
CREATE TABLE IF NOT EXISTS revisions (
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    revision INTEGER NOT NULL,
    created REAL NOT NULL,
    source TEXT NOT NULL,
    template_hash TEXT NOT NULL,
    spec TEXT NOT NULL,
    changes TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (namespace, name, revision)
);
CREATE TABLE IF NOT EXISTS counters (
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    last_revision INTEGER NOT NULL,
    PRIMARY KEY (namespace, name)
);
"""


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


class Store:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA busy_timeout=5000")
        self.db.executescript(SCHEMA)
        self.db.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', ?)", (str(SCHEMA_VERSION),)
        )

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """Everything done through the yielded object commits together, or not at all."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield Transaction(self.db)
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # -- reading --------------------------------------------------------------------

    def load(self) -> dict[AppKey, AppRecord]:
        out: dict[AppKey, AppRecord] = {}
        for ns, name, state, rollout in self.db.execute(
            "SELECT namespace, name, state, rollout FROM apps ORDER BY namespace, name"
        ):
            out[AppKey(ns, name)] = AppRecord(
                AppState.model_validate_json(state),
                Rollout.model_validate_json(rollout) if rollout else None,
            )
        return out

    def last_revision(self, key: AppKey) -> int:
        row = self.db.execute(
            "SELECT last_revision FROM counters WHERE namespace = ? AND name = ?", key
        ).fetchone()
        return int(row[0]) if row else 0

    def history(self, key: AppKey) -> list[RevisionRow]:
        rows = self.db.execute(
            "SELECT namespace, name, revision, created, source, template_hash, spec, changes, "
            "status FROM revisions WHERE namespace = ? AND name = ? ORDER BY revision",
            key,
        ).fetchall()
        return [_row(r) for r in rows]

    def revision(self, key: AppKey, revision: int) -> RevisionRow | None:
        row = self.db.execute(
            "SELECT namespace, name, revision, created, source, template_hash, spec, changes, "
            "status FROM revisions WHERE namespace = ? AND name = ? AND revision = ?",
            (*key, revision),
        ).fetchone()
        return _row(row) if row else None


def _row(r: tuple[object, ...]) -> RevisionRow:
    return RevisionRow(
        namespace=str(r[0]),
        name=str(r[1]),
        revision=int(r[2]),  # type: ignore[call-overload]
        created=float(r[3]),  # type: ignore[arg-type]
        source=str(r[4]),
        template_hash=str(r[5]),
        spec=AppSpec.model_validate_json(str(r[6])),
        changes=list(json.loads(str(r[7]))),
        status=str(r[8]),
    )


class Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def allocate_revision(self, key: AppKey) -> int:
        """The next revision number of ``key`` (increasing, never reused)."""
        row = self.db.execute(
            "SELECT last_revision FROM counters WHERE namespace = ? AND name = ?", key
        ).fetchone()
        revision = (int(row[0]) if row else 0) + 1
        self.db.execute(
            "INSERT INTO counters (namespace, name, last_revision) VALUES (?, ?, ?) "
            "ON CONFLICT (namespace, name) DO UPDATE SET last_revision = excluded.last_revision",
            (*key, revision),
        )
        return revision

    def put(self, record: AppRecord) -> None:
        state = record.state
        self.db.execute(
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
        self.db.execute(
            "INSERT OR REPLACE INTO revisions (namespace, name, revision, created, source, "
            "template_hash, spec, changes, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, '')",
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
        self.db.execute(
            "DELETE FROM revisions WHERE namespace = ? AND name = ? AND revision != ? AND "
            "revision NOT IN (SELECT revision FROM revisions WHERE namespace = ? AND name = ? "
            "ORDER BY revision DESC LIMIT ?)",
            (*key, current, *key, HISTORY_LIMIT),
        )

    def set_status(self, key: AppKey, revision: int, status: str) -> None:
        self.db.execute(
            "UPDATE revisions SET status = ? WHERE namespace = ? AND name = ? AND revision = ?",
            (status, *key, revision),
        )

    def delete(self, key: AppKey) -> None:
        """Forget the app and its history; the revision counter stays."""
        self.db.execute("DELETE FROM apps WHERE namespace = ? AND name = ?", key)
        self.db.execute("DELETE FROM revisions WHERE namespace = ? AND name = ?", key)
