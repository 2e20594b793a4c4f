"""``run_fleet``: provision a cohort's homes, then publish them, the first K through emulated
BLE devices and the real gateway (simulator/ble_fleet.py), the rest directly
(simulator/fleet.py).

It composes both fleets, so it lives apart from them: the BLE fleet builds on the direct
one's clock and sessions, and nothing builds on this module.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from simulator.errors import SimulatorError
from simulator.fleet import (
    ContinuousStream,
    Fleet,
    FleetClock,
    continuous_homes,
    provision_fleet,
)
from simulator.fleet_stats import FleetStats
from vitalvagt.settings import Settings

# After a broker restart, the hub's services reconnect within 1-2 s (BROKER_RECONNECT).
AFTER_BROKER_RESTART_S = 3.0


def run_fleet(
    *, database_url: str, host: str, port: int, cohort_dir: str, speed: float,
    progress: Callable[[FleetStats], None] | None = None,
    on_provisioned: Callable[[], object] | None = None, max_connections: int = 200,
    ble_homes: int = 0, settings: Settings | None = None, ble_dir: Path | None = None,
    tls_ca: str | Path | None = None, continuous: int = 0,
) -> FleetStats:  # fmt: skip
    """Provision the cohort's homes and publish them; returns when everything is acknowledged.

    ``host``, ``port`` and ``tls_ca`` are the broker's gateway listener
    (``vitalvagt.endpoints.gateway_broker``): homes connect as gateways, with TLS.

    The first ``ble_homes`` homes publish through emulated BLE devices and their own gateway
    (simulator/ble_fleet.py, gateway directories under ``ble_dir``); the rest directly.
    ``stats.homes`` counts the direct homes, ``stats.ble`` the BLE ones.

    ``continuous`` of the direct homes (``continuous_homes``: COPD patients with an oximeter,
    the best saturation first) also stream continuous oximetry, a reading a second, once the
    clock is live.
    """
    from simulator.cohort_format import iter_homes, read_events, read_info, read_patients

    info = read_info(cohort_dir)
    if not 0 <= ble_homes <= info.patients:
        raise SimulatorError(
            f"ble_homes {ble_homes} must be between 0 and the cohort's {info.patients} homes"
        )
    patients = read_patients(cohort_dir)
    passwords = provision_fleet(database_url, patients)
    if on_provisioned and on_provisioned():  # e.g. the embedded broker restarted to load them
        # Like a gateway, a direct home keeps nothing once the broker has its PUBACK, and a
        # reading published before ingest has its shared subscription back finds nobody
        # (docs/operations.md, "Broker reloads"): the hub's services come back first.
        time.sleep(AFTER_BROKER_RESTART_S)
    homes = list(iter_homes(cohort_dir))
    start = datetime(info.start.year, info.start.month, info.start.day, tzinfo=UTC)
    clock = FleetClock(start, speed)
    until = start + timedelta(days=info.days)
    events = read_events(cohort_dir) if continuous else ()
    streams = [
        ContinuousStream(h, events, seed=info.seed, until=until)
        for h in continuous_homes(homes[ble_homes:], continuous)
    ]
    fleet = Fleet(
        homes[ble_homes:],
        passwords,
        host=host,
        port=port,
        clock=clock,
        max_connections=max_connections,
        tls_ca=tls_ca,
        streams=streams,
    )
    if not ble_homes:
        return fleet.run(progress=progress)
    # Imported here: bumble and the gateway load only when some home uses BLE.
    import asyncio
    import tempfile

    from simulator.ble_fleet import BleFleet

    with tempfile.TemporaryDirectory(prefix="vv-ble-fleet-") as tmp:
        ble = BleFleet(
            homes[:ble_homes], passwords, settings=settings or Settings(), host=host, port=port,
            clock=clock, directory=ble_dir or Path(tmp), tls_ca=tls_ca,
        )  # fmt: skip
        return asyncio.run(ble.run_beside(fleet, progress=progress))
