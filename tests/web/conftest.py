"""The web view's end-to-end fixtures: the whole hub running (ingest, the alert engine, the
API with the web view on a real port), a home of the simulator publishing over the broker,
users of two teams, and Debian's Chromium driven by Selenium through Debian's chromedriver.

Nothing is mocked. Screenshots go to tests/artifacts/web/ (``VV_ARTIFACTS`` moves them), one
per step and screen size, kept after the run as the tests' artefacts.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import uvicorn

from alerts.service import AlertService
from api.app import create_app
from api.config import ApiConfig
from api.users import Role, add_user
from ingest.service import IngestService
from simulator.cohort_format import DeviceRecord, Home, ObservationRow, PatientRecord
from simulator.fleet import Fleet, FleetClock, provision_fleet
from simulator.parameters import Group
from tests.conftest import free_port
from tests.ingest.conftest import ingest_config, running_ingest, sync_broker_users, wait_for
from vitalvagt.devices import DeviceType
from vitalvagt.kinds import KIND_SPECS, Kind
from vitalvagt.observation import TimeSource, stable_id
from vitalvagt.quality import Flag
from vitalvagt.stack import Stack

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
AXE = (
    Path(__file__).resolve().parents[2] / "api" / "web" / "node_modules" / "axe-core" / "axe.min.js"
)
ARTIFACTS = Path(os.environ.get("VV_ARTIFACTS", Path(__file__).resolve().parents[1] / "artifacts"))
PASSWORD = "a web test's long passphrase"
SECRET = "web-test-signing-key-" + "w" * 40
SIZES = {"landscape": (1280, 800), "portrait": (800, 1280)}
# The machine has no network: without these Chromium keeps trying Google's hosts.
CHROME_FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--hide-scrollbars",
)  # fmt: skip

OXIMETER = DeviceRecord(DeviceType.OXIMETER, "C0:00:00:00:00:01", "Nonin 3230",
                        (Kind.SPO2, Kind.PULSE), False, False)  # fmt: skip
CUFF = DeviceRecord(DeviceType.BP, "C0:00:00:00:00:02", "A&D UA-651BLE",
                    (Kind.BP_SYSTOLIC, Kind.BP_DIASTOLIC, Kind.BP_MEAN, Kind.PULSE),
                    True, True)  # fmt: skip


def require_browser() -> None:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER, AXE) if not p.exists()]
    if missing:
        # The set-up step installs all three; missing means `make setup` did not run.
        raise RuntimeError(f"the web tests need {', '.join(missing)}: run `make setup`")


# --- the hub -------------------------------------------------------------------------------


class ApiServer:
    """The API (and so the web view) under uvicorn on a real port, in a thread; ``stop`` and
    ``start`` again on the same port show the page a lost and a regained connection."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        app = create_app(self.database_url, config=ApiConfig(jwt_secret=SECRET))
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                timeout_graceful_shutdown=1, lifespan="on")  # fmt: skip
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="web-test-api")
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            assert time.monotonic() < deadline, "the API did not start"
            assert self._thread.is_alive(), "the API stopped while starting"
            time.sleep(0.05)

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            assert self._thread is not None
            self._thread.join(20)
            assert not self._thread.is_alive(), "the API did not stop"
            self._server = None


@dataclass
class WebWorld:
    api: ApiServer
    stack: Stack
    team: str
    other_team: str
    patient: str  # COPD, SpO2 limits 85/88: the one the tests make an alert for
    gateway: str
    record: PatientRecord
    users: dict[str, str] = field(default_factory=dict)  # nurse, nurse2, physician, other
    history_readings: int = 0

    def publish(self, rows: list[ObservationRow]) -> None:
        """Readings from the simulated home: over the broker's gateway listener with TLS as
        its gateway, through ingest, like every reading."""
        publish_home(self.stack, Home(self.record, tuple(rows)))


def publish_home(stack: Stack, home: Home) -> None:
    passwords = provision_fleet(stack.database_url(), [home.patient])
    sync_broker_users(stack)  # the hub's ingest back on the restarted broker first
    first = min((r.sent_at for r in home.rows), default=datetime.now(UTC))
    fleet = Fleet([home], passwords, host="127.0.0.1", port=stack.settings.mqtt_tls_port,
                  clock=FleetClock(first, 1e9), tls_ca=stack.paths.ca_cert)  # fmt: skip
    stats = fleet.run()
    assert stats.readings_acked == len(home.rows), stats


