"""Path and query parameters shared by the routers, validated against the schema's own
limits so that nothing longer or stranger reaches the database or is echoed back."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import Path

from api.errors import Unprocessable

# patients.id's CHECK constraint (0001_initial.sql)
PATIENT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9-]{2,62}$"
# gateways.id's CHECK constraint
GATEWAY_ID_PATTERN = r"^[a-z0-9][a-z0-9-]{2,62}$"

PatientId = Annotated[
    str, Path(pattern=PATIENT_ID_PATTERN, max_length=63, description="the patient's pseudonym")
]
GatewayId = Annotated[str, Path(pattern=GATEWAY_ID_PATTERN, max_length=63)]
AlertId = Annotated[int, Path(ge=1, le=2**63 - 1)]


def check_window(since: datetime | None, until: datetime | None) -> None:
    """``until`` must come after ``since`` (it gave 200 [] before)."""
    if since is not None and until is not None and until <= since:
        raise Unprocessable("query.until: must be after query.since")
    for name, t in (("since", since), ("until", until)):
        if t is not None and t.tzinfo is None:
            raise Unprocessable(f"query.{name}: needs a time zone (e.g. 2026-01-01T00:00Z)")
