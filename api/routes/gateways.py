"""``/gateways``: the list of the caller's homes (offline first, since when), provision
(admins; the MQTT password is shown once), revoke, status.

A gateway is in scope through its patient. Status is what ingest recorded from the retained
status topic and the gateway's last will (ingest/status.py): ``online``/``offline`` since
when (``unknown`` before the first status), the last status message, the last contact and
the devices. Battery levels: each device's last level and when the gateway received it, as
its online status reported them (ingest records them on ``devices``); null until a gateway
reports one (a device without a Battery Service, an older gateway). The list carries each
gateway's lowest level, so that a nurse sees which homes need a battery change.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from api.audit import audit
from api.errors import Conflict, NotFound
from api.params import GATEWAY_ID_PATTERN, PATIENT_ID_PATTERN, GatewayId
from api.queries import gateways as q
from api.queries.patients import get_patient
from api.security import Admin, Conn, CurrentUser
from vitalvagt.db.gateways import provision_gateway

router = APIRouter(prefix="/gateways", tags=["gateways"])


class Provision(BaseModel):
    gateway_id: str = Field(pattern=GATEWAY_ID_PATTERN, max_length=63)
    patient_id: str = Field(pattern=PATIENT_ID_PATTERN, max_length=63)


class Revoke(BaseModel):
    reason: str = Field(min_length=3, max_length=1000, pattern=r"^[^\x00]*$")


class Provisioned(BaseModel):
    gateway_id: str
    patient_id: str
    mqtt_username: str
    mqtt_password: str = Field(description="shown this once; stored only hashed")


class Device(BaseModel):
    address: str
    model: str | None
    serial: str | None
    firmware: str | None
    last_seen_at: datetime | None
    active: bool
    battery_level: int | None = Field(
        default=None,
        ge=0,
        le=100,
        description="percent, the device's last reported level; null: not known (no Battery "
        "Service, or its gateway has not reported one)",
    )
    battery_at: datetime | None = Field(
        default=None, description="when the gateway received battery_level"
    )


class GatewayStatus(BaseModel):
    id: str
    patient_id: str
    active: bool
    created_at: datetime
    last_seen_at: datetime | None = Field(description="the last readings the hub received")
    state: str = Field(description="online, offline (its last will) or unknown")
    since: datetime | None = Field(description="when the hub learned of the current state")
    status_at: datetime | None = Field(description="the last status message the hub received")
    last_status: dict[str, Any] | None
    devices: list[Device]


class GatewaySummary(BaseModel):
    id: str
    patient_id: str
    team_id: str
    state: str = Field(description="online, offline (its last will) or unknown")
    since: datetime | None = Field(description="when the hub learned of the current state")
    status_at: datetime | None
    last_seen_at: datetime | None
    lowest_battery: int | None = Field(
        default=None,
        ge=0,
        le=100,
        description="percent: the lowest battery level of its active devices; null: none known",
    )


def _changed(request: Request) -> None:
    hook = request.app.state.on_gateways_changed
    if hook is not None:
        hook()


@router.get("")
def list_gateways(
    conn: Conn,
    user: CurrentUser,
    state: Annotated[str | None, Query(pattern="^(online|offline|unknown)$")] = None,
    team: Annotated[str | None, Query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> list[GatewaySummary]:
    """The active gateways of the caller's teams: offline ones first, the longest offline
    first, then unknown, then online (``state`` for one of them)."""
    rows = q.list_gateways(conn, user.scope, state=state, team=team, limit=limit)
    audit(conn, user, "list_gateways", None, state=state, team=team, rows=len(rows))
    return [GatewaySummary(**r) for r in rows]


@router.post("", status_code=201)
def provision(body: Provision, request: Request, conn: Conn, user: Admin) -> Provisioned:
    """Create (or re-key) the gateway of a patient of the admin's teams."""
    if get_patient(conn, user.scope, body.patient_id) is None:
        raise NotFound(f"patient {body.patient_id!r} is not known")
    owner = q.gateway_owner(conn, body.gateway_id)
    if owner is not None and owner[1] != body.patient_id:
        raise Conflict(f"gateway id {body.gateway_id!r} is taken; choose another")
    with conn.transaction():
        password = provision_gateway(conn, body.gateway_id, patient_id=body.patient_id)
        audit(
            conn,
            user,
            "provision_gateway",
            body.patient_id,
            gateway=body.gateway_id,
            rekeyed=owner is not None,
        )
    _changed(request)
    return Provisioned(
        gateway_id=body.gateway_id,
        patient_id=body.patient_id,
        mqtt_username=body.gateway_id,
        mqtt_password=password,
    )


@router.post("/{gateway_id}/revoke")
def revoke(
    gateway_id: GatewayId, body: Revoke, request: Request, conn: Conn, user: Admin
) -> GatewayStatus:
    """Switch the gateway off (with the reason): the broker no longer accepts it."""
    with conn.transaction():
        if not q.revoke_gateway(conn, user.scope, gateway_id):
            raise NotFound(f"gateway {gateway_id!r} is not known")
        g = q.get_gateway(conn, user.scope, gateway_id)
        assert g is not None
        audit(conn, user, "revoke_gateway", g["patient_id"], reason=body.reason, gateway=gateway_id)
    _changed(request)
    return GatewayStatus(**g)


@router.get("/{gateway_id}")
def status(gateway_id: GatewayId, conn: Conn, user: CurrentUser) -> GatewayStatus:
    """Online or offline, last contact and devices."""
    g = q.get_gateway(conn, user.scope, gateway_id)
    if g is None:
        raise NotFound(f"gateway {gateway_id!r} is not known")
    audit(conn, user, "read_gateway", g["patient_id"], gateway=gateway_id)
    return GatewayStatus(**g)
