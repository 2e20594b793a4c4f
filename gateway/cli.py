"""The gateway's commands under ``vitalvagt gateway``.

``decode`` turns the bytes of one characteristic value into the observations the gateway
would send, for debugging a new device model without any Bluetooth (docs/devices.md).
``pair``, ``devices``, ``notices`` and ``run`` operate the home gateway (docs/gateway.md).
Each command parses its arguments, calls the gateway module that does the work and prints.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from datetime import datetime, tzinfo
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from vitalvagt.devices import DeviceType
from vitalvagt.settings import DEFAULT_LOCAL_TZ, Settings, local_zone

if TYPE_CHECKING:
    from gateway.decoded import DecodedReading
    from gateway.publisher import BrokerConfig

_SEPARATORS = re.compile(r"[\s:]+")
_NOT_HEX = re.compile(r"[^0-9a-fA-F]")


def parse_hex(text: str) -> bytes:
    """'1E 8A00', '1e:8a:00' or '0x1E8A00' -> bytes; ValueError saying what is wrong."""
    compact = _SEPARATORS.sub("", text)
    if compact[:2].lower() == "0x":
        compact = compact[2:]
    bad = _NOT_HEX.search(compact)
    if bad:
        raise ValueError(f"not hex: {bad.group()!r} in {text!r}")
    if not compact:
        raise ValueError("no bytes given")
    if len(compact) % 2:
        raise ValueError(f"odd number of hex digits ({len(compact)}): a byte is two digits")
    return bytes.fromhex(compact)


def reading_json(
    reading: DecodedReading, zone: tzinfo, *, profile: str | None = None
) -> dict[str, Any]:
    """A DecodedReading as the JSON object `gateway decode` prints.

    The device's naive clock is read in ``zone`` (the patient's home zone). In the hour a
    DST change repeats, the first occurrence is taken (fold=0); the device cannot say which.
    """
    from gateway.sig import CHARACTERISTIC_NAMES

    local = reading.device_time
    measured_at = None if local is None else local.replace(tzinfo=zone).isoformat()
    flags = [str(f) for f in reading.flags]
    return {
        "characteristic": reading.characteristic,
        "name": CHARACTERISTIC_NAMES.get(reading.characteristic),
        "profile": profile,
        "timezone": str(zone),
        "device_time": None if local is None else local.isoformat(),
        "user_id": reading.user_id,
        "flags": flags,
        "observations": [
            {
                "kind": str(m.kind),
                "value": m.value,
                "unit": m.unit,
                "decimals": m.decimals,
                "measured_at": measured_at,
                "flags": [str(f) for f in m.flags],
                "body_site": None if m.body_site is None else str(m.body_site),
            }
            for m in reading.measurements
        ],
        "extras": dict(reading.extras),
    }


def _fail(message: str) -> int:
    print(f"vitalvagt gateway decode: {message}", file=sys.stderr)
    return 2


def _decode(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.decoding import decode
    from gateway.errors import DecodeError

    try:
        data = parse_hex(" ".join(args.hex))
    except ValueError as exc:
        return _fail(str(exc))
    try:
        zone = ZoneInfo(args.tz)
    except (ZoneInfoNotFoundError, ValueError):
        return _fail(f"unknown time zone {args.tz!r} (an IANA name like {DEFAULT_LOCAL_TZ})")
    try:
        reading = decode(args.uuid, data, args.profile)
    except DecodeError as exc:
        return _fail(str(exc))
    print(json.dumps(reading_json(reading, zone, profile=args.profile), ensure_ascii=False))
    return 0


def _add_decode(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from gateway.profiles import KNOWN_UNSUPPORTED, PROFILES
    from gateway.sig import CHARACTERISTIC_NAMES

    chars = ", ".join(f"{k} {v}" for k, v in CHARACTERISTIC_NAMES.items())
    profiles = "; ".join(f"{p.name}: {p.description}" for p in PROFILES.values()) or "none"
    p = sub.add_parser(
        "decode",
        help="decode the bytes of one health characteristic value (offline)",
        description="Decode the bytes a Bluetooth health device sent for one characteristic "
        "and print ONE JSON object: the observations (kind, value in its canonical UCUM unit, "
        "measured_at, quality flags, body site), user id and extras. Needs nothing but the "
        "bytes: no Bluetooth, broker or database. Supported: " + chars + ". Exit code 2 with "
        "the reason (characteristic, byte offset) on stderr when the bytes cannot be decoded.",
    )
    p.add_argument(
        "--uuid",
        required=True,
        help="characteristic UUID: 2A35, 0x2a35 or the full 128-bit form",
    )
    p.add_argument(
        "hex",
        nargs="+",
        metavar="HEX",
        help="the value's bytes in hex; spaces and colons are ignored ('1E 8A00', '1e:8a:00')",
    )
    p.add_argument(
        "--profile",
        default=None,
        metavar="NAME",
        help=f"device profile for a model that deviates from the specification ({profiles}; "
        f"known, not implemented: {', '.join(KNOWN_UNSUPPORTED) or 'none'})",
    )
    p.add_argument(
        "--tz",
        default=DEFAULT_LOCAL_TZ,
        help=f"IANA time zone the device clock is set to (default {DEFAULT_LOCAL_TZ}); "
        "measured_at is the device time in this zone",
    )
    p.set_defaults(handler=_decode)


def register_cli(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``vitalvagt gateway`` and its subcommands to the top-level parser.

    Each subcommand has its own ``_add_*`` function called here (pair, devices and run join
    the same way).
    """
    gateway = subparsers.add_parser(
        "gateway",
        help="the home gateway: read Bluetooth health devices and forward their readings",
        description="Commands of the home gateway, which reads Bluetooth health devices "
        "(blood pressure, pulse oximeter, scale, thermometer, heart rate) and forwards their "
        "readings. `decode` needs nothing but the bytes of one value; `pair` and `run` need "
        "Bluetooth (VV_BLE_TRANSPORT) and `run` a broker; `devices` and `notices` read the "
        "gateway directory (VV_GATEWAY_DIR, default <VV_STATE_DIR>/gateway).",
    )
    sub = gateway.add_subparsers(dest="gateway_command", required=True, metavar="SUBCOMMAND")
    _add_decode(sub)
    _add_pair(sub)
    _add_devices(sub)
    _add_notices(sub)
    _add_run(sub)