def reading(record: PatientRecord, kind: Kind, value: float, at: datetime,
            flags: tuple[Flag, ...] = ()) -> ObservationRow:  # fmt: skip
    device = CUFF if kind.value.startswith("bp_") else OXIMETER
    return ObservationRow(
        id=stable_id(record.gateway_id, device.address, kind, at),
        patient_id=record.patient_id, gateway_id=record.gateway_id, kind=kind,
        value=value, unit=KIND_SPECS[kind].unit, measured_at=at, received_at=at, sent_at=at,
        time_source=TimeSource.DEVICE, device_address=device.address, device_model=device.model,
        flags=flags, reading_id=None, body_site=None,
    )  # fmt: skip


def history(record: PatientRecord, now: datetime, days: int) -> list[ObservationRow]:
    """A steady COPD patient measuring morning and evening, a few readings flagged
    unreliable (movement): enough for a baseline, and for plots of every kind."""
    rows = []
    for d in range(days, 0, -1):
        for hour, wobble in ((8, 0.0), (19, 0.5)):
            at = (now - timedelta(days=d)).replace(hour=hour, minute=5, second=0, microsecond=0)
            flags = (Flag.BODY_MOVEMENT,) if d % 5 == 2 and hour == 8 else ()
            rows += [
                reading(record, Kind.SPO2, 93 + (d % 3) - wobble, at, flags),
                reading(record, Kind.PULSE, 78 + (d % 5), at + timedelta(seconds=5)),
                reading(record, Kind.BP_SYSTOLIC, 132 + (d % 7), at + timedelta(minutes=2)),
                reading(record, Kind.BP_DIASTOLIC, 80 + (d % 4), at + timedelta(minutes=2)),
            ]
    return rows


# Per module, not per session: its ingest holds a share of the broker's shared subscription
# and its alert engine takes work, so while it runs other tests' readings are not theirs.
@pytest.fixture(scope="module")
def web_world(stack: Stack) -> Iterator[WebWorld]:
    require_browser()
    tag = uuid.uuid4().hex[:6]
    municipality, other_municipality = f"8{tag[:3]}", f"7{tag[:3]}"
    team, other_team = f"web-team-{tag}", f"web-other-{tag}"
    patient, gateway = f"web-p-{tag}", f"web-gw-{tag}"
    record = PatientRecord(
        patient_id=patient, gateway_id=gateway, index=0, group=Group.COPD, baseline={},
        morning_local="08:00", evening_local="19:00", miss_fraction=0.0, dropout_day=None,
        devices=(OXIMETER, CUFF), other_user_weight=None,
    )  # fmt: skip
    url = stack.database_url()
    with psycopg.connect(url, autocommit=True) as conn:
        for m, t in ((municipality, team), (other_municipality, other_team)):
            conn.execute(
                "INSERT INTO municipalities (id, name) VALUES (%s, %s)", (m, f"Kommune {m}")
            )
            conn.execute(
                "INSERT INTO acute_teams (id, municipality_id, name, phone)"
                " VALUES (%s, %s, %s, %s)",
                (t, m, f"Akutteam {t}", "+45 70 00 00 00"),
            )
        provision_fleet(url, [record])
        # The simulator provisions into its demo team; this home belongs to the test's team.
        conn.execute(
            "UPDATE patients SET team_id = %s, municipality_id = %s, gp_name = %s,"
            " gp_phone = %s WHERE id = %s",
            (team, municipality, "Lægehuset Vest", "+45 86 00 00 00", patient),
        )
        users = {}
        for key, role, t in (("nurse", Role.NURSE, team), ("nurse2", Role.NURSE, team),
                             ("physician", Role.PHYSICIAN, team),
                             ("other", Role.NURSE, other_team)):  # fmt: skip
            users[key] = f"web-{key}-{tag}"
            add_user(conn, users[key], display_name=f"Web {key.title()}", role=role,
                     team_ids=[t], password=PASSWORD)  # fmt: skip

    ingest = IngestService(ingest_config(stack, client_id=f"vv-ingest-web-{tag}"))
    engine = AlertService(url, missed_hours=36, missed_every_s=3600)
    engine_thread = threading.Thread(target=engine.run, name="web-test-alerts")
    api = ApiServer(url)
    with psycopg.connect(url, autocommit=True) as conn:
        # Work earlier tests of the session left (readings that ingest tests stored with no
        # engine running) is not this module's: dropped, so the engine's first minute is this
        # home's readings. Evaluating that backlog here took two minutes of the suite.
        conn.execute("DELETE FROM alert_work WHERE patient_id <> %s", (patient,))
    with ExitStack() as running:
        running.enter_context(running_ingest(stack, ingest))
        engine_thread.start()
        running.callback(engine_thread.join, 15)
        running.callback(engine.stop)
        running.callback(api.stop)
        api.start()
        world = WebWorld(api, stack, team, other_team, patient, gateway, record, users)
        rows = history(record, datetime.now(UTC), 40)
        world.publish(rows)
        world.history_readings = len(rows)
        wait_for(lambda: stored(url, patient) >= len(rows), 60, "the history stored")
        yield world


