"""The patient's personal baseline band: its days, its window, its robust statistics.

One definition for both sides: the alert engine's trend and weight rules (alerts/baseline.py
builds their vectorised day grids on these functions) and the API, which shows a nurse the
band the rules compare against (``GET /patients/{id}/baseline``).

- **Days.** Readings are cut into days at a fixed offset east of UTC (``DAY_OFFSET_S``:
  Copenhagen's standard time all year, so day boundaries do not move twice a year and
  midnight falls between the morning and evening sessions). A day's value for a kind is the
  mean of that day's reliable readings (vitalvagt.quality.UNRELIABLE); a weight that is
  implausible against the patient's previous weights (``implausible_weights``: another
  person on the scale) is left out too.
- **Window.** The baseline on day d is made of the day values of ``Window.span`` days that
  end ``Window.gap`` days before d (the recent days, where a change would show, are left
  out), and needs at least ``Window.min_days`` of them: a new patient has "no baseline yet".
- **Statistics.** The median of those day values, and a robust spread: the larger of
  1.4826 x MAD and 1.2533 x the mean absolute deviation from the median (each scaled to a
  normal standard deviation), floored per kind (``SPREAD_FLOORS``).

Pure functions over numpy arrays (no I/O, time passed in as epoch seconds).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from vitalvagt.kinds import Kind

DAY_S = 86_400
DAY_OFFSET_S = 3_600  # days start at 00:00 UTC+1
MAD_TO_SD = 1.4826
MEAN_AD_TO_SD = 1.2533  # sqrt(pi / 2)
# Least spreads (the smallest change that counts as one standard deviation): pulse oximeters
# are accurate to about +-2 points, a pulse varies by about 5 /min from day to day at rest,
# a body weight by about 0.4 kg (food, drink, clothes, time of weighing), a thermometer
# reading by about 0.2 C. No rule uses a blood-pressure baseline, so it has no floor.
SPREAD_FLOORS: dict[Kind, float] = {
    Kind.SPO2: 1.5,
    Kind.PULSE: 5.0,
    Kind.WEIGHT: 0.4,
    Kind.TEMPERATURE: 0.2,
}
# Weight plausibility: a weight more than MAX_JUMP_KG from the median of the PRIOR previous
# reliable weights (of at most PRIOR_MAX_DAYS before it; at least 3 of them) is not a body
# that changed but another person on the scale or a wrong reading.
PRIOR = 7
PRIOR_MAX_DAYS = 30
MAX_JUMP_KG = 6.0
# The band shown around the median: the trend rules have no single band (their CUSUM
# allowance k is 0.75 for trend:copd and 1.0 for the others, the weight rules ask for 2.5
# spreads), so it is one robust spread either side.
BAND_SPREADS = 1.0


@dataclass(frozen=True)
class Window:
    span: int = 28  # days in the baseline
    gap: int = 7  # most recent days left out of it (the change being looked for)
    min_days: int = 7  # fewer day values: no baseline yet

    @property
    def offsets(self) -> tuple[int, int]:
        """The window's days relative to day d: d + lo .. d + hi - 1."""
        return -self.gap - self.span, -self.gap


DEFAULT_WINDOW = Window()


def day_of(t: np.ndarray | int, offset_s: int = DAY_OFFSET_S) -> np.ndarray:
    """Day number (days since the epoch in the fixed local offset) of epoch seconds ``t``."""
    return (np.asarray(t, dtype=np.int64) + offset_s) // DAY_S


def day_grid(day: np.ndarray, value: np.ndarray) -> tuple[int, np.ndarray]:
    """The mean value per day over days d0 .. the last day (NaN where there is no reading),
    and d0; ``day`` is ascending and not empty."""
    d0 = int(day[0])
    g = day - d0
    n_days = int(g[-1]) + 1
    sums = np.bincount(g, weights=value, minlength=n_days)
    counts = np.bincount(g, minlength=n_days)
    with np.errstate(invalid="ignore", divide="ignore"):
        grid = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return d0, grid


