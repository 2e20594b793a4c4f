"""Ingest's exceptions."""

from vitalvagt.db.connect import DatabaseUnavailable as CoreDatabaseUnavailable
from vitalvagt.errors import VitalvagtError


class IngestError(VitalvagtError):
    """Base of every error ingest raises on purpose."""


class DatabaseUnavailable(IngestError, CoreDatabaseUnavailable):
    """The database refused or dropped the connection; the batch is retried, not lost."""


class StorageRefused(IngestError):
    """The database refused a write for a reason other than being unavailable (a constraint,
    a value it cannot hold): retrying the same write would be refused again."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"storage_refused: the database refused it: {detail}")
        self.reason = str(self)
