"""Fleets of simulated homes publishing over MQTT, each with its own gateway credentials.

A fleet is a cohort (simulator/cohort.py) replayed against a running hub: every home gets a
patient and a gateway provisioned in the database (re-keyed on each run), connects to the
broker's gateway listener as that gateway (TLS, verifying the broker against ``tls_ca``), and
publishes its batches when they are due on the fleet's clock.

The clock runs ``speed`` times faster than real time from the cohort's start and never
passes the real present, so the hub never sees a reading from the future: with the default
start (``days`` before today) the fleet first replays the past at speed, then carries on in
real time. Many paho clients share a few worker threads, each driving its clients' network
loops itself, so a thousand homes do not need a thousand threads.

Once the clock is live, a home with a ``ContinuousStream`` also streams continuous oximetry
(about a reading a second, a few readings a message) over one session that stays open, as a
COPD patient's oximeter worn at night would through the tablet.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
import uuid
import zlib
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

from simulator.cohort_format import DeviceRecord, Home, PatientRecord
from simulator.errors import SimulatorError
from simulator.fleet_stats import FleetStats
from simulator.physiology import ContinuousOximetry, Event
from vitalvagt.db.gateways import provision_gateway
from vitalvagt.devices import DeviceType
from vitalvagt.kinds import KIND_SPECS, Kind
from vitalvagt.mqtt_cleanup import client_tls_context, close_leftover_socket
from vitalvagt.observation import DeviceRef, Observation, TimeSource
from vitalvagt.quality import Flag
from vitalvagt.wire import (
    GatewayState,
    GatewayStatus,
    StatusDevice,
    encode,
    make_batch,
    obs_topic,
    status_topic,
)

log = logging.getLogger(__name__)

DEMO_MUNICIPALITY = ("0751", "Aarhus Kommune (simulated)")
DEMO_TEAM = ("sim-akutteam-aarhus", "Akutteam Aarhus (simulated)", "+45 00 00 00 00")
MAX_INFLIGHT_PER_HOME = 20
BATTERY_DRAIN_PER_DAY = 3.0  # as the emulated BLE devices' (simulator/ble_battery.py)
CONTINUOUS_READINGS_PER_MESSAGE = 5  # a continuous oximeter's readings (one a second) a message


def provision_fleet(database_url: str, patients: Sequence[PatientRecord]) -> dict[str, str]:
    """Register the cohort's patients and gateways; returns gateway id -> new MQTT password."""
    passwords = {}
    with psycopg.connect(database_url) as conn, conn.transaction():
        conn.execute(
            "INSERT INTO municipalities (id, name) VALUES (%s, %s) ON CONFLICT DO NOTHING",
            DEMO_MUNICIPALITY,
        )
        conn.execute(
            "INSERT INTO acute_teams (id, municipality_id, name, phone) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT DO NOTHING",
            (DEMO_TEAM[0], DEMO_MUNICIPALITY[0], DEMO_TEAM[1], DEMO_TEAM[2]),
        )
        for p in patients:
            conn.execute(
                "INSERT INTO patients (id, municipality_id, team_id, patient_group) VALUES"
                " (%s, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET active = true",
                (p.patient_id, DEMO_MUNICIPALITY[0], DEMO_TEAM[0], p.group.value),
            )
            passwords[p.gateway_id] = provision_gateway(conn, p.gateway_id, patient_id=p.patient_id)
    return passwords


