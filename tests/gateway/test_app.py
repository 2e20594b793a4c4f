"""The gateway application without a broker: pairing list, value handling, time, commands.

Values go through ``BleManager.handle_value`` (the code the BLE callbacks run) into a real
SQLite outbox; the BLE side is bumble's stack with emulated devices where a test needs one.
The broker end to end is tests/gateway/test_e2e.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from pydantic import SecretStr

from gateway.app import GatewayApp, Notices
from gateway.ble import BleManager
from gateway.ble_connect import backend_plugins, ble_backends
from gateway.decoding import decode
from gateway.errors import GatewayError
from gateway.outbox import Outbox
from gateway.pairing import PairingList
from gateway.publisher import ReceivedByHub
from gateway.readings import current_time_value, to_observations
from simulator.ble_devices import Thermometer, WeightScale
from simulator.ble_home import EmulatedHome
from simulator.sig_encoders import (
    encode_bp,
    encode_hr,
    encode_temperature,
    encode_weight,
)
from tests.conftest import free_port
from vitalvagt.devices import DeviceType
from vitalvagt.kinds import Kind
from vitalvagt.observation import BodySite, DeviceRef, Observation, TimeSource
from vitalvagt.quality import Flag
from vitalvagt.settings import Settings
from vitalvagt.tls import ensure_certificates
from vitalvagt.tls_files import TlsFiles
from vitalvagt.wire import Command, CommandName

pytestmark = pytest.mark.timeout(30)

CPH = ZoneInfo("Europe/Copenhagen")
CUFF = "D1:56:56:10:00:01"
SCALE = "D1:56:56:1D:00:04"
THERMO = "D1:56:56:09:00:05"
RECEIVED = datetime(2025, 7, 1, 10, 5, tzinfo=UTC)


class Clock:
    """The gateway's clock, moved by the test."""

    def __init__(self, now: datetime = RECEIVED) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def observations(outbox: Outbox) -> list[Observation]:
    return [Observation.model_validate_json(p.payload) for p in outbox.peek(1000)]


@pytest.fixture
def pairing(tmp_path: Path) -> Iterator[PairingList]:
    with PairingList(tmp_path / "pairing.db") as pl:
        pl.add(CUFF, "bp", name="VV-BPM", user_id=1)
        pl.add(SCALE, DeviceType.SCALE, name="VV-WSC", user_id=3)
        pl.add(THERMO, "thermometer", name="VV-THM")
        yield pl


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    with Outbox(tmp_path / "outbox") as ob:
        yield ob


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def manager(pairing: PairingList, outbox: Outbox, clock: Clock) -> BleManager:
    m = BleManager(
        gateway_id="gw-app-test",
        pairing=pairing,
        outbox=outbox,
        backends=(None, None),
        zone=CPH,
        clock=clock,
    )
    m.reload()  # not entered: no scanning, values are handed in by the test
    return m


# --------------------------------------------------------------------------- pairing list


def test_pairing_list_persists_and_updates_without_losing_device_information(
    tmp_path: Path,
) -> None:
    path = tmp_path / "gw" / "pairing.db"
    with PairingList(path) as pl:
        pl.add("d1:56:56:10:00:01", "bp", name="VV-BPM", user_id=1, requires_bonding=True)
        pl.set_info(CUFF, manufacturer="Acme", model="BP-7", serial="S42", firmware="2.1")
        pl.seen(CUFF, RECEIVED, battery_level=64)
        pl.add(SCALE, "scale", profile="bp_flags56_bigendian")
    with PairingList(path) as pl:
        cuff = pl.get(CUFF)
        assert cuff is not None
        assert (cuff.type, cuff.name, cuff.user_id, cuff.requires_bonding) == (
            DeviceType.BP,
            "VV-BPM",
            1,
            True,
        )
        assert (cuff.manufacturer, cuff.model, cuff.serial, cuff.firmware) == (
            "Acme",
            "BP-7",
            "S42",
            "2.1",
        )
        assert (cuff.last_seen, cuff.battery_level) == (RECEIVED, 64)
        # Pairing again changes how it is read, not what it said about itself.
        pl.add(CUFF, "bp", user_id=2)
        again = pl.get(CUFF)
        assert again is not None
        assert (again.user_id, again.requires_bonding, again.model, again.name) == (
            2,
            False,
            "BP-7",
            "VV-BPM",
        )
        assert [d.address for d in pl.devices()] == [CUFF, SCALE]
        assert pl.get(SCALE).profile == "bp_flags56_bigendian"  # type: ignore[union-attr]
        assert pl.remove(SCALE) and not pl.remove(SCALE)
        with pytest.raises(GatewayError, match="unknown device profile 'nope'"):
            pl.add(SCALE, "scale", profile="nope")
        with pytest.raises(GatewayError, match="device type 'fridge'"):
            pl.add(SCALE, "fridge")
        with pytest.raises(GatewayError, match="user id 255"):
            pl.add(SCALE, "scale", user_id=255)


