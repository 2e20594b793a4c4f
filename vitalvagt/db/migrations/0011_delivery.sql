-- Issue 12: alerts reach the right people. Routing (the team covering and the doctor
-- responsible when the alert opened), escalation when nobody acknowledges in time, and a
-- durable outbox of outgoing webhooks filled by a trigger on every alert transition.
-- docs/operations.md, "Routing, escalation and webhooks", describes the whole.

-- Teams: who takes over outside the coverage hours, the team lead (escalation level 1) and
-- how long an alert may stay unacknowledged before it escalates.
ALTER TABLE acute_teams
    ADD COLUMN handover_team_id text REFERENCES acute_teams(id),
    ADD COLUMN lead_name        text,
    ADD COLUMN lead_phone       text,
    ADD COLUMN red_ack_deadline    interval NOT NULL DEFAULT '15 minutes'
                                   CHECK (red_ack_deadline > interval '0'),
    ADD COLUMN yellow_ack_deadline interval NOT NULL DEFAULT '2 hours'
                                   CHECK (yellow_ack_deadline > interval '0'),
    ADD CHECK (handover_team_id IS NULL OR handover_team_id <> id);

-- The out-of-hours doctor (vagtlæge): per municipality, or per region for the
-- municipalities that have none of their own.
ALTER TABLE municipalities ADD COLUMN region text;
CREATE TABLE out_of_hours_contacts (
    id               bigserial PRIMARY KEY,
    municipality_id  text REFERENCES municipalities(id),
    region           text,
    name             text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    phone            text NOT NULL CHECK (length(phone) BETWEEN 1 AND 40),
    CHECK ((municipality_id IS NULL) <> (region IS NULL))
);
CREATE UNIQUE INDEX out_of_hours_municipality_idx ON out_of_hours_contacts (municipality_id)
    WHERE municipality_id IS NOT NULL;
CREATE UNIQUE INDEX out_of_hours_region_idx ON out_of_hours_contacts (region)
    WHERE region IS NOT NULL;

-- The hospital doctor responsible while now < hospital_responsible_until (after discharge).
ALTER TABLE patients
    ADD COLUMN hospital_name  text,
    ADD COLUMN hospital_phone text;

-- On the alert: the routing as it was when it opened (alerts/routing.py writes it, within
-- a second or two), the early-warning scores at that moment, and the escalation chain.
ALTER TABLE alerts
    ADD COLUMN routing            jsonb,
    ADD COLUMN routed_team_id     text REFERENCES acute_teams(id),
    ADD COLUMN routed_at          timestamptz,
    ADD COLUMN scores             jsonb,
    ADD COLUMN escalation_level   smallint NOT NULL DEFAULT 0
                                  CHECK (escalation_level BETWEEN 0 AND 2),
    ADD COLUMN escalated_at       timestamptz,   -- when the last step was due
    ADD COLUMN escalation_resumed_at timestamptz; -- when the last snooze ended
CREATE INDEX alerts_unrouted_idx ON alerts (id) WHERE routing IS NULL AND state <> 'resolved';
CREATE INDEX alerts_escalation_idx ON alerts (opened_at)
    WHERE state = 'open' AND severity IN ('red', 'yellow');

-- A snooze pauses the escalation clock: when the alert opens again the clock counts from the
-- snooze's end (its nominal time, not the sweep's), whoever ends it.
CREATE FUNCTION vv_alert_snooze_resume() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.state = 'snoozed' AND NEW.state = 'open' THEN
        NEW.escalation_resumed_at := coalesce(OLD.snoozed_until, now());
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER alerts_snooze_resume BEFORE UPDATE OF state ON alerts
    FOR EACH ROW EXECUTE FUNCTION vv_alert_snooze_resume();

-- Outgoing webhooks, per municipality or per team.
CREATE TABLE webhook_endpoints (
    id               bigserial PRIMARY KEY,
    municipality_id  text REFERENCES municipalities(id),
    team_id          text REFERENCES acute_teams(id),
    url              text NOT NULL CHECK (url ~ '^https?://'),
    secret           text NOT NULL CHECK (length(secret) >= 16),
    active           boolean NOT NULL DEFAULT true,
    created_at       timestamptz NOT NULL DEFAULT now(),
    CHECK ((municipality_id IS NULL) <> (team_id IS NULL))
);

-- The outbox: one row per (endpoint, transition), written in the transaction of the
-- transition, so nothing is lost; delivered once per row (the idempotency key is the
-- transition's id), in order per alert; given up after the delivery job's give-up time
-- (24 hours by default) and then kept as 'failed'.
CREATE TABLE webhook_outbox (
    id               bigserial PRIMARY KEY,
    endpoint_id      bigint NOT NULL REFERENCES webhook_endpoints(id),
    transition_id    bigint NOT NULL REFERENCES alert_transitions(id),
    alert_id         bigint NOT NULL REFERENCES alerts(id),
    created_at       timestamptz NOT NULL DEFAULT now(),
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'delivered', 'failed')),
    body             text,              -- frozen at the first attempt: retries send the same bytes
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_attempt_at  timestamptz,
    last_status      integer,           -- the receiver's HTTP status, NULL when none came
    last_error       text,
    delivered_at     timestamptz,
    UNIQUE (endpoint_id, transition_id)
);
CREATE INDEX webhook_outbox_pending_idx ON webhook_outbox (endpoint_id, alert_id, transition_id)
    WHERE status = 'pending';
CREATE INDEX webhook_outbox_failed_idx ON webhook_outbox (created_at) WHERE status = 'failed';

CREATE FUNCTION vv_webhook_enqueue() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO webhook_outbox (endpoint_id, transition_id, alert_id)
    SELECT e.id, NEW.id, NEW.alert_id
    FROM alerts a JOIN patients p ON p.id = a.patient_id
    JOIN webhook_endpoints e ON e.active AND (e.team_id IN (a.team_id, a.routed_team_id)
                                              OR e.municipality_id = p.municipality_id)
    WHERE a.id = NEW.alert_id
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;
CREATE TRIGGER alert_transitions_webhooks AFTER INSERT ON alert_transitions
    FOR EACH ROW EXECUTE FUNCTION vv_webhook_enqueue();
