"""The persistent store: SQLite (WAL) under GARRISON_HOME with numbered migrations."""

from garrison.store.db import Store, open_store

__all__ = ["Store", "open_store"]
