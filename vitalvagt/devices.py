"""The types of home-monitoring device, each by the Bluetooth health service it offers.

One list for the tablet (pairing, scanning), the simulator (emulated devices, cohorts) and
the hub. Reference section 2 gives the services; the value of each type is what the pairing
list stores and the CLI accepts.
"""

from __future__ import annotations

from enum import StrEnum


class DeviceType(StrEnum):
    BP = "bp"  # blood-pressure monitor (cuff)
    OXIMETER = "oximeter"  # pulse oximeter (SpO2 and pulse)
    SCALE = "scale"
    THERMOMETER = "thermometer"
    HR = "hr"  # heart-rate sensor


# The 16-bit UUID of the health service each type advertises.
SERVICE_UUIDS: dict[DeviceType, int] = {
    DeviceType.BP: 0x1810,
    DeviceType.OXIMETER: 0x1822,
    DeviceType.SCALE: 0x181D,
    DeviceType.THERMOMETER: 0x1809,
    DeviceType.HR: 0x180D,
}
_BY_SERVICE = {uuid16: kind for kind, uuid16 in SERVICE_UUIDS.items()}


def service_uuid(kind: DeviceType) -> str:
    """The 128-bit form bleak uses for service UUIDs."""
    return f"0000{SERVICE_UUIDS[kind]:04x}-0000-1000-8000-00805f9b34fb"


def type_of_service(uuid16: int) -> DeviceType | None:
    """The device type offering the health service ``uuid16``, if any."""
    return _BY_SERVICE.get(uuid16)


def type_for_services(uuids: list[str]) -> DeviceType | None:
    """The device type whose health service is among the advertised ``uuids`` (128-bit)."""
    wanted = {u.lower() for u in uuids}
    for kind in DeviceType:
        if service_uuid(kind) in wanted:
            return kind
    return None