def stored(url: str, patient: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM observations WHERE patient_id = %s", (patient,))
        return int(row.fetchone()[0])


# --- the browser ---------------------------------------------------------------------------


class Browser:
    """One Chromium with its own profile (its own session storage: its own log-in)."""

    def __init__(self, base_url: str, size: tuple[int, int], shots: Path) -> None:
        os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not go online
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for flag in CHROME_FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--window-size={size[0]},{size[1]}")
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
        # the viewport itself at the size (the window's frame is nothing in headless mode)
        metrics = {"width": size[0], "height": size[1], "deviceScaleFactor": 1, "mobile": False}
        self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
        self.base_url = base_url
        self.shots = shots
        self.console: list[dict[str, Any]] = []

    def open(self, fragment: str = "") -> None:
        self.driver.get(f"{self.base_url}/web/{fragment}")

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def wait(self, script: str, timeout_s: float = 15, what: str = "") -> Any:
        """Wait until ``script`` (a JS expression) is truthy; returns its value."""
        return wait_for(lambda: self.js(f"return {script}"), timeout_s, what or script)

    def css(self, selector: str):
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, selector)

    def all(self, selector: str) -> list:
        from selenium.webdriver.common.by import By

        return self.driver.find_elements(By.CSS_SELECTOR, selector)

    def login(self, user: str, password: str = PASSWORD) -> None:
        self.open()
        self.wait("document.getElementById('username')", what="the log-in form")
        self.css("#username").send_keys(user)
        self.css("#password").send_keys(password)
        self.css("#login-form button[type=submit]").click()
        self.wait("document.body.dataset.ready === '#/alerts'", what="the triage list")

    def screenshot(self, name: str, *, full_page: bool = False) -> Path:
        """The screen as the user sees it, or (``full_page``) the whole page's length."""
        self.shots.mkdir(parents=True, exist_ok=True)
        path = self.shots / f"{name}.png"
        if not full_page:
            self.driver.save_screenshot(str(path))
            return path
        size = self.driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
        shot = self.driver.execute_cdp_cmd("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"],
                     "scale": 1}})  # fmt: skip
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    def errors(self) -> list[dict[str, Any]]:
        """Console errors (and failed loads) since the last call."""
        self.console += self.driver.get_log("browser")
        return [e for e in self.console if e["level"] == "SEVERE"]

    def axe(self, context: str = "document") -> list[dict[str, Any]]:
        """axe-core's serious and critical violations on the page as it is now."""
        if not self.js("return typeof window.axe === 'object'"):
            self.js(AXE.read_text())
        result = self.driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            f" axe.run({context}, {{resultTypes: ['violations']}})"
            ".then(r => done(JSON.stringify(r.violations))).catch(e => done(String(e)));"
        )
        violations = json.loads(result)
        return [
            {"id": v["id"], "impact": v["impact"], "help": v["help"],
             "nodes": [n["target"] for n in v["nodes"]][:5]}
            for v in violations if v["impact"] in ("serious", "critical")
        ]  # fmt: skip

    def quit(self) -> None:
        self.driver.quit()


@pytest.fixture
def browsers(
    web_world: WebWorld, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Browser]]:
    """``browsers(size_name)``: a new browser at that size; all are closed after the test."""
    opened: list[Browser] = []
    test = request.node.name.replace("[", "-").replace("]", "")

    def make(size: str = "landscape", who: str = "") -> Browser:
        b = Browser(web_world.api.url, SIZES[size], ARTIFACTS / "web" / test / (who or size))
        opened.append(b)
        return b

    try:
        yield make
    finally:
        for b in opened:
            b.quit()