# --- pairing -----------------------------------------------------------------------------

TYPE_CHOICES = tuple(DeviceType)


def _local(moment: datetime | None, zone: tzinfo) -> str:
    return "-" if moment is None else moment.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S")


def _fail_as(command: str, message: str) -> int:
    print(f"vitalvagt gateway {command}: {message}", file=sys.stderr)
    return 2


def _pair(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.pairing_flow import PairingError, pair_device

    try:
        entry = asyncio.run(
            pair_device(
                settings,
                address=args.address,
                device_type=DeviceType(args.type) if args.type else None,
                scan_s=args.scan_s,
                profile=args.profile,
                user_id=args.user_id,
                bond=args.bond,
                read_info=not args.no_connect,
                say=lambda message: print(message, file=sys.stderr),
            )
        )
    except PairingError as exc:
        return _fail_as("pair", str(exc))
    model = " ".join(x for x in (entry.manufacturer, entry.model) if x) or "model unknown"
    print(
        f"paired {entry.address} {entry.name or ''} ({entry.type}, {model}"
        f"{', bonded' if entry.requires_bonding else ''}"
        f"{f', user {entry.user_id}' if entry.user_id is not None else ''})"
    )
    return 0


def _add_pair(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "pair",
        help="scan for a Bluetooth health device and add it to the pairing list",
        description="Scan for devices that advertise a health service (blood pressure 0x1810, "
        "pulse oximeter 0x1822, weight scale 0x181D, thermometer 0x1809, heart rate 0x180D) "
        "and add one to the home's pairing list (pairing.db in VV_GATEWAY_DIR). Then connect "
        "once to read its Device Information (and bond with --bond). Needs Bluetooth: "
        "VV_BLE_TRANSPORT=native (BlueZ/Android) or a backend plugin such as the emulation "
        "(docs/gateway.md). Wake the device "
        "first (most advertise only for a minute after a measurement). Pairing a device again "
        "updates its profile, user id and bonding.",
    )
    p.add_argument(
        "--address",
        default=None,
        metavar="ADDR",
        help="the device's Bluetooth address (needed when several advertise)",
    )
    p.add_argument(
        "--type",
        choices=TYPE_CHOICES,
        default=None,
        help="only devices of this type (default: any health device)",
    )
    p.add_argument(
        "--scan-s",
        type=float,
        default=10.0,
        metavar="N",
        help="how long to scan, in seconds (default 10)",
    )
    p.add_argument(
        "--profile",
        default=None,
        metavar="NAME",
        help="device quirk profile for a model that deviates from the specification "
        "(gateway/profiles.py, docs/devices.md)",
    )
    p.add_argument(
        "--user-id",
        type=int,
        default=None,
        metavar="N",
        help="the patient's user slot on a scale or cuff; readings from another "
        "slot are flagged other_user",
    )
    p.add_argument(
        "--bond",
        action="store_true",
        help="the device needs bonding: pair now and encrypt every connection",
    )
    p.add_argument(
        "--no-connect",
        action="store_true",
        help="only add it to the list; read Device Information on first connection",
    )
    p.set_defaults(handler=_pair)


# --- devices and notices -----------------------------------------------------------------


def _devices(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.pairing import PAIRING_FILE, PairingList, gateway_dir

    path = gateway_dir(settings) / PAIRING_FILE
    zone = local_zone(settings)
    with PairingList(path) as pairing:
        if args.undecodable:
            rows = pairing.undecodable(args.limit)
            if args.json:
                print(
                    json.dumps(
                        [
                            {
                                "at": r.at.isoformat(),
                                "address": r.address,
                                "characteristic": r.characteristic,
                                "hex": r.data.hex(),
                                "error": r.error,
                            }
                            for r in rows
                        ],
                        indent=2,
                    )
                )
                return 0
            for r in rows:
                print(f"{_local(r.at, zone)} {r.address} {r.characteristic}: {r.error}")
                print(f"  vitalvagt gateway decode --uuid {r.characteristic} {r.data.hex()}")
            if not rows:
                print("no undecodable values kept")
            return 0
        devices = pairing.devices()
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "address": d.address,
                        "type": d.type.value,
                        "name": d.name,
                        "manufacturer": d.manufacturer,
                        "model": d.model,
                        "serial": d.serial,
                        "firmware": d.firmware,
                        "profile": d.profile,
                        "requires_bonding": d.requires_bonding,
                        "user_id": d.user_id,
                        "last_seen": d.last_seen.isoformat() if d.last_seen else None,
                        "battery_level": d.battery_level,
                        "battery_at": d.battery_at.isoformat() if d.battery_at else None,
                    }
                    for d in devices
                ],
                indent=2,
            )
        )
        return 0
    if not devices:
        print(f"no paired devices in {path}; add one with `vitalvagt gateway pair`")
        return 0
    print(
        f"{'address':<18} {'type':<11} {'name':<12} {'model':<14} {'serial':<8} "
        f"{'firmware':<9} {'profile':<10} {'user':<4} {'battery':<7} last seen ({zone})"
    )
    for d in devices:
        model = " ".join(x for x in (d.manufacturer, d.model) if x) or "-"
        battery = "-" if d.battery_level is None else f"{d.battery_level} %"
        bonded = " (bonded)" if d.requires_bonding else ""
        print(
            f"{d.address:<18} {d.type.value:<11} {(d.name or '-'):<12} {model:<14} "
            f"{(d.serial or '-'):<8} {(d.firmware or '-'):<9} {(d.profile or '-'):<10} "
            f"{'-' if d.user_id is None else d.user_id!s:<4} {battery:<7} "
            f"{_local(d.last_seen, zone)}{bonded}"
        )
    return 0


