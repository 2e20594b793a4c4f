"""The simulator's exception base: every error the simulator raises on purpose derives from it."""

from __future__ import annotations

from vitalvagt.errors import VitalvagtError


class SimulatorError(VitalvagtError):
    """Base of the simulator's errors: bad parameters, a cohort that cannot be read or written."""