def test_undecodable_values_are_kept_boundedly(tmp_path: Path) -> None:
    with PairingList(tmp_path / "p.db") as pl:
        for i in range(205):
            pl.record_undecodable(CUFF, "2A35", bytes([i]), f"error {i}", RECEIVED)
        kept = pl.undecodable(1000)
        assert len(kept) == 200
        assert kept[0].data == bytes([204]) and kept[0].error == "error 204"


# --------------------------------------------------------------------------- readings


def test_bp_parts_share_one_reading_id_and_flags_come_through(
    manager: BleManager, outbox: Outbox
) -> None:
    stamp = datetime(2025, 7, 1, 11, 58, 30)
    frame = encode_bp(
        141, 91, 108, timestamp=stamp, pulse=66, user_id=1, status=[Flag.IRREGULAR_PULSE]
    )
    assert manager.handle_value(CUFF, "2A35", frame) == 4
    frame2 = encode_bp(120, 80, 93, timestamp=stamp + timedelta(minutes=2), pulse=60, user_id=1)
    assert manager.handle_value(CUFF, "2A35", frame2) == 4
    obs = observations(outbox)
    first, second = obs[:4], obs[4:]
    assert {o.kind: o.value for o in first} == {
        Kind.BP_SYSTOLIC: 141,
        Kind.BP_DIASTOLIC: 91,
        Kind.BP_MEAN: 108,
        Kind.PULSE: 66,
    }
    assert len({o.reading_id for o in first}) == 1 and first[0].reading_id is not None
    assert len({o.reading_id for o in second}) == 1
    assert first[0].reading_id != second[0].reading_id
    assert all(o.flags == (Flag.IRREGULAR_PULSE,) for o in first)
    assert all(o.measured_at == datetime(2025, 7, 1, 9, 58, 30, tzinfo=UTC) for o in first)
    assert all(o.time_source is TimeSource.DEVICE and o.received_at == RECEIVED for o in first)
    assert first[0].device == DeviceRef(address=CUFF)


def test_a_reading_from_another_user_slot_is_flagged(manager: BleManager, outbox: Outbox) -> None:
    stamp = datetime(2025, 7, 1, 12, 0)
    manager.handle_value(SCALE, "2A9D", encode_weight(81.5, timestamp=stamp, user_id=3))
    manager.handle_value(
        SCALE, "2A9D", encode_weight(64.2, timestamp=stamp.replace(minute=1), user_id=4)
    )
    manager.handle_value(SCALE, "2A9D", encode_weight(81.4, timestamp=stamp.replace(minute=2)))
    # The thermometer has no user slot configured: never flagged.
    manager.handle_value(THERMO, "2A1C", encode_temperature(37.1, timestamp=stamp))
    flags = [(o.value, o.flags) for o in observations(outbox)]
    assert flags == [(81.5, ()), (64.2, (Flag.OTHER_USER,)), (81.4, ()), (37.1, ())]


