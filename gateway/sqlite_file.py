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

    def _connect(self, schema: str) -> None:
        """Open the file the way every gateway SQLite file is opened, then create ``schema``.

        Several processes may use it at once (the running gateway and a CLI command): WAL
        mode, autocommit (short transactions), a busy time-out; one connection shared by
        threads behind ``self._lock``.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(schema)
        except BaseException:
            db.close()
            raise
        self._db = db

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
