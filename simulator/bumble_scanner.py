"""The bleak scanner backend on a bumble central, and bumble advertisements in bleak's terms.

``BleakScanner(backend=...)`` runs on it unchanged; several scanners share one central's
scan (``BumbleAdapter.acquire_scan``).
"""

from __future__ import annotations

import uuid as uuid_lib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from bleak.backends.scanner import AdvertisementData, AdvertisementDataCallback, BaseBleakScanner
from bleak.exc import BleakError
from bleak.uuids import normalize_uuid_str
from bumble import core, hci
from bumble.device import Advertisement

from simulator.bumble_adapter import BumbleAdapter


@dataclass(frozen=True)
class BumbleDeviceDetails:
    """``BLEDevice.details`` for devices found by the bumble scanner."""

    address: hci.Address
    central: BumbleAdapter = field(repr=False)
    advertisement: Advertisement = field(repr=False)


def _uuid_from_le(data: bytes) -> str:
    if len(data) in (2, 4):
        return normalize_uuid_str(data[::-1].hex())
    return str(uuid_lib.UUID(bytes=data[::-1]))


def advertisement_data(advertisement: Advertisement) -> AdvertisementData:
    """Translate a bumble advertisement into bleak's ``AdvertisementData``."""
    local_name: str | None = None
    short_name: str | None = None
    service_uuids: list[str] = []
    service_data: dict[str, bytes] = {}
    manufacturer_data: dict[int, bytes] = {}
    tx_power: int | None = None
    for ad_type, value in advertisement.data.ad_structures:
        match int(ad_type):
            case 0x02 | 0x03:
                service_uuids += [
                    _uuid_from_le(value[i : i + 2]) for i in range(0, len(value) - 1, 2)
                ]
            case 0x04 | 0x05:
                service_uuids += [
                    _uuid_from_le(value[i : i + 4]) for i in range(0, len(value) - 3, 4)
                ]
            case 0x06 | 0x07:
                service_uuids += [
                    _uuid_from_le(value[i : i + 16]) for i in range(0, len(value) - 15, 16)
                ]
            case 0x08:
                short_name = value.decode("utf-8", errors="replace")
            case 0x09:
                local_name = value.decode("utf-8", errors="replace")
            case 0x0A if len(value) == 1:
                tx_power = int.from_bytes(value, "little", signed=True)
            case 0x16 if len(value) >= 2:
                service_data[_uuid_from_le(value[:2])] = bytes(value[2:])
            case 0x20 if len(value) >= 4:
                service_data[_uuid_from_le(value[:4])] = bytes(value[4:])
            case 0x21 if len(value) >= 16:
                service_data[_uuid_from_le(value[:16])] = bytes(value[16:])
            case 0xFF if len(value) >= 2:
                manufacturer_data[int.from_bytes(value[:2], "little")] = bytes(value[2:])
    return AdvertisementData(
        local_name=local_name or short_name,
        manufacturer_data=manufacturer_data,
        service_data=service_data,
        service_uuids=list(dict.fromkeys(service_uuids)),
        tx_power=tx_power,
        rssi=advertisement.rssi,
        platform_data=(advertisement,),
    )


def address_string(address: hci.Address) -> str:
    """The address as BlueZ prints it: upper case, no type suffix."""
    return address.to_string(with_type_qualifier=False)


class BumbleScannerBackend(BaseBleakScanner):
    """bleak scanner backend on a bumble central (``BleakScanner(backend=...)``)."""

    central: ClassVar[BumbleAdapter | None] = None  # bound by BumbleAdapter.bind()

    def __init__(
        self,
        detection_callback: AdvertisementDataCallback | None,
        service_uuids: list[str] | None,
        scanning_mode: str = "active",
        **_kwargs: Any,
    ) -> None:
        super().__init__(detection_callback, service_uuids)
        self._central = type(self).central or BumbleAdapter.default()
        self._active = scanning_mode != "passive"
        self._remove_listener: Callable[[], None] | None = None

    async def start(self) -> None:
        if self._remove_listener is not None:
            return
        self.seen_devices = {}
        self._remove_listener = self._central.add_advertisement_listener(self._on_advertisement)
        try:
            await self._central.acquire_scan(active=self._active)
        except core.BaseBumbleError as exc:
            self._remove_listener()
            self._remove_listener = None
            raise BleakError(f"{self._central.description}: cannot start scanning: {exc}") from exc

    async def stop(self) -> None:
        if self._remove_listener is None:
            return
        self._remove_listener()
        self._remove_listener = None
        try:
            await self._central.release_scan()
        except core.BaseBumbleError as exc:
            raise BleakError(f"{self._central.description}: cannot stop scanning: {exc}") from exc

    def _on_advertisement(self, advertisement: Advertisement) -> None:
        adv = advertisement_data(advertisement)
        if not self.is_allowed_uuid(adv.service_uuids):
            return
        address = address_string(advertisement.address)
        details = BumbleDeviceDetails(advertisement.address, self._central, advertisement)
        device = self.create_or_update_device(address, address, adv.local_name, details, adv)
        self.call_detection_callbacks(device, adv)
