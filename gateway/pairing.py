"""The home's pairing list: which Bluetooth devices this gateway reads, in SQLite.

It lives in ``pairing.db`` in the gateway directory (``VV_GATEWAY_DIR``, default
``<VV_STATE_DIR>/gateway``), beside the outbox. A row per device: its address and type
(which health service it offers), the name it advertised, what its Device Information
service said (read once, on the first connection), the quirk profile chosen by the
operator, whether it needs bonding, the patient's user slot on scales and cuffs (a reading
from another slot gets ``Flag.OTHER_USER``), when it was last seen, and its last valid
battery level with the time it was received (gateway/battery.py).

A second table keeps the last values the gateway could not decode, so that
``vitalvagt gateway devices --undecodable`` can hand them to ``vitalvagt gateway decode``.

Several processes may open the file at once (the running gateway and a CLI command): WAL
mode, short transactions, a busy time-out.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.errors import GatewayError
from gateway.sqlite_file import SqliteFile
from vitalvagt.devices import DeviceType
from vitalvagt.settings import Settings

PAIRING_FILE = "pairing.db"
UNDECODABLE_KEEP = 200  # raw values kept for debugging; older ones are deleted


def gateway_dir(settings: Settings) -> Path:
    """Where the outbox, pairing list and notices live."""
    return settings.gateway_dir or settings.state_dir / "gateway"


def normalize_address(address: str) -> str:
    text = address.strip().upper().replace("-", ":")
    if not text:
        raise GatewayError("device address is empty")
    return text


@dataclass(frozen=True, slots=True)
class PairedDevice:
    address: str
    type: DeviceType
    name: str | None = None
    manufacturer: str | None = None
    model: str | None = None
    serial: str | None = None
    firmware: str | None = None
    profile: str | None = None  # gateway/profiles.py name for a model that deviates
    requires_bonding: bool = False
    user_id: int | None = None  # the patient's user slot on a scale or cuff
    paired_at: datetime | None = None
    last_seen: datetime | None = None
    battery_level: int | None = None
    battery_at: datetime | None = None  # when the gateway received battery_level

    @property
    def info_read(self) -> bool:
        return any((self.manufacturer, self.model, self.serial, self.firmware))


@dataclass(frozen=True, slots=True)
class Undecodable:
    at: datetime
    address: str
    characteristic: str
    data: bytes
    error: str


_COLUMNS = (
    "address, type, name, manufacturer, model, serial, firmware, profile, requires_bonding,"
    " user_id, paired_at, last_seen, battery_level, battery_at"
)


def _time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _row(row: tuple[Any, ...]) -> PairedDevice:
    (
        address,
        kind,
        name,
        manufacturer,
        model,
        serial,
        firmware,
        profile,
        bonding,
        user_id,
        paired_at,
        last_seen,
        battery,
        battery_at,
    ) = row
    return PairedDevice(
        address,
        DeviceType(kind),
        name,
        manufacturer,
        model,
        serial,
        firmware,
        profile,
        bool(bonding),
        user_id,
        _time(paired_at),
        _time(last_seen),
        battery,
        _time(battery_at),
    )


class PairingList(SqliteFile):
    """The pairing list in SQLite; a context manager (``with PairingList(path) as pl``)."""

    what = "pairing list"

    def open(self) -> PairingList:
        self._connect(
            """
            CREATE TABLE IF NOT EXISTS devices (
                address          TEXT PRIMARY KEY,
                type             TEXT NOT NULL,
                name             TEXT,
                manufacturer     TEXT,
                model            TEXT,
                serial           TEXT,
                firmware         TEXT,
                profile          TEXT,
                requires_bonding INTEGER NOT NULL DEFAULT 0,
                user_id          INTEGER,
                paired_at        TEXT NOT NULL,
                last_seen        TEXT,
                battery_level    INTEGER,
                battery_at       TEXT
            );
            CREATE TABLE IF NOT EXISTS undecodable (
                id             INTEGER PRIMARY KEY AUTOINCREMENT,
                at             TEXT NOT NULL,
                address        TEXT NOT NULL,
                characteristic TEXT NOT NULL,
                data           BLOB NOT NULL,
                error          TEXT NOT NULL
            );
            """
        )
        # A pairing list from before battery_at: the column is added (levels kept, no time).
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(devices)")}
        if "battery_at" not in columns:
            try:
                self.db.execute("ALTER TABLE devices ADD COLUMN battery_at TEXT")
            except sqlite3.OperationalError:  # another process (a CLI command) added it first
                columns = {row[1] for row in self.db.execute("PRAGMA table_info(devices)")}
                if "battery_at" not in columns:
                    raise
        return self

    def _execute(self, sql: str, args: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        with self._lock:
            return self.db.execute(sql, args)

    # --- devices --------------------------------------------------------------------------
    def add(
        self,
        address: str,
        kind: DeviceType | str,
        *,
        name: str | None = None,
        profile: str | None = None,
        user_id: int | None = None,
        requires_bonding: bool = False,
        now: datetime | None = None,
    ) -> PairedDevice:
        """Pair a device, or update how an already paired one is read (its info is kept)."""
        address = normalize_address(address)
        try:
            kind = DeviceType(kind)
        except ValueError:
            known = ", ".join(k.value for k in DeviceType)
            raise GatewayError(f"device type {kind!r} is not one of {known}") from None
        if profile is not None:
            from gateway.profiles import PROFILES

            if profile not in PROFILES:
                known = ", ".join(sorted(PROFILES)) or "none"
                raise GatewayError(f"unknown device profile {profile!r} (known: {known})")
        if user_id is not None and not 0 <= user_id < 0xFF:
            raise GatewayError(f"user id {user_id} must be 0-254 (255 means 'unknown user')")
        stamp = (now or datetime.now(UTC)).isoformat()
        self._execute(
            "INSERT INTO devices (address, type, name, profile, requires_bonding, user_id,"
            " paired_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (address) DO UPDATE SET type = excluded.type,"
            " name = coalesce(excluded.name, devices.name), profile = excluded.profile,"
            " requires_bonding = excluded.requires_bonding, user_id = excluded.user_id",
            (address, kind.value, name, profile, int(requires_bonding), user_id, stamp),
        )
        device = self.get(address)
        assert device is not None
        return device

    def remove(self, address: str) -> bool:
        cur = self._execute("DELETE FROM devices WHERE address = ?", (normalize_address(address),))
        return cur.rowcount > 0

    def get(self, address: str) -> PairedDevice | None:
        row = self._execute(
            f"SELECT {_COLUMNS} FROM devices WHERE address = ?", (normalize_address(address),)
        ).fetchone()
        return None if row is None else _row(row)

    def devices(self) -> list[PairedDevice]:
        rows = self._execute(f"SELECT {_COLUMNS} FROM devices ORDER BY paired_at, address")
        return [_row(r) for r in rows.fetchall()]

    def set_info(
        self,
        address: str,
        *,
        manufacturer: str | None,
        model: str | None,
        serial: str | None,
        firmware: str | None,
    ) -> None:
        """What Device Information said (read once per device)."""
        self._execute(
            "UPDATE devices SET manufacturer = ?, model = ?, serial = ?, firmware = ?"
            " WHERE address = ?",
            (manufacturer, model, serial, firmware, normalize_address(address)),
        )

    def seen(self, address: str, at: datetime, *, battery_level: int | None = None) -> None:
        """Last seen at ``at``; with ``battery_level``, also that level received then."""
        stamp = at.astimezone(UTC).isoformat()
        self._execute(
            "UPDATE devices SET last_seen = ?, battery_level = coalesce(?, battery_level),"
            " battery_at = CASE WHEN ? IS NULL THEN battery_at ELSE ? END WHERE address = ?",
            (stamp, battery_level, battery_level, stamp, normalize_address(address)),
        )

    def set_battery(self, address: str, level: int, at: datetime) -> None:
        """The last valid battery level and when it was received."""
        self._execute(
            "UPDATE devices SET battery_level = ?, battery_at = ? WHERE address = ?",
            (level, at.astimezone(UTC).isoformat(), normalize_address(address)),
        )

    # --- values that could not be decoded -------------------------------------------------
    def record_undecodable(
        self, address: str, characteristic: str, data: bytes, error: str, at: datetime
    ) -> None:
        with self._lock:
            db = self.db
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute(
                    "INSERT INTO undecodable (at, address, characteristic, data, error)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (at.astimezone(UTC).isoformat(), address, characteristic, data, error),
                )
                db.execute(
                    "DELETE FROM undecodable WHERE id <= (SELECT max(id) FROM undecodable) - ?",
                    (UNDECODABLE_KEEP,),
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def undecodable(self, limit: int = 20) -> list[Undecodable]:
        rows = self._execute(
            "SELECT at, address, characteristic, data, error FROM undecodable"
            " ORDER BY id DESC LIMIT ?",
            (limit,),
        ).fetchall()
        return [
            Undecodable(datetime.fromisoformat(r[0]), r[1], r[2], bytes(r[3]), r[4]) for r in rows
        ]
