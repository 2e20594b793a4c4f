"""The life cycle the gateway's SQLite files share (pairing list, notices)."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Self


class SqliteFile:
    """One connection behind a lock; subclasses open it and create their tables."""

    what = "database"  # for the error when used unopened

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def open(self) -> Self:
        raise NotImplementedError

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __enter__(self) -> Self:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError(f"{self.what} {self.path} is not open")
        return self._db
