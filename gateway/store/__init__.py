"""The control store: one SQLite database (``<data_dir>/control.db``) through sqlite-utils."""

from gateway.store.db import Store, open_store

__all__ = ["Store", "open_store"]
