"""The one retry policy object: initial delay, factor, cap and jitter (design rule 2)."""

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
