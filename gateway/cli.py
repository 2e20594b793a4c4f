"""The gateway's commands under ``vitalvagt gateway``.

``decode`` turns the bytes of one characteristic value into the observations the gateway
would send, for debugging a new device model without any Bluetooth (docs/devices.md).
``pair``, ``devices``, ``notices`` and ``run`` operate the home gateway (docs/gateway.md);
``run --emulated`` runs it against five emulated devices on bumble.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import re
import signal
import sys
from datetime import UTC, datetime, tzinfo
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from vitalvagt.devices import DeviceType, type_of_service
from vitalvagt.settings import DEFAULT_LOCAL_TZ, Settings, local_zone

if TYPE_CHECKING:
    from gateway.decoders import DecodedReading
    from gateway.publisher import BrokerConfig
    from simulator.ble_devices import Home

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


async def _pair_async(args: argparse.Namespace, settings: Settings) -> int:
    from bleak import BleakScanner
    from bleak.exc import BleakError

    from gateway.ble import ble_backends, connect, read_device_information
    from gateway.errors import GatewayError
    from gateway.pairing import PAIRING_FILE, PairingList, gateway_dir, normalize_address
    from vitalvagt.devices import DeviceType, service_uuid, type_for_services

    types = [DeviceType(args.type)] if args.type else list(DeviceType)
    async with ble_backends(settings.ble_transport) as (scanner_backend, client_backend):
        print(f"scanning {args.scan_s:g} s for {', '.join(types)} devices ...", file=sys.stderr)
        try:
            seen = await BleakScanner.discover(
                timeout=args.scan_s,
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
        if args.address:
            wanted = normalize_address(args.address)
            found = [f for f in found if f[0].address.upper() == wanted]
        if not found:
            what = args.address or "no health device"
            return _fail_as(
                "pair",
                f"{what}: not seen advertising a health service within "
                f"{args.scan_s:g} s; wake the device (take a measurement) and retry",
            )
        if len(found) > 1:
            listing = "; ".join(f"{d.address} {a.local_name or '?'} ({k})" for d, a, k in found)
            return _fail_as(
                "pair", f"several devices advertise: {listing}; choose one with --address"
            )
        device, adv, kind = found[0]
        with PairingList(gateway_dir(settings) / PAIRING_FILE) as pairing:
            entry = pairing.add(
                device.address,
                kind,
                name=adv.local_name or device.name,
                profile=args.profile,
                user_id=args.user_id,
                requires_bonding=args.bond,
            )
            if not args.no_connect:
                try:
                    client = await connect(device, client_backend, name=entry.name, pair=args.bond)
                    try:
                        pairing.set_info(device.address, **(await read_device_information(client)))
                    finally:
                        await client.disconnect()
                except (BleakError, TimeoutError) as exc:
                    print(
                        f"paired, but could not read Device Information now ({exc}); the "
                        "gateway reads it on the first connection",
                        file=sys.stderr,
                    )
            entry = pairing.get(device.address) or entry
    model = " ".join(x for x in (entry.manufacturer, entry.model) if x) or "model unknown"
    print(
        f"paired {entry.address} {entry.name or ''} ({entry.type}, {model}"
        f"{', bonded' if entry.requires_bonding else ''}"
        f"{f', user {entry.user_id}' if entry.user_id is not None else ''})"
    )
    return 0


def _fail_as(command: str, message: str) -> int:
    print(f"vitalvagt gateway {command}: {message}", file=sys.stderr)
    return 2


def _pair(args: argparse.Namespace, settings: Settings) -> int:
    return asyncio.run(_pair_async(args, settings))


def _add_pair(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "pair",
        help="scan for a Bluetooth health device and add it to the pairing list",
        description="Scan for devices that advertise a health service (blood pressure 0x1810, "
        "pulse oximeter 0x1822, weight scale 0x181D, thermometer 0x1809, heart rate 0x180D) "
        "and add one to the home's pairing list (pairing.db in VV_GATEWAY_DIR). Then connect "
        "once to read its Device Information (and bond with --bond). Needs Bluetooth: "
        "VV_BLE_TRANSPORT=native (BlueZ/Android) or bumble:<HCI transport>. Wake the device "
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

EMULATED_GATEWAY_ID = "gw-emulated-1"
EMULATED_USER_ID = 1  # the patient's slot on the emulated cuff and scale


def run_broker(settings: Settings, *, emulated: bool) -> tuple[Settings, BrokerConfig]:
    """The gateway id and broker for `run`; provisions the gateway on the embedded stack.

    On the embedded stack (no VV_MQTT_HOST / VV_MQTT_PASSWORD) the gateway is provisioned
    (created or re-keyed) and the broker reloaded, so that a development run needs nothing.
    """
    from pydantic import SecretStr

    from gateway.app import broker_config
    from gateway.errors import GatewayError

    gateway_id = settings.gateway_id or (EMULATED_GATEWAY_ID if emulated else None)
    if gateway_id is None:
        raise GatewayError(
            "VV_GATEWAY_ID is not set: the gateway id is also its MQTT user "
            "(`vitalvagt admin add-gateway ID` provisions one)"
        )
    update: dict[str, Any] = {"gateway_id": gateway_id}
    if settings.mqtt_password is None and settings.mqtt_host is None:
        import psycopg

        from vitalvagt.db.gateways import provision_gateway
        from vitalvagt.endpoints import database_url
        from vitalvagt.stack import Stack

        with psycopg.connect(database_url(settings), autocommit=True) as conn:
            password = provision_gateway(conn, gateway_id)
        Stack(settings).sync_broker_users()
        print(
            f"provisioned gateway {gateway_id} on the embedded stack (new MQTT password, "
            "broker reloaded)",
            flush=True,
        )
        update["mqtt_password"] = SecretStr(password)
    settings = settings.model_copy(update=update)
    return settings, broker_config(settings)


def pair_emulated(settings: Settings, home: Home) -> None:
    """Put the emulated home's devices in the pairing list (their type from their service)."""
    from gateway.pairing import PAIRING_FILE, PairingList, gateway_dir
    from simulator.ble_devices import BloodPressureMonitor, WeightScale

    with PairingList(gateway_dir(settings) / PAIRING_FILE) as pairing:
        for device in home.devices:
            slot = isinstance(device, BloodPressureMonitor | WeightScale)
            pairing.add(
                device.address,
                type_of_service(device.SERVICE_UUID),
                name=device.name,
                user_id=EMULATED_USER_ID if slot else None,
                requires_bonding=device.requires_bonding,
            )


