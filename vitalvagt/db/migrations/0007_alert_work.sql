-- Issue 11: every reading is evaluated by the alert engine exactly once, and an alert's
-- life cycle can be read back.
--
-- alert_work: ingest writes, in the transaction that stores the readings, a row per patient
-- and batch naming the readings it inserted (never the duplicates). The engine takes rows in
-- order (FOR UPDATE SKIP LOCKED, so two engines share the work), evaluates those readings
-- against the patient's history and deletes the rows in the transaction that writes the
-- alerts: after a crash nothing is missed (the rows are still there) and nothing doubled
-- (the rows of committed work are gone). NOTIFY only wakes the engine.
CREATE TABLE alert_work (
    id               bigserial PRIMARY KEY,
    patient_id       text NOT NULL,
    observation_ids  uuid[] NOT NULL,
    measured_from    timestamptz NOT NULL,   -- the range of the readings' times, so that
    measured_to      timestamptz NOT NULL,   -- reading them back prunes the hypertable
    ingested_at      timestamptz NOT NULL DEFAULT now()
);

-- Snoozed: no alert or notification until snoozed_until, then back to open.
ALTER TYPE alert_state ADD VALUE IF NOT EXISTS 'snoozed' AFTER 'acknowledged';

ALTER TABLE alerts
    ADD COLUMN category      text NOT NULL DEFAULT 'clinical'
                             CHECK (category IN ('clinical', 'missed', 'quality')),
    ADD COLUMN rule_version  integer NOT NULL DEFAULT 1,
    ADD COLUMN details       jsonb NOT NULL DEFAULT '{}',
    -- how late the triggering reading reached the hub (ingested minus measured), seconds
    ADD COLUMN late_s        double precision,
    ADD COLUMN snoozed_until timestamptz,
    ADD COLUMN snoozed_by    text;

-- Every transition of an alert is a row of its own: the history a nurse reads back.
CREATE TABLE alert_transitions (
    id          bigserial PRIMARY KEY,
    alert_id    bigint NOT NULL REFERENCES alerts(id),
    from_state  text,                     -- NULL when the alert opened
    to_state    text NOT NULL,
    at          timestamptz NOT NULL DEFAULT now(),
    by          text NOT NULL,            -- a user, or 'engine'
    reason      text NOT NULL,            -- opened, severity_raised, acknowledged, snoozed,
                                          -- snooze_ended, resolved, cleared
    note        text
);
CREATE INDEX alert_transitions_alert_idx ON alert_transitions (alert_id, id);

INSERT INTO alert_transitions (alert_id, from_state, to_state, at, by, reason)
SELECT id, NULL, 'open', opened_at, 'engine', 'opened' FROM alerts;
INSERT INTO alert_transitions (alert_id, from_state, to_state, at, by, reason, note)
SELECT id, 'open', 'acknowledged', acknowledged_at, acknowledged_by, 'acknowledged', note
FROM alerts WHERE acknowledged_at IS NOT NULL;
INSERT INTO alert_transitions (alert_id, from_state, to_state, at, by, reason, note)
SELECT id, 'open', 'resolved', resolved_at, coalesce(resolved_by, 'engine'), 'resolved', note
FROM alerts WHERE resolved_at IS NOT NULL;

-- Monitoring paused (an admission, a holiday away from home): no missed-measurement alerts.
ALTER TABLE patients ADD COLUMN paused_until timestamptz, ADD COLUMN paused_reason text;