@pytest.mark.parametrize(
    ("device_time", "utc"),
    [
        (datetime(2025, 1, 15, 12, 0), datetime(2025, 1, 15, 11, 0)),  # CET, +01:00
        (datetime(2025, 7, 1, 12, 0), datetime(2025, 7, 1, 10, 0)),  # CEST, +02:00
        (datetime(2025, 3, 30, 1, 59, 59), datetime(2025, 3, 30, 0, 59, 59)),  # before spring
        (datetime(2025, 3, 30, 3, 0), datetime(2025, 3, 30, 1, 0)),  # after spring change
        # The autumn hour 02:00-03:00 happens twice; the device cannot say which: the first.
        (datetime(2025, 10, 26, 2, 30), datetime(2025, 10, 26, 0, 30)),
        (datetime(2025, 10, 26, 3, 0), datetime(2025, 10, 26, 2, 0)),  # CET again
    ],
    ids=["winter", "summer", "before-spring", "after-spring", "autumn-repeat", "after-autumn"],
)
def test_device_time_in_copenhagen_becomes_utc(device_time: datetime, utc: datetime) -> None:
    reading = decode("2A1C", encode_temperature(37.2, timestamp=device_time))
    (obs,) = to_observations(
        reading,
        gateway_id="gw-app-test",
        device=DeviceRef(address=THERMO),
        zone=CPH,
        received_at=utc.replace(tzinfo=UTC) + timedelta(minutes=3),
    )
    assert obs.measured_at == utc.replace(tzinfo=UTC)
    assert obs.time_source is TimeSource.DEVICE
    assert Flag.DEVICE_TIME_MISSING not in obs.flags


def test_missing_or_unset_device_time_uses_the_gateway_time_with_a_flag(
    manager: BleManager, outbox: Outbox, clock: Clock
) -> None:
    manager.handle_value(THERMO, "2A1C", encode_temperature(37.3, site=BodySite.EAR))
    clock.now += timedelta(seconds=5)
    manager.handle_value(THERMO, "2A1C", encode_temperature(37.4, timestamp=(0, 4, 17, 9, 1, 2)))
    clock.now += timedelta(seconds=5)
    # A clock far ahead (the hub would refuse it) or years behind is replaced, flagged.
    manager.handle_value(THERMO, "2A1C", encode_temperature(37.5, timestamp=datetime(2025, 7, 2)))
    clock.now += timedelta(seconds=5)
    manager.handle_value(THERMO, "2A1C", encode_temperature(37.6, timestamp=datetime(2000, 1, 1)))
    a, b, c, d = observations(outbox)
    assert (a.measured_at, a.time_source, a.flags) == (
        RECEIVED,
        TimeSource.GATEWAY,
        (Flag.DEVICE_TIME_MISSING,),
    )
    assert a.body_site is BodySite.EAR
    assert b.measured_at == RECEIVED + timedelta(seconds=5)
    assert set(b.flags) == {Flag.DEVICE_CLOCK_NOT_SET, Flag.DEVICE_TIME_MISSING}
    for obs, offset in ((c, 10), (d, 15)):
        assert obs.measured_at == RECEIVED + timedelta(seconds=offset)
        assert obs.time_source is TimeSource.GATEWAY
        assert obs.flags == (Flag.DEVICE_CLOCK_CORRECTED,)


def test_current_time_value_is_local_exact_time_256() -> None:
    value = current_time_value(datetime(2025, 10, 26, 1, 30, 0, 500_000, tzinfo=UTC), CPH)
    # 02:30 CET (after the autumn change), a Sunday, half a second, external reference.
    assert value == bytes.fromhex("E9070A1A021E00078002")


# --------------------------------------------------------------------------- duplicates


def test_a_reading_delivered_twice_is_stored_once(
    manager: BleManager, outbox: Outbox, pairing: PairingList, clock: Clock
) -> None:
    frame = encode_weight(80.05, timestamp=datetime(2025, 7, 1, 12, 3), user_id=3)
    assert manager.handle_value(SCALE, "2A9D", frame, link=1) == 1
    clock.now += timedelta(seconds=2)
    assert manager.handle_value(SCALE, "2A9D", frame, link=2) == 0
    assert outbox.stats().pending == 1
    # Even once the first copy was published and left the outbox.
    outbox.remove([p.seq for p in outbox.peek(10)])
    assert manager.handle_value(SCALE, "2A9D", frame, link=3) == 0
    assert outbox.stats().pending == 0
    assert manager.stats()[SCALE].duplicates == 2 and manager.stats()[SCALE].readings == 1
    # A restarted gateway has no memory of recent ids: the outbox's stable id is the guard.
    restarted = BleManager(
        gateway_id="gw-app-test",
        pairing=pairing,
        outbox=outbox,
        backends=(None, None),
        zone=CPH,
        clock=clock,
    )
    restarted.reload()
    newer = encode_weight(80.0, timestamp=datetime(2025, 7, 1, 12, 4), user_id=3)
    assert manager.handle_value(SCALE, "2A9D", newer) == 1
    assert restarted.handle_value(SCALE, "2A9D", newer) == 0
    assert outbox.stats().pending == 1


