"""The clinician API's exceptions: one base; each becomes an ``application/problem+json``
answer with its status (api/app.py registers the handler)."""

from __future__ import annotations

from vitalvagt.errors import VitalvagtError


class ApiError(VitalvagtError):
    """Base of every error the API raises on purpose; ``status`` is the HTTP status."""

    status = 500
    title = "request failed"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotFound(ApiError):
    status = 404
    title = "not found"