def _add_devices(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "devices",
        help="list the paired devices with last seen and battery level",
        description="List the home's pairing list (pairing.db in VV_GATEWAY_DIR, default "
        "<VV_STATE_DIR>/gateway): address, type, name, model, serial, firmware, profile, "
        "user slot, battery level and when the gateway last saw each device. With "
        "--undecodable: the last values the gateway could not decode, each with the "
        "`gateway decode` command that reproduces the error. Needs no Bluetooth or broker.",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument(
        "--undecodable",
        action="store_true",
        help="show the last undecodable values instead of the devices",
    )
    p.add_argument("--limit", type=int, default=20, help="how many undecodable values (20)")
    p.set_defaults(handler=_devices)


def _notices(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.app import NOTICES_FILE, OUTBOX_DIR, Notices
    from gateway.outbox import recorded_losses
    from gateway.pairing import gateway_dir

    zone = local_zone(settings)
    with Notices(gateway_dir(settings) / NOTICES_FILE) as notices:
        rows = notices.recent(args.limit)
        receipt = notices.last_receipt()
    dropped, damaged = recorded_losses(gateway_dir(settings) / OUTBOX_DIR)
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "id": n.id,
                        "at": n.at.isoformat(),
                        "kind": n.kind,
                        "message": n.message,
                        "command_id": n.command_id,
                    }
                    for n in rows
                ],
                indent=2,
                ensure_ascii=False,
            )
        )
        return 0
    if dropped or damaged:
        # Not the patient's to fix: the operator replaces the tablet's storage or its network.
        print(f"the outbox lost readings: {dropped} dropped when it was full, {damaged} found"
              " damaged on the tablet's storage; tell the operator")  # fmt: skip
    if receipt is not None:
        # What the patient needs to know: the hub has the measurement.
        print(f"{_local(receipt.at, zone)}  received by the hub"
              f" ({receipt.readings} readings)"
              + (f"; kept aside by the hub ({receipt.refused_code})" if receipt.refused_code
                 else ""))  # fmt: skip
    for n in rows:
        print(f"{_local(n.at, zone)}  [{n.kind}] {n.message}")
    if not rows:
        print("no notices")
    return 0


