from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from ingest.service import IngestConfig, IngestService
from tests.mqtt import Connected, connect_gateway, end_session
from tests.waiting import wait_for
from vitalvagt.db.gateways import provision_gateway
from vitalvagt.kinds import KIND_SPECS, Kind
from vitalvagt.observation import DeviceRef, Observation
from vitalvagt.stack import Stack
from vitalvagt.wire import encode, make_batch

# Recent enough for the hub (readings over MAX_AGE old are refused), the same all session.
T0 = (datetime.now(UTC) - timedelta(days=90)).replace(hour=6, minute=0, second=0, microsecond=0)


def ensure_team(conn: psycopg.Connection) -> None:
    conn.execute(
        "INSERT INTO municipalities (id, name) VALUES ('0999', 'Testkommune')"
        " ON CONFLICT DO NOTHING"
    )
    conn.execute(
        "INSERT INTO acute_teams (id, municipality_id, name) VALUES ('team-test', '0999',"
        " 'Akutteam Test') ON CONFLICT DO NOTHING"
    )


def add_home(conn: psycopg.Connection, stack: Stack, name: str) -> tuple[str, str, str]:
    """A patient and their gateway (known to the broker); returns (gateway, password, patient)."""
    return add_homes(conn, stack, [name])[0]


def add_homes(
    conn: psycopg.Connection, stack: Stack, names: list[str]
) -> list[tuple[str, str, str]]:
    """``add_home`` for each name, with one broker sync for them all: a sync that lets a new
    gateway in restarts the broker (Stack.reload_broker), a few seconds each."""
    ensure_team(conn)
    homes = []
    for name in names:
        patient, gw = f"p-{name}", f"gw-{name}"
        conn.execute(
            "INSERT INTO patients (id, municipality_id, team_id, patient_group) VALUES"
            " (%s, '0999', 'team-test', 'copd') ON CONFLICT DO NOTHING",
            (patient,),
        )
        homes.append((gw, provision_gateway(conn, gw, patient_id=patient), patient))
    sync_broker_users(stack)
    return homes


RUNNING: list[IngestService] = []  # the ingest services running_ingest runs now


def sync_broker_users(stack: Stack) -> None:
    """``stack.sync_broker_users`` for a test whose ingest is running: a new gateway restarts
    the broker (Stack.reload_broker), and a one-shot publish before ingest has its shared
    subscription back would be lost (a real gateway sends again until its receipt)."""
    before = [(s, s.connects) for s in RUNNING]
    if stack.sync_broker_users():
        wait_for(lambda: all(s.connects > n for s, n in before), 20, "ingest back after the"
                 " broker's restart")  # fmt: skip
        time.sleep(0.3)  # the SUBACK


def readings(
    gw: str, n: int, *, start: int = 0, kind: Kind = Kind.SPO2, t0: datetime = T0
) -> list[Observation]:
    s = KIND_SPECS[kind]
    span = int(s.plausible_max - s.plausible_min)
    out = []
    for i in range(start, start + n):
        at = t0 + timedelta(seconds=37 * i)
        out.append(Observation.create(
            gateway_id=gw, kind=kind, value=s.plausible_min + (i * 7919) % span,
            unit=s.unit, measured_at=at, received_at=at + timedelta(seconds=1),
            device=DeviceRef(address="00:11:22:33:44:55", model="PO-60", serial="1"),
        ))  # fmt: skip
    return out


def payloads(gw: str, obs: list[Observation], per_message: int) -> list[bytes]:
    return [
        encode(make_batch(gw, obs[i : i + per_message])) for i in range(0, len(obs), per_message)
    ]


def count_rows(conn: psycopg.Connection, gw: str) -> tuple[int, int]:
    """(rows, distinct ids) stored for a gateway."""
    return conn.execute(
        "SELECT count(*), count(DISTINCT id) FROM observations WHERE gateway_id = %s", (gw,)
    ).fetchone()


@pytest.fixture
def registry(stack: Stack) -> Iterator[psycopg.Connection]:
    with psycopg.connect(stack.database_url(), autocommit=True) as conn:
        yield conn


def ingest_config(stack: Stack, client_id: str = "vv-ingest-test") -> IngestConfig:
    return IngestConfig(
        database_url=stack.database_url(), mqtt_host="127.0.0.1",
        mqtt_port=stack.settings.mqtt_port, mqtt_username="vv-ingest",
        mqtt_password=stack.secrets()["vv-ingest"], client_id=client_id,
        # Ended on stop, and short-lived should a stop miss it (a stop during a cut link):
        # a session left on the shared subscription would take a share of later tests'
        # readings for a day.
        end_session_on_stop=True, session_expiry_s=10,
    )  # fmt: skip


@contextmanager
def running_ingest(
    stack: Stack, service: IngestService, run: Callable[[], None] | None = None
) -> Iterator[threading.Thread]:
    """An IngestService running in a thread, connected and subscribed. On the way out it must
    stop, and its broker session is ended whatever the stop managed (a stop during a cut
    link leaves it behind): a session left on the shared subscription would take a share of
    the next test's readings."""
    client_id = service.config.client_id
    thread = threading.Thread(target=run or service.run, name=f"{client_id}-under-test")
    thread.start()
    RUNNING.append(service)
    try:
        assert service.wait_connected(10), "ingest did not connect"
        time.sleep(0.2)  # subscription in place
        yield thread
    finally:
        RUNNING.remove(service)
        service.stop()
        thread.join(15)
        end_session(stack, "vv-ingest", client_id)
    assert not thread.is_alive(), "ingest did not stop"


@pytest.fixture
def ingest(stack: Stack) -> Iterator[IngestService]:
    service = IngestService(ingest_config(stack))
    with running_ingest(stack, service):
        yield service


def gateway_client(stack: Stack, gw: str, password: str) -> Connected:
    """A gateway on the broker's TLS gateway listener."""
    c = connect_gateway(stack, gw, password)
    assert not c.reason.is_failure, c.reason
    return c


def publish_as(stack: Stack, gw: str, password: str, messages: Iterable[bytes]) -> None:
    """Publish each message on the gateway's obs topic, in order, each to its PUBACK."""
    c = gateway_client(stack, gw, password)
    try:
        for m in messages:
            c.publish(f"vv/v1/gw/{gw}/obs", m)
    finally:
        c.close()
