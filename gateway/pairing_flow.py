"""Pairing a device: find it advertising a health service, add it to the pairing list, and
read its Device Information once (bonding first when it needs a bond).

``vitalvagt gateway pair`` runs ``pair_device``; a tablet's own pairing screen can too.
"""

from __future__ import annotations

from collections.abc import Callable

from bleak import BleakScanner
from bleak.exc import BleakError

from gateway.ble_connect import ble_backends, connect, read_device_information
from gateway.errors import GatewayError
from gateway.pairing import PAIRING_FILE, PairedDevice, PairingList, gateway_dir, normalize_address
from vitalvagt.devices import DeviceType, service_uuid, type_for_services
from vitalvagt.settings import Settings


class PairingError(GatewayError):
    """No device, or more than one, to pair; the message says what the operator can do."""


def _quiet(_message: str) -> None:
    pass


async def pair_device(
    settings: Settings,
    *,
    address: str | None = None,
    device_type: DeviceType | None = None,
    scan_s: float = 10.0,
    profile: str | None = None,
    user_id: int | None = None,
    bond: bool = False,
    read_info: bool = True,
    say: Callable[[str], None] = _quiet,
) -> PairedDevice:
    """Scan ``scan_s`` seconds, add the one health device seen (of ``device_type``, at
    ``address``) to the pairing list and, with ``read_info``, connect once to read its Device
    Information. ``say`` gets progress and warnings for the operator.

    Raises ``PairingError`` when no device or several advertise, ``GatewayError`` when the
    radio cannot scan.
    """
    types = [device_type] if device_type is not None else list(DeviceType)
    async with ble_backends(settings.ble_transport) as (scanner_backend, client_backend):
        say(f"scanning {scan_s:g} s for {', '.join(types)} devices ...")
        try:
            seen = await BleakScanner.discover(
                timeout=scan_s,
                return_adv=True,
                service_uuids=[service_uuid(t) for t in types],
                backend=scanner_backend,
            )
        except BleakError as exc:
            raise GatewayError(f"cannot scan ({settings.ble_transport}): {exc}") from exc
        found = [
            (device, adv, kind)
            for device, adv in seen.values()
            if (kind := type_for_services(adv.service_uuids)) in types
        ]
        if address:
            wanted = normalize_address(address)
            found = [f for f in found if f[0].address.upper() == wanted]
        if not found:
            raise PairingError(
                f"{address or 'no health device'}: not seen advertising a health service within "
                f"{scan_s:g} s; wake the device (take a measurement) and retry"
            )
        if len(found) > 1:
            listing = "; ".join(f"{d.address} {a.local_name or '?'} ({k})" for d, a, k in found)
            raise PairingError(f"several devices advertise: {listing}; choose one with --address")
        device, adv, kind = found[0]
        with PairingList(gateway_dir(settings) / PAIRING_FILE) as pairing:
            entry = pairing.add(
                device.address,
                kind,
                name=adv.local_name or device.name,
                profile=profile,
                user_id=user_id,
                requires_bonding=bond,
            )
            if read_info:
                try:
                    client = await connect(device, client_backend, name=entry.name, pair=bond)
                    try:
                        pairing.set_info(device.address, **(await read_device_information(client)))
                    finally:
                        await client.disconnect()
                except (BleakError, TimeoutError) as exc:
                    say(
                        f"paired, but could not read Device Information now ({exc}); the "
                        "gateway reads it on the first connection"
                    )
            return pairing.get(device.address) or entry