def robust_band(
    vals: np.ndarray, min_days: int, floor: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Median, robust spread (floored) and number of day values of each row of ``vals`` (a
    row of day values per query, NaN for days without a value); NaN median and spread where
    a row has fewer than ``min_days`` values."""
    n = np.sum(~np.isnan(vals), axis=1)
    ready = n >= max(min_days, 1)
    med = np.full(len(vals), np.nan)
    sd = np.full(len(vals), np.nan)
    if np.any(ready):
        v = vals[ready]
        m = _row_median(v)
        dev = np.abs(v - m[:, None])
        mad = _row_median(dev)
        # Readings in whole units make the MAD jump in half-unit steps (0.5, 1, 1.5 ...);
        # the mean absolute deviation from the median does not, and is still robust to a
        # few odd days. The larger of the two, each scaled to a normal sd, is the spread.
        mean_ad = np.nanmean(dev, axis=1)
        med[ready] = m
        sd[ready] = np.maximum(np.maximum(MAD_TO_SD * mad, MEAN_AD_TO_SD * mean_ad), floor)
    return med, sd, n


def _row_median(v: np.ndarray) -> np.ndarray:
    """Median of each row, ignoring NaN (every row has at least one value); np.sort puts NaN
    last, so the middle of the first n sorted values is the median (np.nanmedian, faster)."""
    a = np.sort(v, axis=1)
    n = np.sum(~np.isnan(a), axis=1)
    rows = np.arange(len(a))
    return (a[rows, (n - 1) // 2] + a[rows, n // 2]) / 2


def implausible_weights(t: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Mask over a patient's reliable weights (epoch seconds ``t`` ascending, kg ``v``):
    those too far from the median of the weights before them (causal: weight i is judged
    by weights before i only)."""
    out = np.zeros(len(v), dtype=bool)
    if len(v) <= 3:
        return out
    padded = np.concatenate((np.full(PRIOR, np.nan), v))
    win = sliding_window_view(padded, PRIOR)[: len(v)].copy()  # the PRIOR weights before
    tpad = np.concatenate((np.full(PRIOR, np.iinfo(np.int64).min // 2), t))
    old = sliding_window_view(tpad, PRIOR)[: len(v)] < (t - PRIOR_MAX_DAYS * DAY_S)[:, None]
    win[old] = np.nan  # only weights of the last PRIOR_MAX_DAYS days count
    n = np.sum(~np.isnan(win), axis=1)
    ok = n >= 3
    med = np.full(len(v), np.nan)
    med[ok] = np.nanmedian(win[ok], axis=1)
    return ok & (np.abs(v - med) > MAX_JUMP_KG)


@dataclass(frozen=True, slots=True)
class Band:
    """One kind's baseline at an instant: the window [since_s, until_s) in epoch seconds."""

    median: float
    spread: float
    days: int  # day values in the window
    since_s: int
    until_s: int

    @property
    def low(self) -> float:
        return self.median - BAND_SPREADS * self.spread

    @property
    def high(self) -> float:
        return self.median + BAND_SPREADS * self.spread


def reading_window(at_s: int, window: Window = DEFAULT_WINDOW) -> tuple[int, int]:
    """[since, until) in epoch seconds of the readings the baseline at ``at_s`` is made of
    (a weight's plausibility also looks ``PRIOR_MAX_DAYS`` further back)."""
    lo, hi = window.offsets
    at_day = int(day_of(at_s))
    return (at_day + lo) * DAY_S - DAY_OFFSET_S, (at_day + hi) * DAY_S - DAY_OFFSET_S


def personal_band(
    kind: Kind, t: np.ndarray, value: np.ndarray, at_s: int, window: Window = DEFAULT_WINDOW
) -> Band | None:
    """The baseline of ``kind`` at the instant ``at_s`` from the kind's reliable readings
    (epoch seconds ``t`` ascending; weights from ``PRIOR_MAX_DAYS`` before the window on, so
    that their plausibility is judged as the rules judge it). None: no baseline yet."""
    t, value = np.asarray(t, dtype=np.int64), np.asarray(value, dtype=np.float64)
    if kind is Kind.WEIGHT:
        keep = ~implausible_weights(t, value)
        t, value = t[keep], value[keep]
    lo, hi = window.offsets
    first = int(day_of(at_s)) + lo
    vals = np.full(hi - lo, np.nan)
    day = day_of(t)
    inside = (day >= first) & (day < first + len(vals))
    if np.any(inside):
        d0, grid = day_grid(day[inside], value[inside])
        vals[d0 - first : d0 - first + len(grid)] = grid
    med, sd, n = robust_band(vals[None, :], window.min_days, SPREAD_FLOORS.get(kind, 0.0))
    if np.isnan(med[0]):
        return None
    since_s, until_s = reading_window(at_s, window)
    return Band(float(med[0]), float(sd[0]), int(n[0]), since_s, until_s)
