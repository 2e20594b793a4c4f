-- Issue 9: the device's model and serial per reading (they were the last message's for every
-- reading of a batch), and bounded dead letters.

ALTER TABLE observations ADD COLUMN device_model text, ADD COLUMN device_serial text;

-- A payload above the wire format's 256 KiB can never be replayed: it is kept as its first
-- bytes, its length and its SHA-256 (payload_truncated), not whole.
ALTER TABLE dead_letters
    ADD COLUMN payload_size integer,
    ADD COLUMN payload_sha256 bytea,
    ADD COLUMN payload_truncated boolean NOT NULL DEFAULT false;
UPDATE dead_letters SET payload_size = length(payload), payload_sha256 = sha256(payload);
ALTER TABLE dead_letters ALTER COLUMN payload_size SET NOT NULL;
CREATE INDEX dead_letters_gateway_idx ON dead_letters (gateway_id);

-- Dead letters of a gateway over its cap (docs/operations.md): counted here, not kept.
CREATE TABLE dead_letter_overflow (
    gateway_id   text NOT NULL DEFAULT '',     -- '' when the topic did not parse
    reason_code  text NOT NULL,
    day          date NOT NULL,
    messages     bigint NOT NULL,
    bytes        bigint NOT NULL,
    first_at     timestamptz NOT NULL,
    last_at      timestamptz NOT NULL,
    PRIMARY KEY (gateway_id, reason_code, day)
);
