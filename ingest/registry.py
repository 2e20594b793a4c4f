"""The hub's registry as ingest sees it: which gateways are known and active, whose patient
each serves, which devices are unbound; and the check of a decoded message against it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

import psycopg

from ingest.messages import Accepted, Decoded, Message, Rejected, decode_message


@dataclass(frozen=True, slots=True)
class GatewayEntry:
    patient_id: str | None
    active: bool
    inactive_devices: frozenset[str]


class GatewayDirectory:
    """Known gateways, their patients and unbound devices; reloaded on a miss (at most 1/s)."""

    def __init__(self, *, min_reload_s: float = 1.0) -> None:
        self._entries: dict[str, GatewayEntry] = {}
        self._loaded_at = 0.0
        self._min_reload_s = min_reload_s

    def reload(self, conn: psycopg.Connection) -> None:
        rows = conn.execute(
            "SELECT g.id, g.patient_id, g.active AND coalesce(p.active, true),"
            " coalesce(array_agg(d.address) FILTER (WHERE NOT d.active), '{}')"
            " FROM gateways g LEFT JOIN patients p ON p.id = g.patient_id"
            " LEFT JOIN devices d ON d.gateway_id = g.id GROUP BY g.id, p.active"
        ).fetchall()
        self._entries = {r[0]: GatewayEntry(r[1], r[2], frozenset(r[3])) for r in rows}
        self._loaded_at = time.monotonic()

    def get(self, conn: psycopg.Connection, gateway_id: str) -> GatewayEntry | None:
        entry = self._entries.get(gateway_id)
        if entry is None and time.monotonic() - self._loaded_at >= self._min_reload_s:
            self.reload(conn)
            entry = self._entries.get(gateway_id)
        return entry


def check_registry(
    decoded: Decoded | Rejected, directory: GatewayDirectory, conn: psycopg.Connection
) -> Accepted | Rejected:
    """The registry checks: the gateway is known, active and has a patient; the device is
    bound. Builds the rows to store."""
    if isinstance(decoded, Rejected):
        return decoded
    msg, gateway_id, batch = decoded.message, decoded.gateway_id, decoded.batch
    entry = directory.get(conn, gateway_id)
    if entry is None:
        return Rejected(
            msg,
            gateway_id,
            "unknown_gateway",
            f"gateway {gateway_id!r} is not registered; register it, then replay",
        )
    if not entry.active:
        return Rejected(
            msg,
            gateway_id,
            "gateway_inactive",
            f"gateway {gateway_id!r} or its patient is deactivated",
        )
    if entry.patient_id is None:
        return Rejected(
            msg,
            gateway_id,
            "gateway_unassigned",
            f"gateway {gateway_id!r} has no patient; assign one, then replay",
        )
    patient_id, inactive = entry.patient_id, entry.inactive_devices
    rows: list[tuple[object, ...]] = []
    devices: dict[str, tuple[str | None, str | None]] = {}
    for i, o in enumerate(batch.observations):
        device = o.device
        address = device.address.upper()
        if inactive and address in inactive:
            return Rejected(
                msg,
                gateway_id,
                "device_not_bound",
                f"observations[{i}].device.address: device {address} is unbound"
                f" from gateway {gateway_id!r}",
            )
        devices[address] = (device.model, device.serial)
        rows.append((
            o.id, o.measured_at, o.received_at, patient_id, gateway_id, address,
            o.kind.value, o.value, o.unit, o.time_source.value, o.reading_id,
            [f.value for f in o.flags] if o.flags else [],
            o.body_site.value if o.body_site else None, device.model, device.serial,
        ))  # fmt: skip
    return Accepted(msg, gateway_id, patient_id, rows, devices, batch.batch_id)


def validate(
    msg: Message,
    directory: GatewayDirectory,
    conn: psycopg.Connection,
    *,
    now: datetime | None = None,
) -> Accepted | Rejected:
    """Check one message against the wire format and the registry; never raises WireError."""
    return check_registry(decode_message(msg, now=now), directory, conn)