async def measure_round(home: Home, zone: tzinfo, rng: random.Random) -> int:
    """Every emulated device measures once with plausible values; returns values sent."""
    from simulator.ble_devices import (
        BloodPressureMonitor,
        HeartRateSensor,
        PulseOximeter,
        Thermometer,
        WeightScale,
    )
    from simulator.sig_encoders import (
        encode_bp,
        encode_hr,
        encode_plx_continuous,
        encode_plx_spot,
        encode_temperature,
        encode_weight,
    )
    from vitalvagt.observation import BodySite

    # Device clocks count whole seconds in local time, as the gateway set them.
    now = datetime.now(UTC).astimezone(zone).replace(tzinfo=None, microsecond=0)
    pulse = rng.randint(58, 92)
    systolic, diastolic = rng.randint(112, 148), rng.randint(66, 92)
    sent = 0
    for device in home.devices:
        if isinstance(device, BloodPressureMonitor):
            await device.measure(
                encode_bp(
                    systolic,
                    diastolic,
                    round((systolic + 2 * diastolic) / 3),
                    timestamp=now,
                    pulse=pulse,
                    user_id=EMULATED_USER_ID,
                )
            )
        elif isinstance(device, PulseOximeter):
            spo2 = rng.randint(91, 99)
            await device.measure(encode_plx_spot(spo2, pulse, timestamp=now))
            await device.measure_continuous(encode_plx_continuous(spo2, pulse))
            sent += 1
        elif isinstance(device, HeartRateSensor):
            await device.measure(encode_hr(pulse, contact=True))
        elif isinstance(device, WeightScale):
            await device.measure(
                encode_weight(
                    round(rng.uniform(62, 95) * 200) / 200, timestamp=now, user_id=EMULATED_USER_ID
                )
            )
        elif isinstance(device, Thermometer):
            await device.measure(
                encode_temperature(
                    round(rng.uniform(36.2, 37.6), 1), timestamp=now, site=BodySite.EAR
                )
            )
        else:
            continue
        sent += 1
    return sent


