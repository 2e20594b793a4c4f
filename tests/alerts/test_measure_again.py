"""End to end on the real stack (issue 12, point 5): an emulated pulse oximeter on bumble, the
real gateway (bleak on the bumble backend, paho over TLS), mosquitto, ingest and TimescaleDB.

The oximeter sends a spot check whose PLX measurement status says "questionable"; ingest
stores it; the engine (in-process, ``drain``) opens the quality notice; the patient-request
job (in-process, publishing as ``vv-alerts`` through the broker) sends "measure again"; the
gateway shows it (its notices, and ``vitalvagt gateway notices``); the oximeter then sends a
good reading, which is stored, evaluated by the engine, linked to the request, and resolves
the notice ("repeat measurement reliable")."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
import pytest
from pydantic import SecretStr

from alerts.command_publisher import CommandPublisher
from alerts.engine import drain
from alerts.patient_requests import (
    REPEAT_RESOLVED_NOTE,
    PatientRequests,
    RequestPolicy,
    measure_again_text,
    pending_for,
)
from gateway.app import GatewayApp
from gateway.pairing import PairingList
from simulator.ble_devices import PulseOximeter
from simulator.ble_home import EmulatedHome
from simulator.sig_encoders import encode_plx_spot
from tests.alerts.delivery_helpers import reasons
from tests.conftest import ROOT
from tests.ingest.conftest import (
    add_home,
    ingest,  # noqa: F401 - the fixture
)
from vitalvagt.endpoints import mqtt_endpoint
from vitalvagt.quality import Flag
from vitalvagt.settings import Settings
from vitalvagt.stack import Stack

pytestmark = [pytest.mark.stack, pytest.mark.slow, pytest.mark.timeout(90),
              pytest.mark.usefixtures("ingest")]

CPH = ZoneInfo("Europe/Copenhagen")
ALL_DAY = RequestPolicy(night_start=time(0), night_end=time(0))


@dataclass
class Home:
    patient: str
    gateway: str
    password: str


def local_now() -> datetime:
    """The oximeter's wall time (it has no clock service: it counts Copenhagen time)."""
    return datetime.now(UTC).astimezone(CPH).replace(tzinfo=None, microsecond=0)


async def until(condition: Callable[[], bool], timeout_s: float = 15.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.05)


@pytest.fixture
def home(stack: Stack, registry: psycopg.Connection) -> Iterator[Home]:
    gw, password, patient = add_home(registry, stack, "measure-again")
    yield Home(patient, gw, password)
    registry.execute("UPDATE patients SET active = false WHERE id = %s", (patient,))


@pytest.fixture
async def oximeter() -> AsyncIterator[tuple[EmulatedHome, PulseOximeter]]:
    device = PulseOximeter(seed=41)
    async with EmulatedHome([device]) as h:
        yield h, device


@pytest.fixture
async def app(
    stack: Stack, home: Home, tmp_path: Path, oximeter: tuple[EmulatedHome, PulseOximeter]
) -> AsyncIterator[GatewayApp]:
    emulated, device = oximeter
    settings = Settings(
        state_dir=tmp_path, gateway_dir=tmp_path / "gw", gateway_id=home.gateway,
        mqtt_tls_port=stack.settings.mqtt_tls_port, mqtt_tls_ca=stack.paths.ca_cert,
        mqtt_password=SecretStr(home.password), local_tz="Europe/Copenhagen",
        ble_transport="bumble",
    )  # fmt: skip
    with PairingList(tmp_path / "gw" / "pairing.db") as pairing:
        pairing.add(device.address, "oximeter", name=device.name)
    central = emulated.central(auto_pair_on_insufficient_security=False)
    async with central, GatewayApp(settings, backends=central.backends()) as a:
        await until(lambda: a.publisher.connected)
        await until(lambda: all(device.subscribed(s.uuid) for s in device.MEASUREMENTS))
        yield a


def stored(conn: psycopg.Connection, patient: str) -> list[tuple]:
    return conn.execute(
        "SELECT id, kind, value, flags FROM observations WHERE patient_id = %s"
        " ORDER BY measured_at, kind",
        (patient,),
    ).fetchall()


