-- Issue 13: the gateway status the hub records, and each patient's measurement schedule.

-- Gateways: online or offline from the retained status topic (vv/v1/gw/{id}/status) and the
-- gateway's last will, recorded by ingest (ingest/status.py). status_since is when the hub
-- learned of the current state (for a last will: when the broker published it, within its
-- keep-alive of the drop); status_at is when the hub last received any status message.
-- last_status (0001) keeps the payload itself.
ALTER TABLE gateways
    ADD COLUMN online       boolean,
    ADD COLUMN status_since timestamptz,
    ADD COLUMN status_at    timestamptz;
-- "Which homes are offline, since when" (GET /gateways?state=offline).
CREATE INDEX gateways_offline_idx ON gateways (status_since) WHERE active AND NOT online;

-- A patient's measurement schedule, per kind: either local times of day (Europe/Copenhagen,
-- e.g. {08:00,20:00}) or a number of times per day (evenly spaced in elapsed time), and the
-- grace after which a missing measurement counts as missed (vitalvagt/schedule.py holds the
-- rule the missed-measurement sweep applies). Set by a nurse or physician, with a reason;
-- the change is in audit_log (read_schedule / set_schedule).
CREATE TABLE measurement_schedules (
    patient_id     text NOT NULL REFERENCES patients(id),
    kind           text NOT NULL CHECK (kind IN ('spo2', 'pulse', 'bp_systolic', 'bp_diastolic',
                                   'bp_mean', 'weight', 'temperature', 'respiratory_rate')),
    local_times    time[] NOT NULL DEFAULT '{}' CHECK (cardinality(local_times) <= 24),
    times_per_day  smallint CHECK (times_per_day BETWEEN 1 AND 24),
    grace          interval NOT NULL DEFAULT '2 hours'
                   CHECK (grace >= interval '5 minutes' AND grace <= interval '24 hours'),
    set_by         text NOT NULL,
    set_at         timestamptz NOT NULL DEFAULT now(),
    reason         text NOT NULL CHECK (length(reason) BETWEEN 3 AND 1000),
    PRIMARY KEY (patient_id, kind),
    -- exactly one of the two ways to say when
    CHECK ((cardinality(local_times) > 0) <> (times_per_day IS NOT NULL))
);