def test_a_redelivered_reading_without_device_time_keeps_its_first_receive_time(
    manager: BleManager, outbox: Outbox, clock: Clock
) -> None:
    frame = encode_temperature(37.8, site=BodySite.MOUTH)
    assert manager.handle_value(THERMO, "2A1C", frame, link=1) == 1
    clock.now += timedelta(seconds=3)
    # The first value on the next link repeats the last one: the lost confirmation.
    assert manager.handle_value(THERMO, "2A1C", frame, link=2) == 0
    # The same value measured again later on the same link is a new reading.
    clock.now += timedelta(seconds=40)
    assert manager.handle_value(THERMO, "2A1C", frame, link=2) == 1
    assert [o.measured_at for o in observations(outbox)] == [
        RECEIVED,
        RECEIVED + timedelta(seconds=43),
    ]
    # Notifications are never redelivered: equal values are separate readings.
    assert manager.handle_value(SCALE, "2A37", encode_hr(70), link=1, indicated=False) == 1
    clock.now += timedelta(seconds=1)
    assert manager.handle_value(SCALE, "2A37", encode_hr(70), link=2, indicated=False) == 1


def test_undecodable_bytes_are_counted_kept_and_do_not_stop_anything(
    manager: BleManager, outbox: Outbox, pairing: PairingList
) -> None:
    assert manager.handle_value(CUFF, "2A35", bytes.fromhex("ff00")) == 0
    assert manager.handle_value(CUFF, "2A35", b"") == 0
    assert manager.handle_value(CUFF, "2A99", b"\x00\x01") == 0  # not a health characteristic
    assert manager.handle_value("00:00:00:00:00:99", "2A35", b"\x00") == 0  # not paired
    assert manager.decode_errors == 3 and manager.stats()[CUFF].decode_errors == 3
    kept = pairing.undecodable()
    assert [(k.characteristic, k.data) for k in kept][-1] == ("2A35", b"\xff\x00")
    assert "reserved flag bits" in kept[-1].error
    stamp = datetime(2025, 7, 1, 12, 0)
    assert manager.handle_value(CUFF, "2A35", encode_bp(120, 80, 93, timestamp=stamp)) == 3
    assert outbox.stats().pending == 3


def test_a_profile_decodes_a_quirky_cuff(manager: BleManager, pairing: PairingList) -> None:
    from simulator.sig_encoders import encode_bp_flags56_bigendian

    frame = encode_bp_flags56_bigendian(
        130, 85, 100, timestamp=datetime(2025, 7, 1, 11, 0), pulse=72, user_id=1
    )
    assert manager.handle_value(CUFF, "2A35", frame) == 0  # strict decoder refuses it
    pairing.add(CUFF, "bp", user_id=1, profile="bp_flags56_bigendian")
    manager.reload()
    assert manager.handle_value(CUFF, "2A35", frame) == 4


# --------------------------------------------------------------------------- the app


def app_settings(tmp_path: Path) -> Settings:
    # A broker port where nothing listens: these tests are about the gateway itself. Gateways
    # always use TLS, so they need a CA file (a throw-away one: nothing is ever verified).
    tls = TlsFiles(ca_dir=tmp_path / "tls", server_dir=tmp_path / "tls")
    ensure_certificates(tls, ["127.0.0.1"])
    return Settings(
        state_dir=tmp_path,
        gateway_dir=tmp_path / "gw",
        gateway_id="gw-app-test",
        mqtt_tls_port=free_port(),
        mqtt_tls_ca=tls.ca_cert,
        mqtt_password=SecretStr("unused"),
        ble_transport="bumble",
    )


@pytest.fixture
async def home() -> AsyncIterator[EmulatedHome]:
    async with EmulatedHome([Thermometer(), WeightScale()]) as h:
        yield h


async def until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.01)


def command(name: CommandName, *, cid: uuid.UUID | None = None, **kw: str) -> Command:
    return Command(id=cid or uuid.uuid4(), command=name, issued_at=datetime.now(UTC), **kw)


