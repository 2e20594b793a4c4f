"""The gateway application: outbox, publisher and BLE manager composed in one context manager.

``async with GatewayApp(settings) as app: await app.wait_closed()`` runs a home gateway:

- ``Outbox`` (the segment log in ``outbox/``), ``PairingList`` (``pairing.db``) and ``Notices``
  (``notices.db``) in the gateway directory;
- the bleak backends for ``VV_BLE_TRANSPORT`` (a backend plugin only when it names one);
- ``Publisher`` on the broker of ``vitalvagt.endpoints.mqtt_endpoint(settings, gateway_id)``;
- ``BleManager``, whose readings wake the publisher;
- ``BatteryReport`` (gateway/battery.py): the paired devices' battery levels in the online
  status, published again when they changed enough.

``contextlib.AsyncExitStack`` closes them in reverse: the BLE side stops first, so nothing is
read that could not be stored, and the outbox closes last.

Commands from the hub arrive on the publisher's paho thread and are handled on the event
loop: ``measure_again`` becomes a notice for the patient (``vitalvagt gateway notices``),
``config_changed`` reloads the pairing list; a command id seen before is ignored, across
restarts too (the broker redelivers QoS 1 commands to a persistent session).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Self

from gateway.battery import BatteryReport
from gateway.ble import BleManager
from gateway.ble_connect import Backends, ble_backends
from gateway.errors import GatewaySettingError
from gateway.outbox import Outbox
from gateway.pairing import PAIRING_FILE, PairingList, gateway_dir
from gateway.publisher import BrokerConfig, Publisher, ReceivedByHub
from gateway.sqlite_file import SqliteFile
from vitalvagt.settings import Settings, local_zone
from vitalvagt.wire import Command, CommandName

log = logging.getLogger(__name__)

OUTBOX_DIR = "outbox"
LEGACY_OUTBOX_FILE = "outbox.db"  # the SQLite outbox of 0.1.0, imported on first open
NOTICES_FILE = "notices.db"
HANDLED_COMMANDS_KEEP = 10_000
DEFAULT_MEASURE_AGAIN = "Please take the measurement again."


def broker_config(settings: Settings) -> BrokerConfig:
    """The publisher's broker from settings: VV_MQTT_* or the embedded stack's broker."""
    from vitalvagt.endpoints import mqtt_endpoint

    if not settings.gateway_id:
        raise GatewaySettingError(
            "VV_GATEWAY_ID is not set: the gateway needs its id (also its MQTT user); "
            "`vitalvagt admin add-gateway ID` provisions one"
        )
    endpoint = mqtt_endpoint(settings, settings.gateway_id)
    return BrokerConfig(
        host=endpoint.host,
        port=endpoint.port,
        gateway_id=settings.gateway_id,
        password=endpoint.password,
        tls_ca=Path(endpoint.tls_ca) if endpoint.tls_ca else None,
        username=endpoint.username,
    )


@dataclass(frozen=True, slots=True)
class Notice:
    id: int
    at: datetime
    kind: str  # the measurement asked for ('spo2', 'bp_systolic' ...) or 'any'
    message: str
    command_id: str


class Notices(SqliteFile):
    """What the hub asked the patient to do, and which commands were already handled."""

    what = "notices"

    def open(self) -> Notices:
        self._connect(
            """
            CREATE TABLE IF NOT EXISTS notices (
                id         INTEGER PRIMARY KEY AUTOINCREMENT,
                at         TEXT NOT NULL,
                kind       TEXT NOT NULL,
                message    TEXT NOT NULL,
                command_id TEXT NOT NULL
            );
            CREATE TABLE IF NOT EXISTS handled_commands (
                seq INTEGER PRIMARY KEY AUTOINCREMENT,
                id  TEXT NOT NULL UNIQUE
            );
            -- The hub's last receipt: what the patient sees as "received by the hub".
            CREATE TABLE IF NOT EXISTS received_by_hub (
                one          INTEGER PRIMARY KEY CHECK (one = 1),
                at           TEXT NOT NULL,
                readings     INTEGER NOT NULL,
                refused_code TEXT
            );
            """
        )
        return self

    def first_time(self, command_id: uuid.UUID) -> bool:
        """Record a command id; False if it was handled before."""
        with self._lock:
            cur = self.db.execute(
                "INSERT OR IGNORE INTO handled_commands (id) VALUES (?)", (str(command_id),)
            )
            if cur.rowcount:
                self.db.execute(
                    "DELETE FROM handled_commands WHERE seq <= last_insert_rowid() - ?",
                    (HANDLED_COMMANDS_KEEP,),
                )
            return cur.rowcount > 0

    def add(self, *, kind: str, message: str, command_id: uuid.UUID, at: datetime) -> Notice:
        stamp = at.astimezone(UTC)
        with self._lock:
            cur = self.db.execute(
                "INSERT INTO notices (at, kind, message, command_id) VALUES (?, ?, ?, ?)",
                (stamp.isoformat(), kind, message, str(command_id)),
            )
        assert cur.lastrowid is not None
        return Notice(cur.lastrowid, stamp, kind, message, str(command_id))

    def record_receipt(self, received: ReceivedByHub) -> None:
        with self._lock:
            self.db.execute(
                "INSERT OR REPLACE INTO received_by_hub (one, at, readings, refused_code)"
                " VALUES (1, ?, ?, ?)",
                (received.at.astimezone(UTC).isoformat(), received.readings,
                 received.refused_code),
            )  # fmt: skip

    def last_receipt(self) -> ReceivedByHub | None:
        with self._lock:
            row = self.db.execute(
                "SELECT readings, at, refused_code FROM received_by_hub"
            ).fetchone()
        return ReceivedByHub(row[0], datetime.fromisoformat(row[1]), row[2]) if row else None

    def recent(self, limit: int = 20) -> list[Notice]:
        with self._lock:
            rows = self.db.execute(
                "SELECT id, at, kind, message, command_id FROM notices ORDER BY id DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [Notice(r[0], datetime.fromisoformat(r[1]), r[2], r[3], r[4]) for r in rows]


class GatewayApp:
    """The whole gateway as one async context manager."""

    def __init__(
        self,
        settings: Settings,
        *,
        broker: BrokerConfig | None = None,
        backends: Backends | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.settings = settings
        self.broker = broker or broker_config(settings)
        self.zone = local_zone(settings)
        self.dir = gateway_dir(settings)
        self._backends = backends
        self._clock = clock
        self._stack: contextlib.AsyncExitStack | None = None
        self._closed = asyncio.Event()
        self.on_notice: Callable[[Notice], None] | None = None  # e.g. the tablet's screen
        self.commands_handled = 0
        self.commands_ignored = 0

    @property
    def gateway_id(self) -> str:
        return self.broker.gateway_id

    async def __aenter__(self) -> Self:
        stack = contextlib.AsyncExitStack()
        try:
            self.pairing = stack.enter_context(PairingList(self.dir / PAIRING_FILE))
            self.notices = stack.enter_context(Notices(self.dir / NOTICES_FILE))
            self.outbox = stack.enter_context(
                Outbox(
                    self.dir / OUTBOX_DIR,
                    max_bytes=self.settings.outbox_max_mb * 1024**2,
                    legacy_sqlite=self.dir / LEGACY_OUTBOX_FILE,
                )
            )
            self.battery = BatteryReport()
            self.battery.set_devices(self.pairing.devices())  # levels from before a restart
            stack.callback(self.battery.close)
            backends = self._backends
            if backends is None:
                backends = await stack.enter_async_context(
                    ble_backends(self.settings.ble_transport)
                )
            self.publisher = await stack.enter_async_context(
                Publisher(
                    self.broker,
                    self.outbox,
                    on_command=self.handle_command,
                    on_receipt=self.notices.record_receipt,
                    status_devices=self.battery.for_status,
                )
            )
            self.battery.publish = self.publisher.publish_status
            extra = {"clock": self._clock} if self._clock is not None else {}
            self.ble = await stack.enter_async_context(
                BleManager(
                    gateway_id=self.gateway_id,
                    pairing=self.pairing,
                    outbox=self.outbox,
                    backends=backends,
                    zone=self.zone,
                    on_stored=self.publisher.wake,
                    battery=self.battery,
                    **extra,
                )
            )
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        log.info(
            "gateway %s: running with %d paired devices, transport %s, data in %s",
            self.gateway_id,
            len(self.pairing.devices()),
            "injected" if self._backends is not None else self.settings.ble_transport,
            self.dir,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()
        self._closed.set()

    async def wait_closed(self) -> None:
        """Run until cancelled (Ctrl-C) or ``stop`` is called."""
        await self._closed.wait()

    def stop(self) -> None:
        self._closed.set()

    async def run_until_stopped(self, *, duration_s: float | None = None) -> None:
        """Run until SIGINT or SIGTERM (a service manager's stop), ``stop`` or ``duration_s``.

        The signals only end the wait: leaving the ``async with`` then closes everything in
        order, the outbox last.
        """
        loop = asyncio.get_running_loop()
        handled: list[signal.Signals] = []
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(signum, self.stop)
                handled.append(signum)
        try:
            if duration_s is None:
                await self.wait_closed()
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wait_closed(), duration_s)
        finally:
            for signum in handled:
                loop.remove_signal_handler(signum)

    def running_summary(self) -> str:
        """One line for the operator once the gateway runs."""
        return (
            f"gateway {self.gateway_id} running: {len(self.pairing.devices())} devices, "
            f"broker {self.broker.host}:{self.broker.port}, data in {self.dir}"
        )

    def stopping_summary(self) -> str:
        """One line for the operator before the gateway closes: what it stored and sent."""
        stats = self.ble.stats().values()
        return (
            f"gateway {self.gateway_id} stopping: {sum(s.readings for s in stats)} readings "
            f"({sum(s.observations for s in stats)} observations) stored, "
            f"{self.publisher.acked_readings} observations acknowledged by the broker, "
            f"{self.outbox.stats().pending} pending, {self.ble.decode_errors} undecodable, "
            f"{sum(s.duplicates for s in stats)} duplicates ignored"
        )

    # --- commands from the hub (on the event loop) ------------------------------------------
    def handle_command(self, command: Command) -> None:
        gw = self.gateway_id
        if not self.notices.first_time(command.id):
            self.commands_ignored += 1
            log.info("gateway %s: command %s was handled before; ignored", gw, command.id)
            return
        self.commands_handled += 1
        if command.command is CommandName.MEASURE_AGAIN:
            notice = self.notices.add(
                kind=command.kind or "any",
                message=command.message or DEFAULT_MEASURE_AGAIN,
                command_id=command.id,
                at=command.issued_at,
            )
            # The message text may name the patient: logged by id and kind only.
            log.info(
                "gateway %s: measure again (%s) shown to the patient, notice %d, command %s",
                gw,
                notice.kind,
                notice.id,
                command.id,
            )
            if self.on_notice is not None:
                self.on_notice(notice)
        elif command.command is CommandName.CONFIG_CHANGED:
            # A command queued for the session can arrive while starting; the BLE manager
            # then reads the pairing list when it starts anyway.
            ble: BleManager | None = getattr(self, "ble", None)
            if ble is not None:
                ble.reload()
            log.info(
                "gateway %s: configuration changed (command %s); pairing list reloaded, %d devices",
                gw,
                command.id,
                len(self.pairing.devices()),
            )