def write_gateway_passwords(database_url: str, config_dir: Path | str) -> int:
    """Rewrite the gateway listener's password file in a container broker's configuration
    directory (where `vitalvagt broker config` wrote it) from the database's active gateways;
    returns how many it holds. Atomic (mosquitto never reads half a file) and, when run as
    root, owned as the file it replaces, so that the broker can still read it.

    A broker loads the file when it starts: docker-compose.yml's mosquitto service restarts
    it when the file changes (not SIGHUP: docs/operations.md, "Broker reloads"). The embedded
    stack has its own (``Stack.sync_broker_users``)."""
    from vitalvagt.broker import BrokerFiles, gateway_password_lines
    from vitalvagt.db.gateways import gateway_credential_hashes

    path = BrokerFiles(Path(config_dir)).gateways_passwd
    if not path.is_file():
        raise SimulatorError(
            f"{path} is missing: write the broker's configuration first (`vitalvagt broker"
            f" config --out {config_dir}`, the compose service broker-config)"
        )
    hashes = gateway_credential_hashes(database_url)
    text = gateway_password_lines(hashes)
    owner = path.stat()
    tmp = path.with_name(path.name + ".sim.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    if os.geteuid() == 0:
        os.chown(tmp, owner.st_uid, owner.st_gid)
    os.replace(tmp, path)
    log.info("fleet: %d gateways written to %s", len(hashes), path)
    return len(hashes)


@dataclass
class _Home:
    gateway_id: str
    password: str
    batches: list[tuple[datetime, bytes, int]]  # (due on the fleet clock, payload, readings)
    next: int = 0
    active: bool = False  # a session is running for it
    announced: bool = False  # the retained "online" status was sent
    refused: str | None = None
    stream: ContinuousStream | None = None  # continuous oximetry while the fleet runs live
    devices: tuple[DeviceRecord, ...] = ()  # reported with their batteries when online
    # The stream's messages, due at once: the run loop appends, the home's session takes.
    live: deque[tuple[datetime, bytes, int]] = field(default_factory=deque)

    def due(self, now: datetime) -> bool:
        return bool(self.live) or (
            self.next < len(self.batches) and self.batches[self.next][0] <= now
        )

    @property
    def done(self) -> bool:
        return self.next >= len(self.batches) and not self.live


def battery_level(address: str, days: float) -> int:
    """A simulated device's battery after ``days`` of the fleet's time: 60-100 % at the start
    (by its address, so each device keeps its own), then down by the emulated BLE devices'
    3 points a day (simulator/ble_battery.py), never below 0."""
    start = 60 + zlib.crc32(address.encode()) % 41
    return max(0, round(start - BATTERY_DRAIN_PER_DAY * days))


class FleetClock:
    """Simulated time: ``start`` + ``speed`` x elapsed real time, never past the real now."""

    def __init__(self, start: datetime, speed: float) -> None:
        self.start, self.speed, self._t0 = start, speed, time.monotonic()

    def now(self) -> datetime:
        sim = self.start.timestamp() + (time.monotonic() - self._t0) * self.speed
        return datetime.fromtimestamp(min(sim, time.time()), UTC)

    @property
    def live(self) -> bool:
        """The replay has caught up with the real clock: readings fall due as they happen."""
        return self.start.timestamp() + (time.monotonic() - self._t0) * self.speed >= time.time()


def continuous_homes(homes: Sequence[Home], n: int) -> list[Home]:
    """The ``n`` homes that stream continuous oximetry: homes with an oximeter, COPD patients
    (alone or with heart failure) first, then by the patient's SpO2 baseline, highest first.

    The alert engine evaluates every reading; a stream a second from a patient who lives near
    a saturation limit would open and close an alert every few seconds, which is noise, not
    life. Patients in cohort order break ties, so the choice is deterministic."""
    with_oximeter = [
        h for h in homes if any(d.type is DeviceType.OXIMETER for d in h.patient.devices)
    ]

    def order(h: Home) -> tuple[bool, float, int]:
        copd = h.patient.group.value in ("copd", "both")
        return (not copd, -h.patient.baseline.get(Kind.SPO2, 0.0), h.patient.index)

    return sorted(with_oximeter, key=order)[:n]


class ContinuousStream:
    """One home's oximeter in continuous mode (PLX Continuous 0x2A5F, a reading a second)
    while the fleet's clock is live, until ``until``.

    Observations are made as the gateway makes them from a PLX Continuous value
    (gateway/ble.py ``to_observations``): the value has no device time, so the measured time is
    the gateway's receive time, with ``TimeSource.GATEWAY`` and ``Flag.DEVICE_TIME_MISSING``;
    SpO2 and pulse of one value share a reading id. The patient's own oximeter (address and
    model from the cohort) measures, and ``ContinuousOximetry`` gives the values: baseline,
    rhythm and the patient's clinical events from the cohort's ground truth.
    """

    def __init__(self, home: Home, events: Sequence[Event], *, seed: int, until: datetime,
                 per_message: int = CONTINUOUS_READINGS_PER_MESSAGE) -> None:  # fmt: skip
        dev = next(d for d in home.patient.devices if d.type is DeviceType.OXIMETER)
        self.gateway_id = home.gateway_id
        self.device = DeviceRef(address=dev.address, model=dev.model)
        self.until, self.per_message = until, per_message
        # Its own generator: the cohort's patients are the same with or without a stream.
        seq = np.random.SeedSequence(seed, spawn_key=(home.patient.index, 1_000))
        mine = [e for e in events if e.patient_id == home.patient.patient_id]
        self._oximetry = ContinuousOximetry(np.random.default_rng(seq), home.patient.baseline,
                                            mine)  # fmt: skip
        self._next_s: int | None = None  # the next whole second to read

    def over(self, now: datetime) -> bool:
        return now >= self.until

    def due(self, clock: FleetClock) -> list[tuple[datetime, bytes, int]]:
        """The messages of the readings taken since the last call, whole messages only."""
        if not clock.live:
            return []
        now = clock.now()
        now_s = math.floor(min(now, self.until).timestamp())
        if self._next_s is None:
            self._next_s = now_s
        count = (now_s - self._next_s + 1) // self.per_message * self.per_message
        if count <= 0:
            return []
        seconds = [self._next_s + i for i in range(count)]
        self._next_s += count
        values = self._oximetry.read(seconds)
        out = []
        for first in range(0, count, self.per_message):
            observations = []
            for i in range(first, first + self.per_message):
                at = datetime.fromtimestamp(seconds[i], UTC)
                shared = uuid.uuid4()
                for kind, v in values.items():
                    observations.append(Observation.create(
                        gateway_id=self.gateway_id, kind=kind, value=float(v[i]),
                        unit=KIND_SPECS[kind].unit, measured_at=at, received_at=at,
                        device=self.device, flags=(Flag.DEVICE_TIME_MISSING,),
                        time_source=TimeSource.GATEWAY, reading_id=shared,
                    ))  # fmt: skip
            batch = make_batch(self.gateway_id, observations, sent_at=now)
            out.append((now, encode(batch), self.per_message))
        return out


class Fleet:
    """Publishes homes' batches on the fleet clock; ``run()`` returns when all are acknowledged.

    A home connects when it has readings due, publishes them, waits for the broker's
    acknowledgements and disconnects (as a battery-saving tablet may). At most
    ``max_connections`` homes are connected at once: Debian's mosquitto serves about 1,000
    connections (docs/operations.md), and a fleet must not be capped by that.
    """

    def __init__(
        self, homes: Sequence[Home], passwords: dict[str, str], *, host: str, port: int,
        clock: FleetClock, max_connections: int = 200, session_timeout_s: float = 60.0,
        tls_ca: str | Path | None = None, streams: Sequence[ContinuousStream] = (),
    ) -> None:  # fmt: skip
        self.host, self.port, self.clock = host, port, clock
        self.tls_ca = tls_ca
        self.max_connections = max_connections
        self.session_timeout_s = session_timeout_s
        self.stats = FleetStats(homes=len(homes))
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._homes = [
            _Home(h.gateway_id, passwords[h.gateway_id],
                  [(b.sent_at, encode(b), len(b.observations))
                   for b in h.batches(max_observations=200)], devices=h.patient.devices)
            for h in homes
        ]  # fmt: skip
        by_gateway = {s.gateway_id: s for s in streams}
        for home in self._homes:
            home.stream = by_gateway.get(home.gateway_id)

    def _status(
        self, gateway_id: str, state: GatewayState, devices: Sequence[DeviceRecord] = ()
    ) -> bytes:
        now = datetime.now(UTC)
        days = (self.clock.now() - self.clock.start).total_seconds() / 86400
        reported = tuple(
            StatusDevice(address=d.address, model=d.model,
                         battery_level=battery_level(d.address, days), battery_at=now.isoformat())
            for d in devices
        )  # fmt: skip
        return encode(
            GatewayStatus(
                gateway_id=gateway_id,
                state=state,
                at=now,
                software="vitalvagt-simulator",
                devices=reported or None,
            )
        )

    def _count_ack(self, readings: int) -> None:
        with self._lock:
            self.stats.messages_acked += 1
            self.stats.readings_acked += readings

    def _session(self, home: _Home) -> None:
        """One connection of one home: publish what is due, wait for every PUBACK, leave."""
        connected = threading.Event()
        acked = threading.Condition()
        pending: dict[int, int] = {}  # message id -> readings
        early: dict[int, bool] = {}  # message id -> success, for a PUBACK that beat publish()
        outcome: dict[str, str] = {}
        # The gateway listener makes the client id the user name (the gateway id) anyway.
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=home.gateway_id, protocol=mqtt.MQTTv5
        )
        client.username_pw_set(home.gateway_id, home.password)
        if self.tls_ca:
            client.tls_set_context(client_tls_context(self.tls_ca))
        client.will_set(
            status_topic(home.gateway_id),
            self._status(home.gateway_id, GatewayState.OFFLINE),
            1,
            True,
        )

        def on_connect(_c: mqtt.Client, _u: object, _f: object, reason: object, _p: object) -> None:
            if getattr(reason, "is_failure", False):
                outcome["refused"] = str(reason)
            connected.set()

        def on_publish(_c: mqtt.Client, _u: object, mid: int, reason: object, _p: object) -> None:
            ok = not getattr(reason, "is_failure", False)
            with acked:
                n = pending.pop(mid, None)
                if n is None:  # acknowledged before publish() returned its message id
                    early[mid] = ok
                elif ok:
                    self._count_ack(n)
                acked.notify_all()

        client.on_connect, client.on_publish = on_connect, on_publish
        try:
            client.connect_async(self.host, self.port, keepalive=60)
            client.loop_start()
            if not connected.wait(self.session_timeout_s) or "refused" in outcome:
                home.refused = outcome.get("refused", "no CONNACK from the broker")
                return
            if not home.announced:
                client.publish(
                    status_topic(home.gateway_id),
                    self._status(home.gateway_id, GatewayState.ONLINE, home.devices),
                    1,
                    True,
                )
                home.announced = True
            while not self._stop.is_set():
                if not home.due(self.clock.now()):
                    if home.stream is None or home.stream.over(self.clock.now()):
                        break
                    self._stop.wait(0.2)  # streaming: stay connected for the next message
                    continue
                streamed = bool(home.live)
                due, payload, n = home.live.popleft() if streamed else home.batches[home.next]
                with acked:
                    if not acked.wait_for(
                        lambda: len(pending) < MAX_INFLIGHT_PER_HOME, self.session_timeout_s
                    ):
                        home.refused = "no PUBACK from the broker in time"
                        return
                # Not under `acked`: paho may hold its own lock while calling on_publish.
                info = client.publish(obs_topic(home.gateway_id), payload, qos=1)
                with acked:
                    ok = early.pop(info.mid, None)
                    if ok is None:
                        pending[info.mid] = n
                    elif ok:
                        self._count_ack(n)
                if not streamed:
                    home.next += 1
                lag = (self.clock.now() - due).total_seconds() / self.clock.speed
                with self._lock:
                    self.stats.messages_published += 1
                    self.stats.lags_s.append(lag)
            with acked:
                if not acked.wait_for(lambda: not pending, self.session_timeout_s):
                    home.refused = "no PUBACK from the broker in time"
        finally:
            client.disconnect()
            client.loop_stop()
            close_leftover_socket(client)  # a session that never got its CONNACK
            with self._lock:
                self.stats.sessions += 1
            home.active = False

    def run(self, *, progress: Callable[[FleetStats], None] | None = None) -> FleetStats:
        last_report = time.monotonic()
        with ThreadPoolExecutor(self.max_connections, thread_name_prefix="fleet") as pool:
            while not self._stop.is_set():
                now = self.clock.now()
                for home in self._homes:
                    if home.stream is not None and not home.refused:
                        home.live.extend(home.stream.due(self.clock))
                    if not home.active and not home.refused and home.due(now):
                        home.active = True
                        pool.submit(self._session, home)
                if all(
                    (h.refused or (h.done and (h.stream is None or h.stream.over(now))))
                    and not h.active
                    for h in self._homes
                ):
                    break
                if progress and time.monotonic() - last_report >= 1.0:
                    last_report = time.monotonic()
                    progress(self.stats)
                self._stop.wait(0.05)
        self.stats.refused_homes = [h.gateway_id for h in self._homes if h.refused]
        if progress:
            progress(self.stats)
        if self.stats.refused_homes:
            first = next(h for h in self._homes if h.refused)
            raise SimulatorError(
                f"{len(self.stats.refused_homes)} homes could not publish, e.g."
                f" {first.gateway_id}: {first.refused}"
            )
        return self.stats

    def stop(self) -> None:
        self._stop.set()
