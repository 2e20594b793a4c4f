"""End to end: five emulated BLE devices on bumble -> the gateway -> the real mosquitto.

Nothing is mocked: the devices are bumble peripherals with their own emulated controllers,
the gateway reads them through bleak with the bumble backend, publishes with paho to the
session's mosquitto, and a test subscriber (the ingest service user) checks every reading
against what the device was told to measure.
"""

from __future__ import annotations

import asyncio
import os
import queue
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
import pytest
from pydantic import SecretStr

from gateway import battery
from gateway.app import GatewayApp
from gateway.pairing import PairingList
from ingest.service import IngestService
from simulator.ble_devices import (
    BloodPressureMonitor,
    Fault,
    HeartRateSensor,
    PulseOximeter,
    Thermometer,
    WeightScale,
    standard_devices,
)
from simulator.ble_home import EmulatedHome
from simulator.sig_encoders import (
    encode_bp,
    encode_hr,
    encode_plx_continuous,
    encode_plx_spot,
    encode_temperature,
    encode_weight,
)
from tests.mqtt import Connected, connect
from vitalvagt.kinds import Kind
from vitalvagt.observation import BodySite, Observation, TimeSource
from vitalvagt.quality import Flag
from vitalvagt.settings import Settings
from vitalvagt.stack import Stack
from vitalvagt.wire import (
    Command,
    CommandName,
    GatewayState,
    GatewayStatus,
    cmd_topic,
    decode_batch,
    decode_status,
    encode,
    status_topic,
)

pytestmark = [pytest.mark.stack, pytest.mark.timeout(60)]

CPH = ZoneInfo("Europe/Copenhagen")
USER = 1  # the patient's slot on the cuff and the scale


@dataclass(frozen=True)
class Expected:
    kind: Kind
    value: float
    unit: str
    measured_at: datetime | None  # None: the gateway's receive time (no device time)
    flags: frozenset[Flag] = frozenset()
    body_site: BodySite | None = None


class Subscriber:
    """Observations the hub would receive, decoded and checked by the wire codec."""

    def __init__(self, conn: Connected) -> None:
        self.conn = conn
        self.observations: list[Observation] = []

    def _drain(self) -> None:
        while True:
            try:
                topic, payload = self.conn.messages.get_nowait()
            except queue.Empty:
                return
            gateway_id = topic.split("/")[3]
            batch = decode_batch(payload, topic_gateway_id=gateway_id)  # ids verified too
            self.observations.extend(batch.observations)

    async def until(self, condition: Callable[[list[Observation]], bool], timeout_s=10.0) -> None:
        async with asyncio.timeout(timeout_s):
            while True:
                self._drain()
                if condition(self.observations):
                    return
                await asyncio.sleep(0.02)

    async def quiet(self, for_s: float = 0.5) -> None:
        await asyncio.sleep(for_s)
        self._drain()


def local_now() -> datetime:
    """The device clocks' wall time (the gateway set them to Copenhagen time), whole seconds."""
    return datetime.now(UTC).astimezone(CPH).replace(tzinfo=None, microsecond=0)


def utc(device_time: datetime) -> datetime:
    return device_time.replace(tzinfo=CPH).astimezone(UTC)


async def until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.01)


@pytest.fixture
async def home() -> AsyncIterator[EmulatedHome]:
    # The cuff accepts subscriptions only on an encrypted link: the gateway must bond.
    async with EmulatedHome(standard_devices(requires_bonding=True, seed=11)) as h:
        yield h


@pytest.fixture
def subscriber(stack: Stack, gateway_creds: tuple[str, str]):
    gw, _ = gateway_creds
    conn = connect(
        stack.settings.mqtt_port,
        "vv-ingest",
        stack.secrets()["vv-ingest"],
        subscribe=f"vv/v1/gw/{gw}/obs",
    )
    yield Subscriber(conn)
    conn.close()


@pytest.fixture
async def app(
    stack: Stack, gateway_creds: tuple[str, str], tmp_path: Path, home: EmulatedHome
) -> AsyncIterator[GatewayApp]:
    gw, password = gateway_creds
    settings = Settings(
        state_dir=tmp_path,
        gateway_dir=tmp_path / "gw",
        gateway_id=gw,
        mqtt_tls_port=stack.settings.mqtt_tls_port,  # gateways: the TLS listener
        mqtt_tls_ca=stack.paths.ca_cert,
        mqtt_password=SecretStr(password),
        local_tz="Europe/Copenhagen",
        ble_transport="bumble",
    )
    kinds = {
        BloodPressureMonitor: ("bp", USER),
        PulseOximeter: ("oximeter", None),
        HeartRateSensor: ("hr", None),
        WeightScale: ("scale", USER),
        Thermometer: ("thermometer", None),
    }
    with PairingList(tmp_path / "gw" / "pairing.db") as pairing:
        for device in home.devices:
            kind, user = kinds[type(device)]
            pairing.add(
                device.address,
                kind,
                name=device.name,
                user_id=user,
                requires_bonding=device.requires_bonding,
            )
    # No automatic pairing on a security error (BlueZ's habit): bonding is the gateway's job.
    central = home.central(auto_pair_on_insufficient_security=False)
    async with central, GatewayApp(settings, backends=central.backends()) as a:
        await until(lambda: a.publisher.connected)
        await until(lambda: all(d.subscribed(s.uuid) for d in home.devices for s in d.MEASUREMENTS))
        yield a