async def measure_periodically(home: Home, zone: tzinfo, every_s: float, *, seed: int = 0) -> None:
    rng = random.Random(seed)
    loop = asyncio.get_running_loop()
    while True:
        started = loop.time()
        await measure_round(home, zone, rng)
        await asyncio.sleep(max(0.0, every_s - (loop.time() - started)))


async def _run_async(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.app import GatewayApp

    if args.measure_every_s is not None and not args.emulated:
        return _fail_as("run", "--measure-every-s needs --emulated")
    every_s = args.measure_every_s or 30.0
    if every_s < 1:
        return _fail_as(
            "run", "--measure-every-s must be at least 1 (device clocks tick in seconds)"
        )
    if args.emulated:
        update: dict[str, Any] = {"ble_transport": "bumble"}
        if settings.gateway_dir is None:
            # Its own pairing list and outbox: emulated devices never mix with real ones.
            update["gateway_dir"] = settings.state_dir / "gateway-emulated"
        settings = settings.model_copy(update=update)
    settings, broker = run_broker(settings, emulated=args.emulated)
    zone = local_zone(settings)
    async with contextlib.AsyncExitStack() as stack:
        backends = None
        home = None
        if args.emulated:
            from simulator.ble_devices import Home, standard_devices

            home = await stack.enter_async_context(Home(standard_devices()))
            central = await stack.enter_async_context(home.central())
            backends = central.backends()
            pair_emulated(settings, home)
        app = await stack.enter_async_context(
            GatewayApp(settings, broker=broker, backends=backends)
        )
        print(
            f"gateway {app.gateway_id} running: {len(app.pairing.devices())} devices, "
            f"broker {broker.host}:{broker.port}, data in {app.dir}"
            + (f", emulated devices measure every {every_s:g} s" if home else ""),
            flush=True,
        )
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            # A service manager's stop: close everything in order, outbox last.
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(signum, app.stop)
                stack.callback(loop.remove_signal_handler, signum)
        if home is not None:
            task = asyncio.create_task(
                measure_periodically(home, zone, every_s), name="emulated-measurements"
            )
            stack.push_async_callback(_cancel, task)
        if args.duration_s is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(app.wait_closed(), args.duration_s)
        else:
            await app.wait_closed()
        stats = app.ble.stats().values()
        print(
            f"gateway {app.gateway_id} stopping: {sum(s.readings for s in stats)} readings "
            f"({sum(s.observations for s in stats)} observations) stored, "
            f"{app.publisher.acked_readings} observations acknowledged by the broker, "
            f"{app.outbox.stats().pending} pending, {app.ble.decode_errors} undecodable, "
            f"{sum(s.duplicates for s in stats)} duplicates ignored",
            flush=True,
        )
    return 0


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _run(args: argparse.Namespace, settings: Settings) -> int:
    return asyncio.run(_run_async(args, settings))


def _add_run(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "run",
        help="run the home gateway: read the paired devices and publish their readings",
        description="Run the gateway until Ctrl-C: keep every paired device connected, store "
        "each reading in the outbox and publish it to the broker over MQTT. Needs VV_GATEWAY_ID "
        "and the broker (VV_MQTT_HOST, VV_MQTT_PASSWORD; on the embedded stack, `vitalvagt "
        "stack up`, the gateway is provisioned automatically) and Bluetooth (VV_BLE_TRANSPORT). "
        f"With --emulated: five emulated devices on bumble in this process, paired "
        f"automatically, measuring periodically; gateway id {EMULATED_GATEWAY_ID} unless "
        "VV_GATEWAY_ID is set, data in <VV_STATE_DIR>/gateway-emulated unless VV_GATEWAY_DIR "
        "is set.",
    )
    p.add_argument(
        "--emulated",
        action="store_true",
        help="run against five emulated BLE devices (bumble) instead of real ones",
    )
    p.add_argument(
        "--measure-every-s",
        type=float,
        default=None,
        metavar="N",
        help="with --emulated: seconds between measurements of every device (default 30)",
    )
    p.add_argument(
        "--duration-s",
        type=float,
        default=None,
        metavar="N",
        help="stop after N seconds (default: run until Ctrl-C)",
    )
    p.set_defaults(handler=_run)