async def test_commands_measure_again_duplicates_and_config_changed(
    tmp_path: Path, home: EmulatedHome
) -> None:
    settings = app_settings(tmp_path)
    thermometer, scale = home.get(Thermometer), home.get(WeightScale)
    with PairingList(tmp_path / "gw" / "pairing.db") as pl:
        pl.add(thermometer.address, "thermometer")
    shown = []
    async with home.central() as central, GatewayApp(settings, backends=central.backends()) as app:
        app.on_notice = shown.append
        await until(lambda: thermometer.subscribed())
        assert not scale.connected
        again = command(
            CommandName.MEASURE_AGAIN, kind="spo2", message="Mål venligst iltmætning igen"
        )
        app.handle_command(again)
        app.handle_command(again)  # QoS 1 delivers at least once
        assert [(n.kind, n.message) for n in shown] == [("spo2", "Mål venligst iltmætning igen")]
        assert app.commands_handled == 1 and app.commands_ignored == 1
        app.handle_command(command(CommandName.MEASURE_AGAIN))
        assert [n.message for n in app.notices.recent()] == [
            "Please take the measurement again.",
            "Mål venligst iltmætning igen",
        ]
        # The pairing list changed on disk; config_changed makes the gateway read it again.
        app.pairing.add(scale.address, "scale", user_id=1)
        app.pairing.remove(thermometer.address)
        app.handle_command(command(CommandName.CONFIG_CHANGED))
        await until(lambda: scale.subscribed() and not thermometer.connected)
        await scale.measure(encode_weight(77.0, timestamp=datetime.now(CPH).replace(tzinfo=None)))
        await until(lambda: app.outbox.stats().pending == 1)
        assert app.ble.stats()[scale.address].clock_writes == 1
    # A command already handled stays handled after a restart (the broker may redeliver).
    with Notices(tmp_path / "gw" / "notices.db") as notices:
        assert not notices.first_time(again.id)
        assert notices.first_time(uuid.uuid4())


async def test_a_device_out_of_range_is_read_again_when_it_returns(
    tmp_path: Path, home: EmulatedHome
) -> None:
    thermometer = home.get(Thermometer)
    with PairingList(tmp_path / "gw" / "pairing.db") as pl:
        pl.add(thermometer.address, "thermometer")
    async with (
        home.central() as central,
        GatewayApp(app_settings(tmp_path), backends=central.backends()) as app,
    ):
        await until(thermometer.subscribed)
        await thermometer.go_out_of_range()
        await until(lambda: not app.ble.connected(thermometer.address))
        await thermometer.measure(encode_temperature(36.9, timestamp=datetime(2025, 7, 1, 9)))
        await asyncio.sleep(0.2)
        assert app.outbox.stats().pending == 0
        await thermometer.come_back()
        await until(lambda: app.outbox.stats().pending == 1)
        stats = app.ble.stats()[thermometer.address]
        assert stats.connections == 2 and stats.readings == 1


# --------------------------------------------------------------------------- CLI


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vitalvagt.cli", "gateway", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONWARNINGS": "ignore", **env},
    )


async def test_cli_pair_devices_and_notices(tmp_path: Path, home: EmulatedHome) -> None:
    spec = await home.link.serve_hci_tcp()
    scale = home.get(WeightScale)
    env = {
        "VV_STATE_DIR": str(tmp_path),
        "VV_GATEWAY_DIR": str(tmp_path / "gw"),
        "VV_BLE_TRANSPORT": f"bumble:{spec}",
    }
    args = ("pair", "--type", "scale", "--scan-s", "0.5", "--user-id", "2")
    proc = await asyncio.to_thread(cli, env, *args)
    assert proc.returncode == 0, proc.stderr
    assert f"paired {scale.address} VV-WSC (scale, Vitalvagt Sim SIM-1, user 2)" in proc.stdout
    proc = await asyncio.to_thread(cli, env, "devices", "--json")
    (device,) = json.loads(proc.stdout)
    assert device["address"] == scale.address and device["serial"] == scale.info.serial
    assert device["type"] == "scale" and device["user_id"] == 2
    # Two health devices advertise: without a type or address the operator must choose.
    proc = await asyncio.to_thread(cli, env, "pair", "--scan-s", "0.5")
    assert proc.returncode == 2 and "choose one with --address" in proc.stderr
    proc = await asyncio.to_thread(cli, env, "notices")
    assert proc.returncode == 0 and proc.stdout.strip() == "no notices"
    for sub in ("pair", "devices", "notices", "run"):
        help_text = (await asyncio.to_thread(cli, env, sub, "--help")).stdout
        assert "Needs" in help_text, sub


