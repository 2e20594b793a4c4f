-- Issue 13: the clinician API's local users, their refresh tokens and failed logins; the
-- history of a patient's alert limits; consents to pass data on; and a NOTIFY per alert
-- transition for the API's live stream.

CREATE TYPE api_role AS ENUM ('nurse', 'team_lead', 'physician', 'admin');

-- Local users (the embedded default; an OpenID Connect deployment needs none). A user sees
-- the patients of their teams, and so of those teams' municipalities.
CREATE TABLE users (
    id             text PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9._-]{1,62}$'),
    display_name   text NOT NULL CHECK (length(display_name) BETWEEN 1 AND 200),
    role           api_role NOT NULL,
    team_ids       text[] NOT NULL DEFAULT '{}',
    password_hash  text NOT NULL,             -- Argon2id (pwdlib)
    active         boolean NOT NULL DEFAULT true,
    created_at     timestamptz NOT NULL DEFAULT now(),
    disabled_at    timestamptz
);

-- Refresh tokens: one row per token issued (its id, never the token). A token is used once;
-- presenting a used one again revokes its whole family (a stolen token is then worthless).
CREATE TABLE refresh_tokens (
    jti          text PRIMARY KEY,
    family       text NOT NULL,
    user_id      text NOT NULL REFERENCES users(id),
    issued_at    timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    used_at      timestamptz,
    revoked_at   timestamptz
);
CREATE INDEX refresh_tokens_family_idx ON refresh_tokens (family);

-- Failed logins, per user name and per client address, for the rate limit (shared by all API
-- processes). Rows older than a few minutes are deleted at the next failure.
CREATE TABLE login_failures (
    key  text NOT NULL,                       -- 'user:<name>' or 'addr:<address>'
    at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX login_failures_key_idx ON login_failures (key, at);

-- Every change of a patient's limits, with the physician and the reason.
CREATE TABLE alert_limit_history (
    id          bigserial PRIMARY KEY,
    patient_id  text NOT NULL REFERENCES patients(id),
    kind        text NOT NULL,
    old_limits  jsonb,                        -- NULL: the group's defaults applied before
    new_limits  jsonb NOT NULL,
    set_by      text NOT NULL,
    set_at      timestamptz NOT NULL DEFAULT now(),
    reason      text NOT NULL CHECK (length(reason) > 0)
);
CREATE INDEX alert_limit_history_patient_idx ON alert_limit_history (patient_id, id);

-- Health Act section 43-44: written consent to pass data on names the recipient and lapses
-- after a year at most.
CREATE TABLE consents (
    id            bigserial PRIMARY KEY,
    patient_id    text NOT NULL REFERENCES patients(id),
    recipient     text NOT NULL CHECK (length(recipient) BETWEEN 1 AND 200),
    given_at      date NOT NULL,
    valid_until   date NOT NULL,
    recorded_by   text NOT NULL,
    recorded_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at    timestamptz,
    CHECK (valid_until >= given_at AND valid_until <= given_at + interval '1 year')
);
CREATE INDEX consents_patient_idx ON consents (patient_id);

-- The live stream: every API process LISTENs; the payload is the transition's id and team,
-- the stream reads the rows themselves (scoped) from the table.
CREATE FUNCTION vv_notify_alert_transition() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('vv_alert_transitions', NEW.id::text);
    RETURN NULL;
END $$;
CREATE TRIGGER alert_transitions_notify AFTER INSERT ON alert_transitions
    FOR EACH ROW EXECUTE FUNCTION vv_notify_alert_transition();