def _add_notices(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "notices",
        help="show what the hub asked the patient to do (measure again), newest first",
        description="List the notices the gateway received from the hub (`measure_again` "
        "commands: which measurement and the message for the patient), newest first, from "
        "notices.db in VV_GATEWAY_DIR. Needs no Bluetooth or broker.",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--limit", type=int, default=20, help="how many (default 20)")
    p.set_defaults(handler=_notices)


# --- run ---------------------------------------------------------------------------------


def _run(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.app import broker_config
    from gateway.errors import GatewayError
    from vitalvagt.errors import ConfigError

    try:
        broker = broker_config(settings)
    except (GatewayError, ConfigError) as exc:
        return _fail_as("run", str(exc))
    return asyncio.run(_run_async(settings, broker, duration_s=args.duration_s))


async def _run_async(settings: Settings, broker: BrokerConfig, *, duration_s: float | None) -> int:
    from gateway.app import GatewayApp

    async with GatewayApp(settings, broker=broker) as app:
        print(app.running_summary(), flush=True)
        await app.run_until_stopped(duration_s=duration_s)
        print(app.stopping_summary(), flush=True)
    return 0


def _add_run(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "run",
        help="run the home gateway: read the paired devices and publish their readings",
        description="Run the gateway until Ctrl-C or SIGTERM: keep every paired device "
        "connected, store each reading in the outbox and publish it to the broker over MQTT. "
        "Needs VV_GATEWAY_ID and its MQTT password VV_MQTT_PASSWORD (both from `vitalvagt admin "
        "add-gateway ID`), the broker (VV_MQTT_HOST and VV_MQTT_TLS_CA, or the embedded "
        "stack's) and Bluetooth (VV_BLE_TRANSPORT). Exit code 2 when a setting is missing. "
        "For a development run against emulated devices: `vitalvagt simulate home`.",
    )
    p.add_argument(
        "--duration-s",
        type=float,
        default=None,
        metavar="N",
        help="stop after N seconds (default: run until Ctrl-C)",
    )
    p.set_defaults(handler=_run)
