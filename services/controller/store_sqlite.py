"""The embedded store: one SQLite file, ``<data-dir>/controller.db``.

WAL mode with ``synchronous=FULL``: a commit is on disk (the WAL is fsynced) before it
returns, so an acknowledged apply survives ``kill -9`` and power loss. Write transactions
are ``BEGIN IMMEDIATE`` (the database's write lock, held until commit): the term check and
the writes of one transaction cannot interleave with another controller's ``take_over`` on
the same file.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from services.controller.store import Row, Store, StoreError

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
CREATE TABLE IF NOT EXISTS secrets (
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    size INTEGER NOT NULL,
    sealed TEXT NOT NULL,
    PRIMARY KEY (namespace, name, version)
);
CREATE TABLE IF NOT EXISTS leader (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    term INTEGER NOT NULL,
    holder TEXT NOT NULL,
    since REAL NOT NULL,
    seq INTEGER NOT NULL
);
"""


class SqliteStore(Store):
    def __init__(self, path: Path | str) -> None:
        super().__init__()
        self.path = Path(path)
        self.where = str(self.path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA busy_timeout=10000")
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.executescript(SCHEMA)
            self._begin()
            try:
                self._init_rows(uuid.uuid4().hex)
            except BaseException:
                self._end(commit=False)
                raise
            self._end(commit=True)
        except sqlite3.Error as err:
            raise StoreError(f"cannot open the SQLite store {self.path}: {err}") from err

    def close(self) -> None:
        self.db.close()

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        try:
            return self.db.execute(sql, tuple(params)).fetchall()
        except sqlite3.Error as err:
            raise StoreError(f"SQLite store {self.path}: {err}") from err

    def _begin(self) -> None:
        self._execute("BEGIN IMMEDIATE")

    def _end(self, commit: bool) -> None:
        if commit:
            self._execute("COMMIT")
        elif self.db.in_transaction:
            self._execute("ROLLBACK")
