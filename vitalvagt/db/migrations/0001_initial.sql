-- Vitalvagt schema v1. Pseudonymous ids only: no names or CPR numbers are stored here.

CREATE TABLE municipalities (
    id          text PRIMARY KEY,            -- municipality code, e.g. '0751' (Aarhus)
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE acute_teams (
    id               text PRIMARY KEY,
    municipality_id  text NOT NULL REFERENCES municipalities(id),
    name             text NOT NULL,
    phone            text,
    -- Coverage: the hours the team answers alerts (local time, Europe/Copenhagen).
    -- start = end means around the clock; start > end spans midnight.
    coverage_start   time NOT NULL DEFAULT '00:00',
    coverage_end     time NOT NULL DEFAULT '00:00',
    coverage_days    smallint[] NOT NULL DEFAULT '{1,2,3,4,5,6,7}',  -- ISO weekdays
    escalation_team_id text REFERENCES acute_teams(id),
    created_at       timestamptz NOT NULL DEFAULT now(),
    CHECK (coverage_days <@ '{1,2,3,4,5,6,7}'::smallint[])
);

CREATE TYPE patient_group AS ENUM ('copd', 'heart_failure', 'both');

CREATE TABLE patients (
    id               text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9][A-Za-z0-9-]{2,62}$'),  -- pseudonym
    municipality_id  text NOT NULL REFERENCES municipalities(id),
    team_id          text NOT NULL REFERENCES acute_teams(id),
    patient_group    patient_group NOT NULL,
    gp_name          text,              -- responsible GP (practice), weekdays 08-16
    gp_phone         text,
    hospital_responsible_until timestamptz,  -- hospital doctor responsible until then
    on_oxygen        boolean NOT NULL DEFAULT false,   -- NEWS2 SpO2 scale 2 / oxygen points
    spo2_scale2      boolean NOT NULL DEFAULT false,   -- hypercapnic COPD, target 88-92 %
    consent_until    date,              -- Health Act section 43-44: written consent, max a year
    active           boolean NOT NULL DEFAULT true,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX patients_team_idx ON patients (team_id) WHERE active;

CREATE TABLE gateways (
    id               text PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9-]{2,62}$'),
    patient_id       text REFERENCES patients(id),
    -- mosquitto PBKDF2-SHA512 hash ($7$...): the broker's password file is built from it.
    credential_hash  text NOT NULL,
    active           boolean NOT NULL DEFAULT true,
    created_at       timestamptz NOT NULL DEFAULT now(),
    last_seen_at     timestamptz,
    last_status      jsonb
);
CREATE INDEX gateways_patient_idx ON gateways (patient_id);

CREATE TABLE devices (
    gateway_id       text NOT NULL REFERENCES gateways(id),
    address          text NOT NULL,     -- upper-case Bluetooth address or vendor id
    model            text,
    serial           text,
    firmware         text,
    first_seen_at    timestamptz NOT NULL DEFAULT now(),
    last_seen_at     timestamptz,
    active           boolean NOT NULL DEFAULT true,
    PRIMARY KEY (gateway_id, address)
);

CREATE TABLE observations (
    id            uuid NOT NULL,           -- stable id (docs/wire-format.md)
    measured_at   timestamptz NOT NULL,
    received_at   timestamptz NOT NULL,
    ingested_at   timestamptz NOT NULL DEFAULT now(),
    patient_id    text NOT NULL,
    gateway_id    text NOT NULL,
    device_address text NOT NULL,
    kind          text NOT NULL,
    value         double precision NOT NULL,
    unit          text NOT NULL,
    time_source   text NOT NULL DEFAULT 'device',
    reading_id    uuid,
    flags         text[] NOT NULL DEFAULT '{}',
    body_site     text,
    -- the stable id with the time: a redelivered reading is stored once
    CONSTRAINT observations_pkey PRIMARY KEY (id, measured_at)
);
SELECT create_hypertable('observations', 'measured_at', chunk_time_interval => INTERVAL '1 day');
-- "latest readings of a patient" and "a patient's readings in a time window (per kind)"
CREATE INDEX observations_patient_time_idx ON observations (patient_id, measured_at DESC);
CREATE INDEX observations_patient_kind_time_idx ON observations (patient_id, kind, measured_at DESC);

CREATE TABLE dead_letters (
    id            bigserial PRIMARY KEY,
    received_at   timestamptz NOT NULL DEFAULT now(),
    topic         text NOT NULL,
    payload       bytea NOT NULL,
    gateway_id    text,                   -- from the topic, when it parsed
    reason_code   text NOT NULL,
    reason        text NOT NULL,
    replayed_at   timestamptz,
    replay_result text
);
CREATE INDEX dead_letters_open_idx ON dead_letters (received_at) WHERE replayed_at IS NULL;

CREATE TABLE audit_log (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    actor       text NOT NULL,            -- user or service that acted
    action      text NOT NULL,            -- e.g. 'read_patient', 'ack_alert', 'provision_gateway'
    patient_id  text,
    detail      jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_patient_idx ON audit_log (patient_id, at DESC);
