-- Alert limits (OpenTele style: alert low, warning low, warning high, alert high) as
-- defaults per patient group, overridden per patient by the physician; and alerts with a
-- life cycle. One active alert per (patient, rule) is a database constraint.

CREATE TABLE alert_limits (
    patient_group  patient_group,
    patient_id     text REFERENCES patients(id),
    kind           text NOT NULL,
    alert_low      double precision,
    warn_low       double precision,
    warn_high      double precision,
    alert_high     double precision,
    set_by         text NOT NULL DEFAULT 'default',
    set_at         timestamptz NOT NULL DEFAULT now(),
    CHECK ((patient_id IS NULL) <> (patient_group IS NULL)),
    CHECK (alert_low IS NULL OR warn_low IS NULL OR alert_low <= warn_low),
    CHECK (alert_high IS NULL OR warn_high IS NULL OR warn_high <= alert_high)
);
CREATE UNIQUE INDEX alert_limits_patient_idx ON alert_limits (patient_id, kind)
    WHERE patient_id IS NOT NULL;
CREATE UNIQUE INDEX alert_limits_group_idx ON alert_limits (patient_group, kind)
    WHERE patient_id IS NULL;

-- Defaults (docs/clinical-rules.md gives the reasoning); a physician overrides per patient.
INSERT INTO alert_limits (patient_group, kind, alert_low, warn_low, warn_high, alert_high) VALUES
    ('copd', 'spo2', 85, 88, NULL, NULL),
    ('copd', 'pulse', 40, 50, 110, 130),
    ('copd', 'bp_systolic', 90, 100, 180, 220),
    ('copd', 'temperature', 35.0, 36.0, 38.0, 39.0),
    ('heart_failure', 'spo2', 88, 92, NULL, NULL),
    ('heart_failure', 'pulse', 40, 50, 110, 130),
    ('heart_failure', 'bp_systolic', 85, 95, 170, 200),
    ('heart_failure', 'temperature', 35.0, 36.0, 38.0, 39.0),
    ('both', 'spo2', 85, 88, NULL, NULL),
    ('both', 'pulse', 40, 50, 110, 130),
    ('both', 'bp_systolic', 85, 95, 170, 200),
    ('both', 'temperature', 35.0, 36.0, 38.0, 39.0);

CREATE TYPE alert_state AS ENUM ('open', 'acknowledged', 'resolved');

CREATE TABLE alerts (
    id                bigserial PRIMARY KEY,
    patient_id        text NOT NULL REFERENCES patients(id),
    team_id           text NOT NULL REFERENCES acute_teams(id),
    rule              text NOT NULL,          -- e.g. 'limit:spo2', 'missed'
    severity          text NOT NULL CHECK (severity IN ('red', 'yellow', 'blue')),
    state             alert_state NOT NULL DEFAULT 'open',
    kind              text,
    value             double precision,
    observation_id    uuid,
    measured_at       timestamptz,
    message           text NOT NULL,          -- what happened and what to do, plainly
    opened_at         timestamptz NOT NULL DEFAULT now(),
    last_triggered_at timestamptz NOT NULL DEFAULT now(),
    trigger_count     integer NOT NULL DEFAULT 1,
    acknowledged_by   text,
    acknowledged_at   timestamptz,
    note              text,
    resolved_by       text,
    resolved_at       timestamptz
);
CREATE UNIQUE INDEX alerts_one_active_idx ON alerts (patient_id, rule) WHERE state <> 'resolved';
CREATE INDEX alerts_team_open_idx ON alerts (team_id, opened_at DESC) WHERE state <> 'resolved';
