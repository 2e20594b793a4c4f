"""Ingest's exceptions."""

from vitalvagt.errors import VitalvagtError


class IngestError(VitalvagtError):
    """Base of every error ingest raises on purpose."""


class DatabaseUnavailable(IngestError):
    """The database refused or dropped the connection; the batch is retried, not lost."""
