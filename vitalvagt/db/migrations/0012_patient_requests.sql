-- Requests to the patient's tablet (issue 12, point 5; alerts/patient_requests.py): "measure
-- again" after an unreliable reading or a rule that asks for confirmation, and a reminder
-- before a missed measurement turns into a blue alert. One row per request, written before
-- the command is published, so a restart sends nothing twice: the unique indexes allow one
-- request per alert trigger and one reminder per silence, and a row still 'pending' after a
-- crash is published again with the same command id (the tablet ignores an id it has seen).
CREATE TABLE patient_requests (
    id                    bigserial PRIMARY KEY,
    command_id            uuid NOT NULL UNIQUE,      -- the wire Command's id
    patient_id            text NOT NULL REFERENCES patients(id),
    gateway_id            text NOT NULL REFERENCES gateways(id),
    alert_id              bigint REFERENCES alerts(id),
    alert_trigger         integer,                   -- the alert's trigger_count it answers
    reason                text NOT NULL CHECK (reason IN ('quality', 'confirm', 'reminder')),
    severity              text CHECK (severity IN ('red', 'yellow', 'blue')),
    kind                  text,                      -- the measurement asked for; NULL: any
    message               text NOT NULL,             -- the text shown to the patient
    silence_since         timestamptz,               -- reminders: the silence they belong to
    first_observation_id  uuid,                      -- the reading that asked for the repeat
    first_measured_at     timestamptz,
    created_at            timestamptz NOT NULL,      -- when the hub decided to ask
    -- pending: recorded, not yet acknowledged by the broker; sent: the broker has it (QoS 1
    -- PUBACK) and queues it for the tablet's session; answered: a repeat reading is linked;
    -- unanswered: none came in time; dropped: never reached the broker in time.
    state                 text NOT NULL DEFAULT 'pending'
                          CHECK (state IN ('pending', 'sent', 'answered', 'unanswered', 'dropped')),
    publish_attempts      integer NOT NULL DEFAULT 0,
    last_error            text,
    sent_at               timestamptz,               -- the broker's acknowledgement
    repeat_observation_id uuid,
    repeat_measured_at    timestamptz,
    repeat_reliable       boolean,
    alert_resolved        boolean NOT NULL DEFAULT false,  -- resolved by the good repeat
    closed_at             timestamptz,
    CHECK ((reason = 'reminder') = (alert_id IS NULL)),
    CHECK ((alert_id IS NULL) = (alert_trigger IS NULL)),
    CHECK (reason <> 'reminder' OR silence_since IS NOT NULL)
);
CREATE UNIQUE INDEX patient_requests_trigger_idx ON patient_requests (alert_id, alert_trigger)
    WHERE alert_id IS NOT NULL;
CREATE UNIQUE INDEX patient_requests_silence_idx ON patient_requests (patient_id, silence_since)
    WHERE reason = 'reminder';
CREATE INDEX patient_requests_patient_idx ON patient_requests (patient_id, created_at DESC);
CREATE INDEX patient_requests_open_idx ON patient_requests (id) WHERE state IN ('pending', 'sent');