async def measure_all(home: EmulatedHome, at: datetime, *, seq: int = 0) -> list[Expected]:
    """Every device measures once; returns what the hub must receive."""
    cuff, oxi = home.get(BloodPressureMonitor), home.get(PulseOximeter)
    strap, scale, thermo = home.get(HeartRateSensor), home.get(WeightScale), home.get(Thermometer)
    t_bp, t_oxi, t_scale, t_temp = (at + timedelta(seconds=i) for i in range(4))
    systolic, weight = 138 + seq, 82.35 + seq
    await cuff.measure(
        encode_bp(
            systolic,
            88,
            105,
            timestamp=t_bp,
            pulse=62,
            user_id=USER,
            status=[Flag.IRREGULAR_PULSE, Flag.PULSE_ABOVE_RANGE],
        )
    )
    await oxi.measure(encode_plx_spot(96, 71, timestamp=t_oxi, meas_status=[Flag.VALIDATED]))
    await oxi.measure_continuous(encode_plx_continuous(93, 74, device_status=[Flag.POOR_SIGNAL]))
    await strap.measure(encode_hr(77, contact=False))
    # Another member of the household on the scale's slot 2.
    await scale.measure(encode_weight(weight, timestamp=t_scale, user_id=USER + 1))
    await thermo.measure(encode_temperature(37.6, timestamp=t_temp, site=BodySite.TYMPANUM))
    bp_flags = frozenset({Flag.IRREGULAR_PULSE, Flag.PULSE_ABOVE_RANGE})
    no_time = frozenset({Flag.DEVICE_TIME_MISSING})
    return [
        Expected(Kind.BP_SYSTOLIC, systolic, "mm[Hg]", utc(t_bp), bp_flags),
        Expected(Kind.BP_DIASTOLIC, 88, "mm[Hg]", utc(t_bp), bp_flags),
        Expected(Kind.BP_MEAN, 105, "mm[Hg]", utc(t_bp), bp_flags),
        Expected(Kind.PULSE, 62, "/min", utc(t_bp), bp_flags),
        Expected(Kind.SPO2, 96, "%", utc(t_oxi), frozenset({Flag.VALIDATED})),
        Expected(Kind.PULSE, 71, "/min", utc(t_oxi), frozenset({Flag.VALIDATED})),
        Expected(Kind.SPO2, 93, "%", None, no_time | {Flag.POOR_SIGNAL}),
        Expected(Kind.PULSE, 74, "/min", None, no_time | {Flag.POOR_SIGNAL}),
        Expected(Kind.PULSE, 77, "/min", None, no_time | {Flag.NO_SKIN_CONTACT}),
        Expected(Kind.WEIGHT, weight, "kg", utc(t_scale), frozenset({Flag.OTHER_USER})),
        Expected(Kind.TEMPERATURE, 37.6, "Cel", utc(t_temp), frozenset(), BodySite.TYMPANUM),
    ]


def as_expected(obs: Observation, window: tuple[datetime, datetime]) -> Expected:
    if obs.time_source is TimeSource.GATEWAY:
        assert window[0] <= obs.measured_at <= window[1], "receive time outside the test"
        measured_at = None
    else:
        measured_at = obs.measured_at
    return Expected(obs.kind, obs.value, obs.unit, measured_at, frozenset(obs.flags), obs.body_site)