async def test_an_unreliable_reading_asks_the_tablet_to_measure_again(
    stack: Stack, registry: psycopg.Connection, home: Home, app: GatewayApp,
    oximeter: tuple[EmulatedHome, PulseOximeter], tmp_path: Path,
) -> None:  # fmt: skip
    _, oxi = oximeter
    engine = psycopg.connect(stack.database_url(), autocommit=True)
    # Whatever the hour of the run: no quiet hours here (the night rule is tested with a
    # controlled clock in test_patient_requests.py).
    requests = PatientRequests(CommandPublisher(mqtt_endpoint(stack.settings, "vv-alerts")),
                               zone=CPH, policy=ALL_DAY)  # fmt: skip
    try:
        # 1. A questionable spot check: stored, flagged, a quality notice and no alarm.
        first_at = local_now() - timedelta(minutes=3)
        await oxi.measure(encode_plx_spot(84, 118, timestamp=first_at,
                                          meas_status=[Flag.QUESTIONABLE]))  # fmt: skip
        await until(lambda: len(stored(registry, home.patient)) == 2)
        assert {(k, v, tuple(f)) for _, k, v, f in stored(registry, home.patient)} == {
            ("spo2", 84.0, ("questionable",)), ("pulse", 118.0, ("questionable",))}  # fmt: skip
        await asyncio.to_thread(drain, engine)
        (notice,) = registry.execute(
            "SELECT id, rule, category, severity, state::text FROM alerts WHERE patient_id = %s",
            (home.patient,),
        ).fetchall()
        alert_id = notice[0]
        assert notice[1:] == ("quality:spo2", "quality", "yellow", "open")

        # 2. The job asks the patient's gateway to measure again, through the broker.
        r = await asyncio.to_thread(requests.run, registry, datetime.now(UTC))
        assert r.sent >= 1
        (req,) = pending_for(registry, home.patient)
        assert (req["alert_id"], req["state"], req["kind"], req["gateway_id"]) == (
            alert_id, "sent", "spo2", home.gateway)  # fmt: skip
        text = measure_again_text("spo2")
        await until(lambda: [(n.kind, n.message) for n in app.notices.recent()] == [
            ("spo2", text)])  # fmt: skip
        assert app.notices.recent()[0].command_id == str(req["command_id"])
        # The tablet's screen shows what `vitalvagt gateway notices` lists.
        env = {**os.environ, "VV_GATEWAY_DIR": str(tmp_path / "gw"), "PYTHONPATH": str(ROOT),
               "VV_LOCAL_TZ": "Europe/Copenhagen"}  # fmt: skip
        shown = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "vitalvagt.cli", "gateway", "notices"],
            capture_output=True, text=True, timeout=30, env=env,
        )  # fmt: skip
        assert shown.returncode == 0, shown.stderr[-2000:]
        assert f"[spo2] {text}" in shown.stdout

        # 3. The repeat: a good spot check, stored, evaluated, linked, and the notice resolved.
        await oxi.measure(encode_plx_spot(95, 74, timestamp=local_now(),
                                          meas_status=[Flag.VALIDATED]))  # fmt: skip
        await until(lambda: len(stored(registry, home.patient)) == 4)
        repeat_id = next(i for i, k, v, _ in stored(registry, home.patient)
                         if k == "spo2" and v == 95.0)  # fmt: skip
        evaluated = await asyncio.to_thread(drain, engine)
        assert evaluated.readings >= 2
        assert registry.execute("SELECT count(*) FROM alert_work WHERE patient_id = %s",
                                (home.patient,)).fetchone() == (0,)  # fmt: skip
        r = await asyncio.to_thread(requests.run, registry, datetime.now(UTC))
        assert r.linked >= 1 and r.resolved >= 1
        (req,) = pending_for(registry, home.patient)
        assert (req["state"], req["repeat_observation_id"], req["repeat_reliable"],
                req["alert_resolved"]) == ("answered", repeat_id, True, True)  # fmt: skip
        assert reasons(registry, alert_id)[-1] == ("cleared", REPEAT_RESOLVED_NOTE)
        # No new alert from the repeat (95 % is no alarm for COPD); nothing more is asked.
        assert registry.execute("SELECT count(*) FROM alerts WHERE patient_id = %s"
                                " AND state <> 'resolved'", (home.patient,)).fetchone() == (0,)
        r = await asyncio.to_thread(requests.run, registry, datetime.now(UTC))
        assert len(pending_for(registry, home.patient)) == 1
        assert len(app.notices.recent()) == 1
    finally:
        requests.close()
        engine.close()
