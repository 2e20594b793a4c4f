-- Hourly and daily roll-ups per patient and kind, kept current by ingest's jobs. This
-- TimescaleDB build has no continuous aggregates, so ingest marks the buckets a batch
-- touched (rollup_dirty, in the same transaction) and a job recomputes exactly those.

CREATE TABLE observation_rollups (
    resolution  text NOT NULL CHECK (resolution IN ('hour', 'day')),
    patient_id  text NOT NULL,
    kind        text NOT NULL,
    bucket      timestamptz NOT NULL,     -- start of the hour / UTC day
    n           integer NOT NULL,
    min_value   double precision NOT NULL,
    max_value   double precision NOT NULL,
    sum_value   double precision NOT NULL,
    mean_value  double precision GENERATED ALWAYS AS (sum_value / n) STORED,
    last_value  double precision NOT NULL,
    last_at     timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (resolution, patient_id, kind, bucket)
);

CREATE TABLE rollup_dirty (
    patient_id  text NOT NULL,
    kind        text NOT NULL,
    hour        timestamptz NOT NULL,
    PRIMARY KEY (patient_id, kind, hour)
);
