"""The patient's own baseline, with robust statistics, as the trend rules use it.

Readings are cut into days (`PatientContext.day_offset_s`). A day's value for a kind is the
mean of its reliable readings. The baseline on day d is the median of the day values over
`span` days that end `gap` days before d, with a robust spread (1.4826 x MAD or 1.2533 x
the mean absolute deviation from the median, whichever is larger; floored: a
patient whose values are very steady must still not alarm on a 1-unit change), and needs
at least `min_days` day values: a new patient has "no baseline yet". The definition (the
window, the day grid, the statistics) is the core's, vitalvagt/baseline.py, which the API
shows too; this module evaluates it for many readings at once.

Everything here is causal: what is computed for reading i uses readings 0..i only (earlier
days are complete before reading i, the current day is taken up to and including i), so
evaluating readings one at a time or all at once gives the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from alerts.series import KIND_CODE, PatientContext, Series, day_of
from vitalvagt.baseline import Window, day_grid, robust_band
from vitalvagt.kinds import Kind


@dataclass(frozen=True)
class KindDays:
    """One kind's usable readings of a Series, and their day values."""

    sel: np.ndarray  # indices into the Series
    day: np.ndarray  # day number per selected reading
    value: np.ndarray
    d0: int  # first day of the grid
    grid: np.ndarray  # mean per day d0.. (NaN where no reading); complete days only used
    first: np.ndarray  # position in sel of the first reading of the same day

    def partial(self, at: np.ndarray, at_day: np.ndarray) -> np.ndarray:
        """Mean of the readings of this kind on at_day with index <= at (NaN if none)."""
        out = np.full(len(at), np.nan)
        if len(self.sel) == 0:
            return out
        p = np.searchsorted(self.sel, at, side="right") - 1
        ok = p >= 0
        pc = np.where(ok, p, 0)
        ok &= self.day[pc] == at_day
        cs = np.concatenate(([0.0], np.cumsum(self.value)))
        f = self.first[pc]
        n = pc - f + 1
        out[ok] = ((cs[pc + 1] - cs[f]) / n)[ok]
        return out

    def days(self, at_day: np.ndarray, lo: int, hi: int) -> np.ndarray:
        """Day values for days at_day+lo .. at_day+hi-1 (a row per query), NaN outside."""
        offs = np.arange(lo, hi)
        g = at_day[:, None] - self.d0 + offs[None, :]
        ok = (g >= 0) & (g < len(self.grid))
        out = np.full(g.shape, np.nan)
        out[ok] = self.grid[g[ok]]
        return out


def kind_days(s: Series, kind: Kind, ctx: PatientContext,
              keep: np.ndarray | None = None) -> KindDays:  # fmt: skip
    """Reliable readings of the kind (and `keep`, a mask over the Series), with day values."""
    def make() -> KindDays:
        mask = (s.kind == KIND_CODE[kind]) & s.reliable
        if keep is not None:
            mask &= keep
        sel = np.flatnonzero(mask)
        day = day_of(s.t[sel], ctx.day_offset_s)
        value = s.value[sel]
        if len(sel) == 0:
            return KindDays(sel, day, value, 0, np.zeros(0), np.zeros(0, dtype=np.int64))
        d0, grid = day_grid(day, value)
        starts = np.flatnonzero(np.concatenate(([True], day[1:] != day[:-1])))
        first = np.repeat(starts, np.diff(np.concatenate((starts, [len(sel)]))))
        return KindDays(sel, day, value, d0, grid, first)

    return s.cached(("days", kind, ctx.day_offset_s, id(keep) if keep is not None else None),
                    make)  # fmt: skip


@dataclass(frozen=True)
class Baseline:
    median: np.ndarray
    sd: np.ndarray  # robust spread, floored
    n: np.ndarray  # day values in the window

    @property
    def ready(self) -> np.ndarray:
        return ~np.isnan(self.median)


def baseline(kd: KindDays, at_day: np.ndarray, w: Window, floor: float) -> Baseline:
    """Median and robust spread of the day values in the baseline window of each at_day
    (vitalvagt/baseline.py `robust_band`)."""
    return Baseline(*robust_band(kd.days(at_day, *w.offsets), w.min_days, floor))


def suffix_cusum(hist: np.ndarray, today: np.ndarray, k: float) -> np.ndarray:
    """One-sided CUSUM over the last days and today, restarted at its best day.

    `hist` holds standardised deviations of the previous days (a row per query, oldest
    first, NaN for days without readings, which add nothing), `today` today's. The result
    is max(0, max over j of sum_{days j..today} (z - k)): a windowed CUSUM, so it depends on
    a bounded history only (what the live engine loads) and forgets old excursions.
    """
    c = np.where(np.isnan(hist), 0.0, hist - k)
    suffix = np.cumsum(c[:, ::-1], axis=1)  # sums of the last 1, 2, ... days
    best = np.maximum(0.0, np.max(suffix, axis=1, initial=0.0))
    return np.maximum(0.0, best + np.where(np.isnan(today), 0.0, today - k))