def test_a_tablet_without_bumble_runs_the_native_transport() -> None:
    code = (
        "import sys, asyncio\n"
        "sys.modules['bumble'] = None  # not installed\n"
        "import gateway.app, gateway.ble, gateway.cli\n"
        "from gateway.ble_connect import ble_backends\n"
        "async def main():\n"
        "    async with ble_backends('native') as backends:\n"
        "        assert backends == (None, None)\n"
        "asyncio.run(main())\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "ok", proc.stderr


async def test_transport_plugins_are_found_by_entry_point_and_unknown_ones_named() -> None:
    from simulator.bumble_client import BumbleClientBackend
    from simulator.bumble_scanner import BumbleScannerBackend

    assert "bumble" in backend_plugins()
    async with ble_backends(" Bumble ") as backends:
        assert backends == (BumbleScannerBackend, BumbleClientBackend)
    for bad in ("bluez", "native:hci0", "bumble:"):
        with pytest.raises(GatewayError, match="VV_BLE_TRANSPORT") as caught:
            async with ble_backends(bad):
                pass
        if bad != "bumble:":
            assert "'native'" in str(caught.value) and "'bumble'" in str(caught.value)


def test_cli_run_and_pair_say_which_setting_is_missing_or_wrong(tmp_path: Path) -> None:
    def bare(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
        """The command with only these VV_ settings (none inherited from the test run)."""
        base = {k: v for k, v in os.environ.items() if not k.startswith("VV_")}
        return subprocess.run(
            [sys.executable, "-m", "vitalvagt.cli", "gateway", *args],
            capture_output=True,
            text=True,
            timeout=60,
            env={**base, "PYTHONWARNINGS": "ignore", **env},
        )

    env = {"VV_STATE_DIR": str(tmp_path), "VV_GATEWAY_DIR": str(tmp_path / "gw")}
    proc = bare(env, "run", "--duration-s", "1")
    assert proc.returncode == 2 and "VV_GATEWAY_ID is not set" in proc.stderr, proc.stderr
    proc = bare({**env, "VV_GATEWAY_ID": "gw-run-1"}, "run", "--duration-s", "1")
    assert proc.returncode == 2 and "set VV_MQTT_PASSWORD" in proc.stderr, proc.stderr
    proc = bare({**env, "VV_BLE_TRANSPORT": "bluez"}, "pair", "--scan-s", "0.1")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "VV_BLE_TRANSPORT='bluez' is not a known BLE transport" in proc.stderr


def test_cli_notices_show_the_hubs_receipt_and_what_the_outbox_lost(tmp_path: Path) -> None:
    """What the tablet shows: "received by the hub" from the last receipt, and a line for the
    operator when the outbox dropped or found damaged readings (read from its state file, so
    it works while the gateway runs and holds the outbox's lock)."""
    env = {"VV_STATE_DIR": str(tmp_path), "VV_GATEWAY_DIR": str(tmp_path / "gw")}
    at = datetime(2026, 11, 30, 21, 15, tzinfo=UTC)
    with Notices(tmp_path / "gw" / "notices.db") as notices:
        notices.record_receipt(ReceivedByHub(readings=4, at=at))
    proc = cli(env, "notices")
    assert proc.returncode == 0, proc.stderr
    assert "2026-11-30 22:15" in proc.stdout and "received by the hub (4 readings)" in proc.stdout
    assert "lost readings" not in proc.stdout
    with Outbox(tmp_path / "gw" / "outbox") as ob:  # a real outbox's state file, then damage
        ob.add([Observation.create(
            gateway_id="gw-notices", kind=Kind.SPO2, value=95, unit="%", measured_at=at,
            received_at=at, device=DeviceRef(address="AA:BB:CC:DD:EE:01"),
        )])  # fmt: skip
    state = tmp_path / "gw" / "outbox" / "state.json"
    doc = json.loads(state.read_text())
    state.write_text(json.dumps({**doc, "dropped_total": 3, "damaged_total": 2}))
    proc = cli(env, "notices")
    assert "3 dropped when it was full, 2 found damaged" in proc.stdout, proc.stdout