async def test_every_reading_arrives_as_the_device_measured_it(
    app: GatewayApp, home: EmulatedHome, subscriber: Subscriber
) -> None:
    before = datetime.now(UTC)
    at = local_now() - timedelta(minutes=5)
    expected = await measure_all(home, at)
    await subscriber.until(lambda got: len(got) >= len(expected))
    await subscriber.quiet(0.3)
    window = (before, datetime.now(UTC))
    got = subscriber.observations
    assert Counter(as_expected(o, window) for o in got) == Counter(expected)
    # One reading id per reading; the BP parts share theirs.
    by_reading = Counter(o.reading_id for o in got)
    assert sorted(by_reading.values()) == [1, 1, 1, 2, 2, 4]
    # Device Information read once and carried in every observation; clocks were set.
    for device in home.devices:
        refs = {o.device for o in got if o.device.address == device.address}
        assert {(r.model, r.serial) for r in refs} == {(device.info.model, device.info.serial)}
        if device.has_current_time:
            (written,) = device.clock_writes
            year, month, day, hour, minute, second = (
                int.from_bytes(written[:2], "little"),
                *written[2:7],
            )
            clock = datetime(year, month, day, hour, minute, second)
            assert abs(clock - local_now()) < timedelta(seconds=30)
    assert app.pairing.get(home.devices[0].address).battery_level == 87  # type: ignore[union-attr]
    assert app.ble.decode_errors == 0


async def test_link_drops_and_random_bytes_lose_nothing_and_duplicate_nothing(
    app: GatewayApp, home: EmulatedHome, subscriber: Subscriber, ingest: IngestService
) -> None:
    cuff, scale, thermo = (
        home.get(BloodPressureMonitor),
        home.get(WeightScale),
        home.get(Thermometer),
    )
    at = local_now() - timedelta(minutes=10)
    # The scale drops the link after sending: the gateway got the value, the scale never got
    # the confirmation and sends it again after reconnecting.
    scale.arm_fault(Fault.DROP_DURING_SEND)
    await scale.measure(encode_weight(90.5, timestamp=at, user_id=USER))
    # The cuff drops the link instead of sending: the reading comes on the next link.
    cuff.arm_fault(Fault.DROP_BEFORE_SEND)
    await cuff.measure(encode_bp(121, 79, 93, timestamp=at, pulse=58, user_id=USER))
    # The thermometer sends garbage once.
    thermo.arm_fault(Fault.RANDOM_BYTES)
    await thermo.measure(encode_temperature(36.8, timestamp=at))
    await until(lambda: not scale.queued and not cuff.queued and not thermo.queued)
    assert scale.transmitted.count(scale.transmitted[0]) == 2  # really sent twice
    assert app.ble.decode_errors == 1
    assert app.pairing.undecodable()[0].address == thermo.address

    stats = app.ble.stats()
    assert stats[scale.address].connections == 2 and stats[scale.address].duplicates == 1
    assert stats[cuff.address].connections == 2 and stats[cuff.address].readings == 1
    assert stats[thermo.address].readings == 0 and stats[thermo.address].decode_errors == 1

    # Afterwards BLE and broker are fine: a full round from every device arrives.
    before = datetime.now(UTC)
    expected = await measure_all(home, at + timedelta(minutes=1), seq=1)
    await subscriber.until(lambda got: len(got) >= 5 + len(expected))
    await subscriber.quiet(0.5)
    got = subscriber.observations
    ids = Counter(o.id for o in got)
    assert max(ids.values()) == 1, "a reading arrived twice"
    weights = [o for o in got if o.kind is Kind.WEIGHT and o.measured_at == utc(at)]
    assert [(w.value, w.flags) for w in weights] == [(90.5, ())]
    assert sorted(o.value for o in got if o.measured_at == utc(at)) == [58, 79, 90.5, 93, 121]
    window = (before, datetime.now(UTC))
    later = [as_expected(o, window) for o in got if o.measured_at != utc(at)]
    assert Counter(later) == Counter(expected)
    await until(lambda: app.outbox.stats().pending == 0)
    assert app.publisher.connected


async def test_commands_from_the_hub_over_the_broker(
    app: GatewayApp, stack: Stack, gateway_creds: tuple[str, str]
) -> None:
    gw, _ = gateway_creds
    hub = connect(stack.settings.mqtt_port, "vv-alerts", stack.secrets()["vv-alerts"])
    try:
        again = Command(
            id=uuid.uuid4(),
            command=CommandName.MEASURE_AGAIN,
            issued_at=datetime.now(UTC),
            kind="spo2",
            message="Mål venligst iltmætning igen",
        )
        for _ in range(2):  # the same command twice: shown once
            reason = await asyncio.to_thread(hub.publish, cmd_topic(gw), encode(again))
            assert not reason.is_failure
        await until(lambda: app.commands_handled + app.commands_ignored == 2)
        assert [(n.kind, n.message) for n in app.notices.recent()] == [
            ("spo2", "Mål venligst iltmætning igen")
        ]
    finally:
        hub.close()


@pytest.fixture
def fast_battery(monkeypatch: pytest.MonkeyPatch) -> None:
    """The battery report's intervals shortened (10 s and 5 minutes as shipped); before the
    app starts, so request it first."""
    monkeypatch.setattr(battery, "FIRST_LEVEL_S", 0.2)
    monkeypatch.setattr(battery, "STEP_INTERVAL_S", 0.5)


