"""Versioned migrations: numbered SQL files applied once each, in order, under a lock.

Running ``vitalvagt db migrate`` again changes nothing. An applied file whose text changed
afterwards is refused (its checksum no longer matches): write a new migration instead.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from importlib import resources

import psycopg

from vitalvagt.errors import VitalvagtError

log = logging.getLogger(__name__)
LOCK_KEY = 0x7676_6D69  # pg_advisory_xact_lock key: one migrator at a time


class MigrationError(VitalvagtError):
    """A migration failed or the applied history does not match the files."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def available() -> list[Migration]:
    out = []
    for entry in resources.files("vitalvagt.db.migrations").iterdir():
        if entry.name.endswith(".sql"):
            version, _, rest = entry.name.partition("_")
            out.append(Migration(int(version), rest.removesuffix(".sql"), entry.read_text()))
    return sorted(out, key=lambda m: m.version)


def migrate(database_url: str) -> list[int]:
    """Apply pending migrations; returns the versions applied by this call."""
    applied_now: list[int] = []
    try:
        with psycopg.connect(database_url) as conn:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations (version int PRIMARY KEY,"
                    " name text NOT NULL, checksum text NOT NULL,"
                    " applied_at timestamptz NOT NULL DEFAULT now())"
                )
                done = dict(
                    conn.execute("SELECT version, checksum FROM schema_migrations").fetchall()
                )
                for m in available():
                    if m.version in done:
                        if done[m.version] != m.checksum:
                            raise MigrationError(
                                f"migration {m.version:04d}_{m.name} was changed after it was"
                                " applied;"
                                " add a new migration instead of editing an applied one"
                            )
                        continue
                    try:
                        conn.execute(m.sql)  # type: ignore[arg-type]
                    except psycopg.Error as exc:
                        raise MigrationError(
                            f"migration {m.version:04d}_{m.name} failed: {exc}"
                        ) from exc
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum)"
                        " VALUES (%s, %s, %s)",
                        (m.version, m.name, m.checksum),
                    )
                    applied_now.append(m.version)
                    log.info("db: applied migration %04d_%s", m.version, m.name)
    except psycopg.OperationalError as exc:
        raise MigrationError(f"cannot reach the database to migrate: {exc}") from exc
    return applied_now
