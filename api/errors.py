"""The clinician API's exceptions and problem answers (RFC 9457).

One base, ``ApiError``; each subclass names a failure and becomes an
``application/problem+json`` answer with its status (api/app.py registers the handlers).
``PROBLEM_RESPONSES`` puts every problem the API can answer into the OpenAPI description.
"""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel

from vitalvagt.errors import VitalvagtError

PROBLEM = "application/problem+json"


class ApiError(VitalvagtError):
    """Base of every error the API raises on purpose; ``status`` is the HTTP status."""

    status = 500
    title = "request failed"

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}


class BadRequest(ApiError):
    status = 400
    title = "bad request"


class Unauthorized(ApiError):
    """No token, or one that is expired, wrongly signed, for another audience or unsigned."""

    status = 401
    title = "not authenticated"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(ApiError):
    """The user's role may not do this (never used to hide another team's data: that is a
    404)."""

    status = 403
    title = "forbidden"


class NotFound(ApiError):
    status = 404
    title = "not found"


class Conflict(ApiError):
    """The resource is not in a state that allows the change (a stale click)."""

    status = 409
    title = "conflict"


class PayloadTooLarge(ApiError):
    status = 413
    title = "request too large"


class Unprocessable(ApiError):
    status = 422
    title = "invalid request"


class TooManyRequests(ApiError):
    status = 429
    title = "too many requests"

    def __init__(self, detail: str, *, retry_after_s: int) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after_s)})


class FieldProblem(BaseModel):
    field: str
    reason: str


class Problem(BaseModel):
    """An RFC 9457 problem: ``detail`` is a sentence, or a list of fields and reasons."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | list[FieldProblem]


def problem(
    status: int, title: str, detail: Any, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


# Problem's JSON Schema written out (no $defs, so that it sits inline in OpenAPI).
PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {
            "anyOf": [
                {"type": "string"},
                {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["field", "reason"],
                        "properties": {"field": {"type": "string"}, "reason": {"type": "string"}},
                    },
                },
            ]
        },
    },
}


def _resp(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {PROBLEM: {"schema": PROBLEM_SCHEMA}},
    }


# Every route answers these (the shared default of every router).
PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _resp("Bad request (a NUL or other byte the API refuses)"),
    401: _resp("Not authenticated: no token, or an invalid or expired one"),
    403: _resp("The user's role may not do this"),
    404: _resp("Not found, or not in the user's teams"),
    409: _resp("Conflict: the resource's state does not allow the change"),
    413: _resp("Request body too large"),
    422: _resp("Invalid request: the fields and the reasons"),
    429: _resp("Too many requests"),
    500: _resp("Server error"),
}
# The two routes that need no token.
PUBLIC_RESPONSES = {k: v for k, v in PROBLEM_RESPONSES.items() if k not in (401, 403, 404)}
