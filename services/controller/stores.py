"""Open the store a location names: ``postgresql://...`` (or ``postgres://``) is
PostgreSQL, anything else a SQLite file. Both implement ``services.controller.store.Store``."""

from __future__ import annotations

from pathlib import Path

from services.controller.store import Store
from services.controller.store_sqlite import SqliteStore


def open_store(location: str | Path) -> Store:
    text = str(location)
    if text.startswith(("postgresql://", "postgres://")):
        # imported here: psycopg costs ~150 ms of start-up that SQLite users need not pay
        from services.controller.store_postgres import PostgresStore

        return PostgresStore(text)
    return SqliteStore(Path(text))
