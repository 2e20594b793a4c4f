-- Issue 9: gateway ids never take the service users' name space (vv-*: vv-ingest, vv-alerts,
-- vv-api, vv-sim, vv-probe). A gateway's id is its MQTT user and, on the broker's gateway
-- listener, its client id: one named like a service would share its session and name.
-- Gateways provisioned under such an id before this check are switched off (the broker no
-- longer lists them; re-provision the tablet under a gw-... id). NOT VALID keeps their rows
-- (devices and audit refer to them) while every new or changed row is checked.
UPDATE gateways SET active = false WHERE id LIKE 'vv-%';
ALTER TABLE gateways
    ADD CONSTRAINT gateways_id_not_service_user CHECK (id NOT LIKE 'vv-%') NOT VALID;
