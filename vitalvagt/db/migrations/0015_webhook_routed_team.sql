-- The team an alert is routed to hears of its opening too.
--
-- vv_webhook_enqueue (0011) queues each transition for the endpoints of the alert's team, of
-- the team it is routed to (alerts.routed_team_id) and of its municipality, at the moment of
-- the transition. An alert's "opened" transition comes before the routing job has named the
-- team answering now (alerts/routing.py), so the night team's endpoint got the
-- acknowledgement of an alert it was never told had opened. When the routing names a team,
-- that team's endpoints get the alert's transitions so far; delivery sends them in their
-- order (alerts/webhooks.py: per endpoint and alert, none while an earlier one is pending).
CREATE FUNCTION vv_webhook_enqueue_routed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO webhook_outbox (endpoint_id, transition_id, alert_id)
    SELECT e.id, t.id, t.alert_id
    FROM alert_transitions t
    JOIN webhook_endpoints e ON e.active AND e.team_id = NEW.routed_team_id
    WHERE t.alert_id = NEW.id
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;
CREATE TRIGGER alerts_routed_webhooks AFTER UPDATE OF routed_team_id ON alerts
    FOR EACH ROW
    WHEN (NEW.routed_team_id IS NOT NULL AND NEW.routed_team_id IS DISTINCT FROM OLD.routed_team_id)
    EXECUTE FUNCTION vv_webhook_enqueue_routed();
