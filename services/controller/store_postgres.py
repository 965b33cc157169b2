"""The external store: PostgreSQL (``--store postgresql://user:pass@host:port/db``).

For controllers on several machines: PostgreSQL keeps the data (and replicates it, if it is
set up to: Shoal has no replication of its own). One connection per controller, in
autocommit mode with explicit transactions; a lost connection is reopened on the next call.
Calls are synchronous (commands are rare; the store is the controller's only work): each is
bounded by ``connect_timeout``, ``statement_timeout``/``lock_timeout`` (10 s) and TCP
keepalives, so an unreachable server fails a command (``StoreError``) instead of hanging.
Commits are durable as PostgreSQL makes them (``synchronous_commit`` on, its default, is
forced for this session). Write transactions lock the term row (``SELECT ... FOR UPDATE``),
so a ``take_over`` (an ``UPDATE`` of that row) waits for the write in progress, and every
write after it sees the new term.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import psycopg

from services.controller.store import Row, Store, StoreError

SCHEMA = [
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS apps (
        namespace TEXT NOT NULL,
        name TEXT NOT NULL,
        state TEXT NOT NULL,
        rollout TEXT,
        PRIMARY KEY (namespace, name))""",
    """CREATE TABLE IF NOT EXISTS revisions (
        namespace TEXT NOT NULL,
        name TEXT NOT NULL,
        revision BIGINT NOT NULL,
        created DOUBLE PRECISION NOT NULL,
        source TEXT NOT NULL,
        template_hash TEXT NOT NULL,
        spec TEXT NOT NULL,
        changes TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (namespace, name, revision))""",
    """CREATE TABLE IF NOT EXISTS counters (
        namespace TEXT NOT NULL,
        name TEXT NOT NULL,
        last_revision BIGINT NOT NULL,
        PRIMARY KEY (namespace, name))""",
    """CREATE TABLE IF NOT EXISTS secrets (
        namespace TEXT NOT NULL,
        name TEXT NOT NULL,
        version BIGINT NOT NULL,
        created DOUBLE PRECISION NOT NULL,
        updated DOUBLE PRECISION NOT NULL,
        size BIGINT NOT NULL,
        sealed TEXT NOT NULL,
        PRIMARY KEY (namespace, name, version))""",
    """CREATE TABLE IF NOT EXISTS leader (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        term BIGINT NOT NULL,
        holder TEXT NOT NULL,
        since DOUBLE PRECISION NOT NULL,
        seq BIGINT NOT NULL)""",
]
#: an advisory lock key: controllers creating the schema at once take turns
SCHEMA_LOCK = 0x5E0A1


def _redact(url: str) -> str:
    head, at, tail = url.rpartition("@")
    if not at:
        return url
    scheme, _, _ = head.partition("://")
    return f"{scheme}://***@{tail}"


class PostgresStore(Store):
    _lock_term = " FOR UPDATE"

    def __init__(self, url: str, *, connect_timeout: float = 5.0) -> None:
        super().__init__()
        self.url = url
        self.where = _redact(url)
        self.connect_timeout = connect_timeout
        self._conn: psycopg.Connection[Any] | None = None
        self._begin()
        try:
            self._execute("SELECT pg_advisory_xact_lock(?)", (SCHEMA_LOCK,))
            for statement in SCHEMA:
                self._execute(statement)
            self._init_rows(uuid.uuid4().hex)
        except BaseException:
            self._end(commit=False)
            raise
        self._end(commit=True)

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            try:
                self._conn = psycopg.connect(
                    self.url,
                    autocommit=True,
                    connect_timeout=max(1, round(self.connect_timeout)),
                    # a server that vanished without a word must not hang a call for the
                    # kernel's two hours: TCP keepalives and a user timeout of 10 s
                    keepalives=1,
                    keepalives_idle=5,
                    keepalives_interval=2,
                    keepalives_count=3,
                    tcp_user_timeout=10000,
                    options="-c synchronous_commit=on -c statement_timeout=10000 "
                    "-c lock_timeout=10000",
                )
            except psycopg.Error as err:
                raise StoreError(f"cannot reach the PostgreSQL store {self.where}: {err}") from err
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        conn = self._connection()
        try:
            cursor = conn.execute(sql.replace("?", "%s"), tuple(params))
            return list(cursor.fetchall()) if cursor.description is not None else []
        except psycopg.Error as err:
            if conn.broken:
                self.close()
            raise StoreError(f"PostgreSQL store {self.where}: {err}") from err

    def _begin(self) -> None:
        self._execute("BEGIN")

    def _end(self, commit: bool) -> None:
        if commit:
            self._execute("COMMIT")
            return
        conn = self._conn
        if conn is not None and not conn.closed and not conn.broken:
            try:
                conn.execute("ROLLBACK")
            except psycopg.Error:
                self.close()
