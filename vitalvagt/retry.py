"""Retry policy (design rule 2): one small object, and the named presets every component uses.

``Backoff`` counts one failing streak: initial delay, factor, cap and jitter. The presets
below say, once, how patiently each kind of resource is retried; a component takes a fresh
``Backoff`` from its preset (``DATABASE.backoff()``) instead of writing numbers of its own.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    initial_s: float = 1.0
    factor: float = 2.0
    max_s: float = 60.0
    jitter: float = 0.2  # +- fraction, so that a fleet does not retry in lock-step
    _attempt: int = field(default=0, init=False)

    def next_delay(self) -> float:
        base = min(self.max_s, self.initial_s * self.factor**self._attempt)
        self._attempt += 1
        return max(0.0, base * (1 + random.uniform(-self.jitter, self.jitter)))

    def reset(self) -> None:
        self._attempt = 0

    @property
    def attempts(self) -> int:
        return self._attempt


@dataclass(frozen=True)
class RetryPolicy:
    """How a kind of resource is retried: the first wait and the longest."""

    name: str
    initial_s: float
    max_s: float

    def backoff(self) -> Backoff:
        return Backoff(initial_s=self.initial_s, max_s=self.max_s)


# PostgreSQL gone (restart, fail-over): come back quickly, never wait more than 30 s.
DATABASE = RetryPolicy("database", initial_s=0.5, max_s=30.0)
# The broker's connection lost: paho's own reconnect delays (reconnect_delay_set).
BROKER_RECONNECT = RetryPolicy("broker reconnect", initial_s=1.0, max_s=30.0)
# The broker refused a message or the login (ACL, quota): it will not change in seconds.
BROKER_REFUSAL = RetryPolicy("broker refusal", initial_s=1.0, max_s=300.0)
# A BLE device out of range or failing to connect: a patient's device comes and goes.
BLE_DEVICE = RetryPolicy("BLE device", initial_s=1.0, max_s=60.0)
WEBHOOK = RetryPolicy("webhook", initial_s=5.0, max_s=600.0)  # a webhook receiver down or failing
