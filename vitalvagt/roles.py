"""The roles of the hub's users: what each may do is the API's rule (docs/api.md); who is
next in an escalation is the alert engine's (a team lead, then the escalation team)."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    NURSE = "nurse"  # acknowledges, snoozes and resolves the team's alerts
    TEAM_LEAD = "team_lead"  # a nurse who leads the team: the first step of an escalation
    PHYSICIAN = "physician"  # also changes a patient's thresholds
    ADMIN = "admin"  # provisions gateways, reads dead letters and the audit log
