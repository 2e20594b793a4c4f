"""The alert engine's exceptions: one base, and subclasses that name the failure."""

from __future__ import annotations

from vitalvagt.errors import VitalvagtError


class AlertsError(VitalvagtError):
    """Base of every error the alert engine raises on purpose."""


class AlertNotFound(AlertsError):
    """No such alert, or it is not in a state that allows the change asked for."""

    def __init__(self, alert_id: int, change: str) -> None:
        super().__init__(
            f"alert {alert_id} does not exist or is not in a state that allows {change}"
        )
        self.alert_id = alert_id
        self.change = change
