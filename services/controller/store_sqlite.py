"""The embedded store: one SQLite file, ``<data-dir>/controller.db``.

WAL mode with ``synchronous=FULL``: a commit is on disk (the WAL is fsynced) before it
returns, so an acknowledged apply survives ``kill -9`` and power loss. Write transactions
are ``BEGIN IMMEDIATE`` (the database's write lock, held until commit): the term check and
the writes of one transaction cannot interleave with another controller's ``take_over`` on
the same file.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from core.logs import get_logger
from services.controller.store import Row, Store, StoreError

log = get_logger("shoal.controller.store")

#: The files SQLite keeps for one database (WAL mode): the database, its log, its index.
SIDE_FILES = ("", "-wal", "-shm")
#: Group and other permission bits: none of them on the store's files or its folder.
OTHERS = stat.S_IRWXG | stat.S_IRWXO

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


def make_private(path: Path) -> None:
    """The store holds every spec (env values included) and the sealed secrets: its folder
    is made 0700 and its files 0600 before SQLite opens them (SQLite gives the WAL and
    shared-memory files the database's own mode).

    Files already there with looser modes are tightened to 0600, with a warning: they are
    the store's own. A folder already there is left as it is, with a warning: it may be
    the operator's (``--data-dir /srv``), and the files in it are private anyway."""
    folder = path.parent
    if not folder.exists():
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    else:
        mode = folder.stat().st_mode
        if mode & OTHERS:
            log.warning(
                "the store's folder is open to other users: chmod 700 it",
                path=str(folder),
                mode=oct(stat.S_IMODE(mode)),
            )
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass
    for suffix in SIDE_FILES:
        side = Path(f"{path}{suffix}")
        try:
            mode = side.stat().st_mode
        except FileNotFoundError:
            continue
        if mode & OTHERS:
            side.chmod(0o600)
            log.warning(
                "the store's file was open to other users; made 0600",
                path=str(side),
                was=oct(stat.S_IMODE(mode)),
            )


class SqliteStore(Store):
    def __init__(self, path: Path | str) -> None:
        super().__init__()
        self.path = Path(path)
        self.where = str(self.path)
        if str(path) != ":memory:":
            try:
                make_private(self.path)
            except OSError as err:
                raise StoreError(f"cannot make the SQLite store {self.path}: {err}") from err
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
