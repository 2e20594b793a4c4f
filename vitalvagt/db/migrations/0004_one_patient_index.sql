-- One patient index on observations instead of two. Every query on the hypertable names the
-- patient and nearly all a time window, so (patient_id, measured_at DESC) serves them all,
-- with kind as a filter inside the window (a patient's readings of all kinds in a window are
-- at most a few times those of one kind). The second index cost every insert: COPY into the
-- hypertable ran about 27 % faster without it (docs/architecture.md, Database).
DROP INDEX IF EXISTS observations_patient_kind_time_idx;
