"""What the rules see: one patient's readings as numpy arrays, and what is known of the patient.

The rules are pure functions of a `Series` (time-ordered readings) and a `PatientContext`.
The live engine builds a `Series` from the database (the patient's recent history plus the
new readings), the offline evaluation from a cohort or CSV export; both call the same rules
(alerts/ruleset.py `evaluate_new`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from alerts.rules import Limits
from vitalvagt.baseline import DAY_OFFSET_S

# The day cut is the core's (vitalvagt/baseline.py: the API's baseline cuts days the same way);
# the rules import it from here.
from vitalvagt.baseline import DAY_S as DAY_S
from vitalvagt.baseline import day_of as day_of
from vitalvagt.kinds import Kind

# Kinds as small integers in `Series.kind` (the order of the Kind enum).
KINDS: tuple[Kind, ...] = tuple(Kind)
KIND_CODE: dict[Kind, int] = {k: i for i, k in enumerate(KINDS)}
HOUR_S = 3_600
GROUPS = ("copd", "heart_failure", "both")


def code(kind: Kind | str) -> int:
    return KIND_CODE[Kind(kind)]


@dataclass(frozen=True)
class PatientContext:
    """What the rules know of the patient besides the readings."""

    group: str  # "copd" | "heart_failure" | "both"
    spo2_scale2: bool = False  # NEWS2 SpO2 scale 2 (hypercapnic respiratory failure)
    on_oxygen: bool = False
    # The patient's own four limits per kind; kinds not given take the group's standard set.
    limits: dict[Kind, Limits] | None = None
    # Local time offset used to cut readings into days (seconds east of UTC). One fixed
    # offset keeps day boundaries stable; Copenhagen's +1 h puts midnight between sessions.
    day_offset_s: int = DAY_OFFSET_S

    def __post_init__(self) -> None:
        if self.group not in GROUPS:
            raise ValueError(f"patient group {self.group!r}: expected one of {', '.join(GROUPS)}")

    @property
    def has_copd(self) -> bool:
        return self.group in ("copd", "both")

    @property
    def has_heart_failure(self) -> bool:
        return self.group in ("heart_failure", "both")


@dataclass(frozen=True)
class Series:
    """One patient's readings in time order (ties keep their given order)."""

    t: np.ndarray  # int64 seconds since the epoch, UTC (measured_at)
    kind: np.ndarray  # int8 codes (KIND_CODE)
    value: np.ndarray  # float64
    reliable: np.ndarray  # bool: False when a quality flag marks the reading unreliable
    _cache: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        n = len(self.t)
        if not (len(self.kind) == len(self.value) == len(self.reliable) == n):
            raise ValueError("Series arrays must have equal lengths")
        if n > 1 and np.any(np.diff(self.t) < 0):
            raise ValueError("Series must be in time order (use Series.build to sort)")

    def __len__(self) -> int:
        return len(self.t)

    @classmethod
    def build(cls, t: Iterable[int], kind: Iterable[Kind | str | int], value: Iterable[float],
              reliable: Iterable[bool] | None = None) -> Series:  # fmt: skip
        """From plain sequences, sorted by time (stable: equal times keep their order)."""
        t_arr = np.asarray(list(t) if not isinstance(t, np.ndarray) else t, dtype=np.int64)
        kinds = kind if isinstance(kind, np.ndarray) else list(kind)
        k_arr = np.asarray([k if isinstance(k, int | np.integer) else code(k) for k in kinds],
                           dtype=np.int8)  # fmt: skip
        v_arr = np.asarray(value if isinstance(value, np.ndarray) else list(value), np.float64)
        if reliable is None:
            r_arr = np.ones(len(t_arr), dtype=bool)
        else:
            r_arr = np.asarray(list(reliable) if not isinstance(reliable, np.ndarray)
                               else reliable, dtype=bool)  # fmt: skip
        order = np.argsort(t_arr, kind="stable")
        return cls(t_arr[order], k_arr[order], v_arr[order], r_arr[order])

    def head(self, n: int) -> Series:
        """The first n readings: what was known when reading n-1 arrived."""
        if n >= len(self):
            return self
        return Series(self.t[:n], self.kind[:n], self.value[:n], self.reliable[:n])

    def window(self, start: int, stop: int) -> Series:
        """Readings start..stop-1 (indices shift by start)."""
        if start == 0 and stop >= len(self):
            return self
        return Series(self.t[start:stop], self.kind[start:stop], self.value[start:stop],
                      self.reliable[start:stop])  # fmt: skip

    def cached(self, key: object, make):
        """Derived arrays computed once per Series object (rules share them)."""
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def of_kind(self, kind: Kind) -> np.ndarray:
        """Indices of the readings of this kind."""
        c = KIND_CODE[kind]
        return self.cached(("idx", c), lambda: np.flatnonzero(self.kind == c))


def as_indices(series: Series, new: slice | np.ndarray | Sequence[int]) -> np.ndarray:
    """`new` (a slice, boolean mask or index array) as sorted unique int64 indices."""
    if isinstance(new, slice):
        return np.arange(len(series), dtype=np.int64)[new]
    arr = np.asarray(new)
    if arr.dtype == bool:
        return np.flatnonzero(arr)
    return np.unique(arr.astype(np.int64))
