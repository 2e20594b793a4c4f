"""Gateway provisioning: a gateway's MQTT credentials live in the ``gateways`` table."""

from __future__ import annotations

import secrets

import psycopg

from vitalvagt.broker import check_gateway_id, mosquitto_hash


def gateway_credential_hashes(database_url: str) -> dict[str, str]:
    """Active gateways and their broker hashes, for the broker's password file."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT id, credential_hash FROM gateways WHERE active").fetchall()
    return dict(rows)


def provision_gateway(
    conn: psycopg.Connection,
    gateway_id: str,
    *,
    patient_id: str | None = None,
    password: str | None = None,
) -> str:
    """Create or re-key a gateway; returns its password (shown once, stored only hashed).

    Refuses (``BrokerConfigError``) an id that is malformed or in the service users' name
    space (``vv-*``); the database's CHECK constraints refuse them too."""
    check_gateway_id(gateway_id)
    password = password or secrets.token_urlsafe(18)
    conn.execute(
        "INSERT INTO gateways (id, patient_id, credential_hash) VALUES (%s, %s, %s)"
        " ON CONFLICT (id) DO UPDATE SET credential_hash = EXCLUDED.credential_hash,"
        " patient_id = COALESCE(EXCLUDED.patient_id, gateways.patient_id), active = true",
        (gateway_id, patient_id, mosquitto_hash(password)),
    )
    return password
