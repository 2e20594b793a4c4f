-- A device's battery level reaches the acute team: the last level each device reported
-- (Battery Level 0x2A19, percent), as its gateway's online status carries it
-- (vv/v1/gw/{id}/status, `devices`), recorded by ingest (ingest/status.py); battery_at is
-- when the gateway received that level. Null: not known (no Battery Service, an older
-- gateway, or no status with devices yet). The API shows them per device and the lowest per
-- gateway (GET /gateways, `lowest_battery`).
ALTER TABLE devices
    ADD COLUMN battery_level smallint CHECK (battery_level BETWEEN 0 AND 100),
    ADD COLUMN battery_at    timestamptz,
    ADD CHECK ((battery_level IS NULL) = (battery_at IS NULL));
