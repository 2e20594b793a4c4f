"""The one transaction that stores a batch.

A batch of MQTT messages becomes: observations (COPY straight into the hypertable, or when a
reading is already stored through a staging table and INSERT ... ON CONFLICT DO NOTHING, so
a redelivered reading is stored once), dead letters for the messages that failed, device and
gateway last-seen times, the roll-up buckets it touched, the alert engine's unit of work
(the readings inserted, per patient) and a NOTIFY that wakes the engine, all committed
together. Only after the commit are
the messages acknowledged to the broker (service.py).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg

from ingest.bounds import kept_payload
from ingest.errors import DatabaseUnavailable, StorageRefused
from ingest.messages import Accepted, Rejected
from vitalvagt.db.connect import DatabaseUnavailable as CoreDatabaseUnavailable
from vitalvagt.db.connect import connect
from vitalvagt.db.notify import notify_new_readings

log = logging.getLogger(__name__)

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


@dataclass
class WriteResult:
    inserted: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    patients: set[str] = field(default_factory=set)


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
        # autocommit: every write is an explicit `transaction()` block, never a savepoint
        # inside an implicit transaction left open by a registry lookup.
        try:
            conn = connect(self.database_url)
        except CoreDatabaseUnavailable as exc:
            raise DatabaseUnavailable(str(exc)) from exc
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
                    inserted = [(r[0], r[1], r[3], r[6]) for r in rows]
                except psycopg.errors.UniqueViolation:
                    self._copy(cur, "obs_stage", rows)
                    cur.execute(
                        f"INSERT INTO observations ({COLUMNS}) SELECT {COLUMNS} FROM obs_stage"
                        " ON CONFLICT DO NOTHING RETURNING id, measured_at, patient_id, kind"
                    )
                    inserted = cur.fetchall()
                result.inserted = len(inserted)
                result.duplicates = total - result.inserted
                result.patients = {r[2] for r in inserted}
                self._mark_dirty(cur, {(r[2], r[3], _hour(r[1])) for r in inserted})
                self._add_alert_work(cur, inserted)
                self._last_measured(cur, inserted)
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
                notify_new_readings(cur, result.patients)  # sent when this commits
        return result

    @staticmethod
    def _add_alert_work(cur: psycopg.Cursor, inserted: list[tuple[Any, ...]]) -> None:
        """The engine's unit of work: per patient, the readings this batch inserted
        (vitalvagt/db/migrations/0007_alert_work.sql). Duplicates are not new work."""
        by_patient: dict[str, list[tuple[Any, ...]]] = {}
        for r in inserted:
            by_patient.setdefault(r[2], []).append(r)
        if by_patient:
            cur.executemany(
                "INSERT INTO alert_work (patient_id, observation_ids, measured_from,"
                " measured_to) VALUES (%s, %s, %s, %s)",
                [(pid, [r[0] for r in rs], min(r[1] for r in rs), max(r[1] for r in rs))
                 for pid, rs in by_patient.items()],
            )  # fmt: skip

    @staticmethod
    def _last_measured(cur: psycopg.Cursor, inserted: list[tuple[Any, ...]]) -> None:
        """Each patient's latest reading time, which the missed-measurement sweep reads
        (vitalvagt/db/migrations/0010_sweep.sql); a late reading never moves it back."""
        latest: dict[str, datetime] = {}
        for r in inserted:
            if r[2] not in latest or r[1] > latest[r[2]]:
                latest[r[2]] = r[1]
        if latest:
            cur.executemany(
                "UPDATE patients SET last_measured_at = %s WHERE id = %s"
                " AND (last_measured_at IS NULL OR last_measured_at < %s)",
                [(at, pid, at) for pid, at in sorted(latest.items())],
            )

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


def _hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


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
