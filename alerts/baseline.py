"""The patient's own baseline, with robust statistics, as the trend rules use it.

Readings are cut into days (`PatientContext.day_offset_s`). A day's value for a kind is the
mean of its reliable readings. The baseline on day d is the median of the day values over
`span` days that end `gap` days before d, with a robust spread (1.4826 x MAD or 1.2533 x
the mean absolute deviation from the median, whichever is larger; floored: a
patient whose values are very steady must still not alarm on a 1-unit change), and needs
at least `min_days` day values: a new patient has "no baseline yet".

Everything here is causal: what is computed for reading i uses readings 0..i only (earlier
days are complete before reading i, the current day is taken up to and including i), so
evaluating readings one at a time or all at once gives the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from alerts.series import KIND_CODE, PatientContext, Series, day_of
from vitalvagt.kinds import Kind

MAD_TO_SD = 1.4826
MEAN_AD_TO_SD = 1.2533  # sqrt(pi / 2)


@dataclass(frozen=True)
class Window:
    span: int = 28  # days in the baseline
    gap: int = 7  # most recent days left out of it (the change being looked for)
    min_days: int = 7  # fewer day values: no baseline yet


DEFAULT_WINDOW = Window()


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
        d0 = int(day[0])
        g = day - d0
        n_days = int(g[-1]) + 1
        sums = np.bincount(g, weights=value, minlength=n_days)
        counts = np.bincount(g, minlength=n_days)
        with np.errstate(invalid="ignore", divide="ignore"):
            grid = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
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
    """Median and robust spread of the day values in the baseline window of each at_day."""
    vals = kd.days(at_day, -w.gap - w.span, -w.gap)
    n = np.sum(~np.isnan(vals), axis=1)
    ready = n >= max(w.min_days, 1)
    med = np.full(len(at_day), np.nan)
    sd = np.full(len(at_day), np.nan)
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
    return Baseline(med, sd, n)


def _row_median(v: np.ndarray) -> np.ndarray:
    """Median of each row, ignoring NaN (every row has at least one value); np.sort puts NaN
    last, so the middle of the first n sorted values is the median (np.nanmedian, faster)."""
    a = np.sort(v, axis=1)
    n = np.sum(~np.isnan(a), axis=1)
    rows = np.arange(len(a))
    return (a[rows, (n - 1) // 2] + a[rows, n // 2]) / 2


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
