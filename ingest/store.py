"""Validation against the hub's registry, and the one transaction that stores a batch.

A batch of MQTT messages becomes: observations (COPY into a staging table, then one INSERT
... ON CONFLICT DO NOTHING so a redelivered reading is stored once), dead letters for the
messages that failed, device and gateway last-seen times, the roll-up buckets it touched,
and a NOTIFY with the affected patients, all committed together. Only after the commit are
the messages acknowledged to the broker (service.py).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import psycopg

from ingest.bounds import kept_payload
from ingest.errors import DatabaseUnavailable, StorageRefused
from vitalvagt.wire import ObservationBatch, WireError, batch_id_of, decode_batch, parse_topic

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = "vv_observations"
STAGE_COLUMNS = (
    "id", "measured_at", "received_at", "patient_id", "gateway_id", "device_address", "kind",
    "value", "unit", "time_source", "reading_id", "flags", "body_site", "device_model",
    "device_serial",
)  # fmt: skip
COLUMNS = ", ".join(STAGE_COLUMNS)
STAGE_TYPES = (
    "uuid", "timestamptz", "timestamptz", "text", "text", "text", "text", "float8", "text",
    "text", "uuid", "text[]", "text", "text", "text",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    payload: bytes
    received_at: datetime  # when ingest got it (UTC)
    mid: int = 0  # MQTT message id, for the acknowledgement after commit


@dataclass(frozen=True, slots=True)
class Rejected:
    message: Message
    gateway_id: str | None
    code: str
    reason: str  # the hub's own words (vitalvagt.wire): never the sender's text

    @property
    def batch_id(self) -> str | None:
        return batch_id_of(self.message.payload)

    @property
    def size(self) -> int:
        return len(self.message.payload)


@dataclass(frozen=True, slots=True)
class Accepted:
    message: Message
    gateway_id: str
    patient_id: str
    rows: list[tuple[object, ...]]
    devices: dict[str, tuple[str | None, str | None]]  # address -> (model, serial)
    batch_id: str | None = None  # the gateway's name for the message, for its receipt


@dataclass
class WriteResult:
    inserted: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    patients: set[str] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class GatewayEntry:
    patient_id: str | None
    active: bool
    inactive_devices: frozenset[str]


class GatewayDirectory:
    """Known gateways, their patients and unbound devices; reloaded on a miss (at most 1/s)."""

    def __init__(self, *, min_reload_s: float = 1.0) -> None:
        self._entries: dict[str, GatewayEntry] = {}
        self._loaded_at = 0.0
        self._min_reload_s = min_reload_s

    def reload(self, conn: psycopg.Connection) -> None:
        rows = conn.execute(
            "SELECT g.id, g.patient_id, g.active AND coalesce(p.active, true),"
            " coalesce(array_agg(d.address) FILTER (WHERE NOT d.active), '{}')"
            " FROM gateways g LEFT JOIN patients p ON p.id = g.patient_id"
            " LEFT JOIN devices d ON d.gateway_id = g.id GROUP BY g.id, p.active"
        ).fetchall()
        self._entries = {r[0]: GatewayEntry(r[1], r[2], frozenset(r[3])) for r in rows}
        self._loaded_at = time.monotonic()

    def get(self, conn: psycopg.Connection, gateway_id: str) -> GatewayEntry | None:
        entry = self._entries.get(gateway_id)
        if entry is None and time.monotonic() - self._loaded_at >= self._min_reload_s:
            self.reload(conn)
            entry = self._entries.get(gateway_id)
        return entry


@dataclass(frozen=True, slots=True)
class Decoded:
    """A message that passed the wire checks; the registry checks come next (``resolve``)."""

    message: Message
    gateway_id: str
    batch: ObservationBatch


def parse_gateway(topic: str) -> str | None:
    """The gateway id of an obs topic, or None."""
    try:
        return parse_topic(topic)[0]
    except WireError:
        return None


def decode_message(msg: Message, *, now: datetime | None = None) -> Decoded | Rejected:
    """The wire checks of one message (topic, schema, units, ranges, time, stable ids).

    Pure: no database, so ingest runs it in its own thread while the previous batch is being
    written (service.py)."""
    gateway_id: str | None = None
    try:
        gateway_id, _ = parse_topic(msg.topic)
        batch = decode_batch(msg.payload, topic_gateway_id=gateway_id, now=now or msg.received_at)
    except WireError as exc:
        return Rejected(msg, gateway_id, exc.code.value, str(exc))
    return Decoded(msg, gateway_id, batch)


def resolve(
    decoded: Decoded | Rejected, directory: GatewayDirectory, conn: psycopg.Connection
) -> Accepted | Rejected:
    """The registry checks: the gateway is known, active and has a patient; the device is
    bound. Builds the rows to store."""
    if isinstance(decoded, Rejected):
        return decoded
    msg, gateway_id, batch = decoded.message, decoded.gateway_id, decoded.batch
    entry = directory.get(conn, gateway_id)
    if entry is None:
        return Rejected(
            msg,
            gateway_id,
            "unknown_gateway",
            f"gateway {gateway_id!r} is not registered; register it, then replay",
        )
    if not entry.active:
        return Rejected(
            msg,
            gateway_id,
            "gateway_inactive",
            f"gateway {gateway_id!r} or its patient is deactivated",
        )
    if entry.patient_id is None:
        return Rejected(
            msg,
            gateway_id,
            "gateway_unassigned",
            f"gateway {gateway_id!r} has no patient; assign one, then replay",
        )
    patient_id, inactive = entry.patient_id, entry.inactive_devices
    rows: list[tuple[object, ...]] = []
    devices: dict[str, tuple[str | None, str | None]] = {}
    for i, o in enumerate(batch.observations):
        device = o.device
        address = device.address.upper()
        if inactive and address in inactive:
            return Rejected(
                msg,
                gateway_id,
                "device_not_bound",
                f"observations[{i}].device.address: device {address} is unbound"
                f" from gateway {gateway_id!r}",
            )
        devices[address] = (device.model, device.serial)
        rows.append((
            o.id, o.measured_at, o.received_at, patient_id, gateway_id, address,
            o.kind.value, o.value, o.unit, o.time_source.value, o.reading_id,
            [f.value for f in o.flags] if o.flags else [],
            o.body_site.value if o.body_site else None, device.model, device.serial,
        ))  # fmt: skip
    return Accepted(msg, gateway_id, patient_id, rows, devices, batch.batch_id)


def validate(
    msg: Message,
    directory: GatewayDirectory,
    conn: psycopg.Connection,
    *,
    now: datetime | None = None,
) -> Accepted | Rejected:
    """Check one message against the wire format and the registry; never raises WireError."""
    return resolve(decode_message(msg, now=now), directory, conn)


class Store:
    """One database connection that writes batches. Open/close explicitly or use ``with``."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self._conn: psycopg.Connection | None = None

    def __enter__(self) -> Store:
        return self  # connects lazily: the database may be down when ingest starts

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        try:
            # autocommit: every write is an explicit `transaction()` block, never a savepoint
            # inside an implicit transaction left open by a registry lookup.
            conn = psycopg.connect(self.database_url, connect_timeout=10, autocommit=True)
        except psycopg.OperationalError as exc:
            raise DatabaseUnavailable(f"cannot connect to the database: {exc}") from exc
        conn.execute("SET timezone = 'UTC'")  # date_trunc('hour') buckets in UTC
        conn.execute(
            "CREATE TEMP TABLE obs_stage (LIKE observations INCLUDING DEFAULTS)"
            " ON COMMIT DELETE ROWS"
        )
        self._conn = conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    @property
    def conn(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            raise DatabaseUnavailable("not connected to the database")
        return self._conn

    def write(
        self,
        accepted: Sequence[Accepted],
        rejected: Sequence[Rejected],
        capped: Sequence[Rejected] = (),
    ) -> WriteResult:
        """Store a batch in one transaction: readings, dead letters kept in full
        (``rejected``) and counted only (``capped``, over the bounds). Raises
        DatabaseUnavailable (retry later) or StorageRefused (the same write would be refused
        again); nothing else."""
        try:
            return self._write(accepted, rejected, capped)
        except psycopg.OperationalError as exc:
            self.close()
            raise DatabaseUnavailable(f"database write failed: {exc}") from exc
        except psycopg.DatabaseError as exc:
            raise StorageRefused(refusal_reason(exc)) from exc
        except Exception as exc:  # e.g. a value psycopg cannot encode: refused all the same
            self._rollback_if_open()
            raise StorageRefused(f"{type(exc).__name__} while encoding the batch") from exc

    def _rollback_if_open(self) -> None:
        conn = self._conn
        if conn is not None and not conn.closed and conn.info.transaction_status != 0:
            try:
                conn.rollback()
            except psycopg.Error:
                self.close()

    @staticmethod
    def _copy(cur: psycopg.Cursor, table: str, rows: list[tuple[object, ...]]) -> None:
        # Binary COPY: psycopg's C dumpers, no text formatting of times and uuids.
        with cur.copy(f"COPY {table} ({COLUMNS}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(STAGE_TYPES)
            for row in rows:
                copy.write_row(row)

    def _write(
        self, accepted: Sequence[Accepted], rejected: Sequence[Rejected], capped: Sequence[Rejected]
    ) -> WriteResult:
        conn = self.conn
        result = WriteResult()
        with conn.transaction(), conn.cursor() as cur:
            total = sum(len(a.rows) for a in accepted)
            if total:
                rows = [row for a in accepted for row in a.rows]
                try:
                    # Optimistic: straight into the hypertable. A redelivered reading makes the
                    # COPY fail on the primary key; then the staging path skips what is stored.
                    with conn.transaction():
                        self._copy(cur, "observations", rows)
                    touched = {(r[3], r[6], r[1].replace(minute=0, second=0, microsecond=0))
                               for r in rows}  # fmt: skip
                    result.inserted = total
                except psycopg.errors.UniqueViolation:
                    self._copy(cur, "obs_stage", rows)
                    cur.execute(
                        f"INSERT INTO observations ({COLUMNS}) SELECT {COLUMNS} FROM obs_stage"
                        " ON CONFLICT DO NOTHING"
                        " RETURNING patient_id, kind, date_trunc('hour', measured_at)"
                    )
                    touched = set(cur.fetchall())
                    result.inserted = cur.rowcount
                result.duplicates = total - result.inserted
                result.patients = {t[0] for t in touched}
                self._mark_dirty(cur, touched)
                self._seen(cur, accepted)
            if rejected:
                rows_dl = []
                for r in rejected:
                    kept = kept_payload(r.message.payload)
                    rows_dl.append((
                        r.message.received_at, pg_text(r.message.topic), kept.data,
                        kept.size, kept.sha256, kept.truncated, r.gateway_id, r.code,
                        pg_text(r.reason),
                    ))  # fmt: skip
                cur.executemany(
                    "INSERT INTO dead_letters (received_at, topic, payload, payload_size,"
                    " payload_sha256, payload_truncated, gateway_id, reason_code, reason)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    rows_dl,
                )
                result.dead_letters = len(rejected)
            if capped:
                cur.executemany(
                    "INSERT INTO dead_letter_overflow AS o (gateway_id, reason_code, day,"
                    " messages, bytes, first_at, last_at) VALUES (%s, %s, %s, 1, %s, %s, %s)"
                    " ON CONFLICT (gateway_id, reason_code, day) DO UPDATE SET"
                    " messages = o.messages + 1, bytes = o.bytes + EXCLUDED.bytes,"
                    " last_at = greatest(o.last_at, EXCLUDED.last_at)",
                    [
                        (r.gateway_id or "", r.code, r.message.received_at.date(), r.size,
                         r.message.received_at, r.message.received_at)
                        for r in capped
                    ],
                )  # fmt: skip
            if result.patients:
                # Delivered to LISTENers only when this transaction commits.
                for chunk in notify_chunks(sorted(result.patients)):
                    cur.execute(
                        "SELECT pg_notify(%s, %s)",
                        (NOTIFY_CHANNEL, json.dumps({"patients": chunk})),
                    )
        return result

    @staticmethod
    def _mark_dirty(cur: psycopg.Cursor, touched: Iterable[tuple[object, ...]]) -> None:
        rows = list(touched)
        if rows:
            cur.executemany(
                "INSERT INTO rollup_dirty (patient_id, kind, hour) VALUES (%s, %s, %s)"
                " ON CONFLICT DO NOTHING",
                rows,
            )

    @staticmethod
    def _seen(cur: psycopg.Cursor, accepted: Sequence[Accepted]) -> None:
        devices: dict[tuple[str, str], tuple[str | None, str | None, datetime]] = {}
        gateways: dict[str, datetime] = {}
        for a in accepted:
            at = a.message.received_at
            gateways[a.gateway_id] = max(at, gateways.get(a.gateway_id, at))
            for address, (model, serial) in a.devices.items():
                devices[(a.gateway_id, address)] = (model, serial, at)
        cur.executemany(
            "INSERT INTO devices (gateway_id, address, model, serial, last_seen_at)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (gateway_id, address) DO UPDATE SET"
            " model = coalesce(EXCLUDED.model, devices.model),"
            " serial = coalesce(EXCLUDED.serial, devices.serial),"
            " last_seen_at = greatest(devices.last_seen_at, EXCLUDED.last_seen_at)",
            [(gw, addr, m, s, at) for (gw, addr), (m, s, at) in sorted(devices.items())],
        )
        cur.executemany(
            "UPDATE gateways SET last_seen_at = greatest(last_seen_at, %s) WHERE id = %s",
            [(at, gw) for gw, at in sorted(gateways.items())],
        )


def pg_text(text: str) -> str:
    """Text PostgreSQL accepts: NUL and lone surrogates escaped (neither can be stored)."""
    if "\x00" in text or not text.isascii():
        text = text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
    return text


def refusal_reason(exc: psycopg.DatabaseError) -> str:
    """Why the database refused a write, in words that cannot hold the sender's data: the
    SQLSTATE, the error class and the names of the constraint, column and table (the server's
    message may quote the value, so it is left out)."""
    d = exc.diag
    parts = [f"SQLSTATE {d.sqlstate or '?'} {type(exc).__name__}"]
    for label, name in (("constraint", d.constraint_name), ("column", d.column_name),
                        ("table", d.table_name)):  # fmt: skip
        if name:
            parts.append(f"{label} {pg_text(name)}")
    return ", ".join(parts)


NOTIFY_MAX_BYTES = 7900  # PostgreSQL refuses a NOTIFY payload of 8,000 bytes or more


def notify_chunks(patients: list[str]) -> Iterable[list[str]]:
    """Patient ids in groups whose ``{"patients": [...]}`` stays under the NOTIFY limit."""
    chunk: list[str] = []
    size = len('{"patients": []}')
    for p in patients:
        need = len(json.dumps(p)) + 2  # quoted, and ", " before it
        if chunk and size + need > NOTIFY_MAX_BYTES:
            yield chunk
            chunk, size = [], len('{"patients": []}')
        chunk.append(p)
        size += need
    if chunk:
        yield chunk
