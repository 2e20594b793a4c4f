"""The gateway's commands under ``vitalvagt gateway``.

``decode`` turns the bytes of one characteristic value into the observations the gateway
would send, for debugging a new device model without any Bluetooth (docs/devices.md).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from datetime import tzinfo
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from vitalvagt.settings import Settings

if TYPE_CHECKING:
    from gateway.decoders import DecodedReading

DEFAULT_TZ = "Europe/Copenhagen"
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
    from gateway.decoders import decode
    from gateway.errors import DecodeError

    try:
        data = parse_hex(" ".join(args.hex))
    except ValueError as exc:
        return _fail(str(exc))
    try:
        zone = ZoneInfo(args.tz)
    except (ZoneInfoNotFoundError, ValueError):
        return _fail(f"unknown time zone {args.tz!r} (an IANA name like {DEFAULT_TZ})")
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
        default=DEFAULT_TZ,
        help=f"IANA time zone the device clock is set to (default {DEFAULT_TZ}); "
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
        "readings. `decode` needs nothing but the bytes of one value.",
    )
    sub = gateway.add_subparsers(dest="gateway_command", required=True, metavar="SUBCOMMAND")
    _add_decode(sub)
