-- Issue 11: the missed-measurement sweep over 100,000 patients in well under a second.
--
-- patients.last_measured_at: the latest measured_at of the patient's stored readings, kept
-- by ingest in the transaction that stores them (ingest/store.py, never moved backwards by a
-- late reading). The sweep (alerts/engine.py check_missed) reads it instead of asking the
-- hypertable for each patient's latest reading (an index probe per patient and chunk: tens
-- of seconds at 100,000 patients with 30 days of readings); the index gives it only the
-- silent patients.
ALTER TABLE patients ADD COLUMN last_measured_at timestamptz;
UPDATE patients p SET last_measured_at = o.last
FROM (SELECT patient_id, max(measured_at) AS last FROM observations GROUP BY patient_id) o
WHERE o.patient_id = p.id;
CREATE INDEX patients_last_measured_idx ON patients (last_measured_at) WHERE active;
