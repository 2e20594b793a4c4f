"""An emulated home for development and demos: the real gateway against emulated devices.

``vitalvagt simulate home`` runs it: five emulated BLE health devices (simulator/ble_home.py)
and an unchanged ``GatewayApp`` in one process, the devices paired automatically and
measuring plausible values periodically. On the embedded stack (no VV_MQTT_HOST or
VV_MQTT_PASSWORD) the gateway is first provisioned there (``provision_on_embedded_stack``),
so a development run needs nothing but ``vitalvagt stack up``. The gateway id is
``gw-emulated-1`` unless VV_GATEWAY_ID is set; its data live in
``<VV_STATE_DIR>/gateway-emulated`` unless VV_GATEWAY_DIR is set, apart from a real home's.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable
from datetime import UTC, datetime, tzinfo
from typing import Any

import psycopg
from pydantic import SecretStr

from gateway.app import GatewayApp, broker_config
from gateway.pairing import PAIRING_FILE, PairingList, gateway_dir
from simulator.ble_devices import (
    BloodPressureMonitor,
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
from vitalvagt.db.gateways import provision_gateway
from vitalvagt.devices import type_of_service
from vitalvagt.endpoints import database_url
from vitalvagt.observation import BodySite
from vitalvagt.settings import Settings, local_zone
from vitalvagt.stack import Stack

EMULATED_GATEWAY_ID = "gw-emulated-1"
EMULATED_GATEWAY_DIR = "gateway-emulated"  # under VV_STATE_DIR
EMULATED_USER_ID = 1  # the patient's slot on the emulated cuff and scale
DEFAULT_MEASURE_EVERY_S = 30.0


def emulated_settings(settings: Settings) -> Settings:
    """The gateway's settings for an emulated home: its own id and directory unless set, so
    that emulated devices never mix with a real home's pairing list and outbox."""
    update: dict[str, Any] = {"gateway_id": settings.gateway_id or EMULATED_GATEWAY_ID}
    if settings.gateway_dir is None:
        update["gateway_dir"] = settings.state_dir / EMULATED_GATEWAY_DIR
    return settings.model_copy(update=update)


def provision_on_embedded_stack(settings: Settings) -> tuple[Settings, bool]:
    """Provision ``settings.gateway_id`` on the embedded stack's database (created, or
    re-keyed with a new MQTT password) and reload the embedded broker's users.

    Only on the embedded stack, i.e. without VV_MQTT_HOST and VV_MQTT_PASSWORD; returns the
    settings with the new password and True, or the settings unchanged and False.
    """
    if settings.mqtt_password is not None or settings.mqtt_host is not None:
        return settings, False
    assert settings.gateway_id is not None, "emulated_settings() gives the gateway an id"
    with psycopg.connect(database_url(settings), autocommit=True) as conn:
        password = provision_gateway(conn, settings.gateway_id)
    Stack(settings).sync_broker_users()
    return settings.model_copy(update={"mqtt_password": SecretStr(password)}), True


def pair_emulated(settings: Settings, home: EmulatedHome) -> None:
    """Put the emulated home's devices in the pairing list (their type from their service)."""
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


async def measure_round(home: EmulatedHome, zone: tzinfo, rng: random.Random) -> int:
    """Every emulated device measures once with plausible values; returns values sent."""
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


async def measure_periodically(
    home: EmulatedHome, zone: tzinfo, every_s: float, *, seed: int = 0
) -> None:
    """Every device measures once every ``every_s`` seconds, until cancelled."""
    rng = random.Random(seed)
    loop = asyncio.get_running_loop()
    while True:
        started = loop.time()
        await measure_round(home, zone, rng)
        await asyncio.sleep(max(0.0, every_s - (loop.time() - started)))


async def run_emulated_home(
    settings: Settings,
    *,
    measure_every_s: float = DEFAULT_MEASURE_EVERY_S,
    duration_s: float | None = None,
    say: Callable[[str], None] = print,
) -> None:
    """The gateway against five emulated devices until SIGINT/SIGTERM or ``duration_s``;
    ``say`` gets the lines for the operator (provisioned, running, stopping)."""
    settings, provisioned = provision_on_embedded_stack(emulated_settings(settings))
    if provisioned:
        say(
            f"provisioned gateway {settings.gateway_id} on the embedded stack (new MQTT "
            "password, broker reloaded)"
        )
    broker = broker_config(settings)
    zone = local_zone(settings)
    async with contextlib.AsyncExitStack() as stack:
        home = await stack.enter_async_context(EmulatedHome(standard_devices()))
        central = await stack.enter_async_context(home.central())
        pair_emulated(settings, home)
        app = await stack.enter_async_context(
            GatewayApp(settings, broker=broker, backends=central.backends())
        )
        say(f"{app.running_summary()}, emulated devices measure every {measure_every_s:g} s")
        task = asyncio.create_task(
            measure_periodically(home, zone, measure_every_s), name="emulated-measurements"
        )
        stack.push_async_callback(_cancel, task)
        await app.run_until_stopped(duration_s=duration_s)
        say(app.stopping_summary())


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