async def test_battery_levels_read_over_bumble_arrive_in_the_status_payload(
    fast_battery: None,
    stack: Stack,
    ingest: IngestService,
    gateway_creds: tuple[str, str],
    app: GatewayApp,
    home: EmulatedHome,
) -> None:
    gw, _ = gateway_creds
    watcher = connect(
        stack.settings.mqtt_port,
        "vv-ingest",
        stack.secrets()["vv-ingest"],
        subscribe=status_topic(gw),
    )
    statuses: list[GatewayStatus] = []

    async def status_where(cond: Callable[[dict[str, int | None]], bool]) -> GatewayStatus:
        async with asyncio.timeout(10):
            while True:
                while not watcher.messages.empty():
                    _, payload = watcher.messages.get_nowait()
                    statuses.append(decode_status(payload, topic_gateway_id=gw))
                for st in statuses:
                    if st.devices and cond({d.address: d.battery_level for d in st.devices}):
                        return st
                await asyncio.sleep(0.02)

    try:
        # Each device's level, read over bumble when the gateway connected to it, is in the
        # retained online status (the one on connecting, or the one sent when they came).
        first = await status_where(lambda got: got == {d.address: 87 for d in home.devices})
        assert first.state is GatewayState.ONLINE
        cuff, oxi = home.get(BloodPressureMonitor), home.get(PulseOximeter)
        models = {d.address: d.model for d in first.devices or ()}
        assert models[cuff.address] == cuff.info.model
        # A new level (notified) is sent again once it moved by 5 points or more.
        cuff.battery_level = 40
        statuses.clear()
        changed = await status_where(lambda got: got[cuff.address] == 40)
        (entry,) = [d for d in changed.devices or () if d.address == cuff.address]
        assert entry.battery_at is not None and entry.battery_at > first.at
        # An invalid level (over 100) is dropped by the gateway: nothing changes, nothing fails.
        assert oxi.battery is not None and await oxi.battery.notify(bytes([150]))
        await until(lambda: app.ble.stats()[oxi.address].battery_invalid == 1)
        assert app.ble.battery(oxi.address).level == 87  # type: ignore[union-attr]
        assert app.publisher.connected and app.ble.connected(oxi.address)
        # Ingest recorded the levels on the hub's device rows.
        with psycopg.connect(stack.database_url(), autocommit=True) as conn:

            def levels() -> dict[str, int]:
                rows = conn.execute(
                    "SELECT address, battery_level FROM devices WHERE gateway_id = %s", (gw,)
                ).fetchall()
                return dict(rows)

            await until(lambda: levels().get(cuff.address) == 40)
            assert levels() == {d.address: 40 if d is cuff else 87 for d in home.devices}
    finally:
        watcher.close()


def test_run_emulated_publishes_a_whole_home(stack: Stack, tmp_path: Path) -> None:
    """`vitalvagt simulate home` (formerly `gateway run --emulated`) as an operator runs it,
    on the embedded stack."""
    s = stack.settings
    watcher = connect(
        s.mqtt_port,
        "vv-ingest",
        stack.secrets()["vv-ingest"],
        subscribe="vv/v1/gw/gw-emulated-1/obs",
    )
    env = {
        **os.environ,
        "PYTHONWARNINGS": "ignore",
        "VV_STATE_DIR": str(s.state_dir),
        "VV_PG_PORT": str(s.pg_port),
        "VV_MQTT_PORT": str(s.mqtt_port),
        "VV_MQTT_TLS_PORT": str(s.mqtt_tls_port),
        "VV_GATEWAY_DIR": str(tmp_path / "gw"),
    }
    for name in (
        "VV_GATEWAY_ID",
        "VV_MQTT_PASSWORD",
        "VV_MQTT_HOST",
        "VV_MQTT_TLS_CA",
        "VV_BLE_TRANSPORT",
    ):
        env.pop(name, None)
    try:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "vitalvagt.cli",
                "simulate",
                "home",
                "--measure-every-s",
                "1",
                "--duration-s",
                "4",
            ],
            capture_output=True,
            text=True,
            timeout=45,
            env=env,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "provisioned gateway gw-emulated-1" in proc.stdout
        want = {"bp_systolic", "bp_diastolic", "bp_mean", "pulse", "spo2", "weight", "temperature"}
        kinds: set[str] = set()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not want <= kinds:
            try:
                _, payload = watcher.messages.get(timeout=0.2)
            except queue.Empty:
                continue
            batch = decode_batch(payload, topic_gateway_id="gw-emulated-1")
            kinds |= {o.kind.value for o in batch.observations}
        assert kinds == want
    finally:
        watcher.close()
