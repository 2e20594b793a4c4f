"""Trend rules: a sustained change against the patient's own baseline (a control chart).

For each signal (a kind and the bad direction) a day's deviation is
z = direction x (day value - baseline median) / robust spread, capped at +-`cap` so that one
odd day cannot carry the rule alone. Several signals combine into one z per day as
sum(w z) / sqrt(sum w^2) over the signals present that day (independent evidence adds up).
The rule keeps a one-sided CUSUM of z - k over the last `days` days and today
(alerts/baseline.py `suffix_cusum`) and fires when it reaches h (red at `red_h`).

Reference section 5 and 7: single SpO2 readings against fixed thresholds give many false
alarms; a trend with its residual spread worked better (COPD), and personalised control
charts / moving averages beat the rule of thumb for weight (heart failure). Rules:

- `trend:copd`: SpO2 falling together with the pulse rising (COPD exacerbation);
- `trend:spo2`, `trend:pulse`: either alone, with a higher threshold;
- `weight:trend` (alerts/weight.py): weight rising, with SpO2 and pulse as weaker support.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from alerts.baseline import Baseline, baseline, kind_days, suffix_cusum
from alerts.finding import Category, Finding, fmt, label
from alerts.rules import LOCAL, Severity
from alerts.series import KIND_CODE, KINDS, PatientContext, Series, day_of
from vitalvagt.baseline import DEFAULT_WINDOW, Window
from vitalvagt.kinds import Kind


@dataclass(frozen=True)
class Signal:
    kind: Kind
    direction: int  # +1: a rise is the bad sign, -1: a fall
    weight: float = 1.0
    floor: float = 1.0  # least robust spread, in the kind's unit
    cap: float = 3.0


@dataclass(frozen=True)
class TrendRule:
    name: str
    signals: tuple[Signal, ...]
    groups: tuple[str, ...]  # patient groups the rule applies to
    k: float = 0.5
    h: float = 4.0
    red_h: float = 8.0
    days: int = 6  # previous days in the CUSUM (at most window.gap: never the baseline's days)
    window: Window = DEFAULT_WINDOW
    version: int = 1
    keep: object = None  # callable(series, ctx) -> mask of readings to use (or None)
    # Each signal's own mean z over today and the previous `agree_days` days must be at least
    # this (None: no such condition): "the two together" means both move the bad way.
    agree: float | None = None
    agree_days: int = 2
    # A new patient: while the baseline window has too few days, this shorter-gap window
    # (None: none) gives a provisional baseline, so that trends start after days, not weeks.
    fallback: Window | None = None

    def applies(self, ctx: PatientContext) -> bool:
        return ctx.group in self.groups

    def _triggers(self, s: Series, idx: np.ndarray) -> np.ndarray:
        kinds = np.array([KIND_CODE[g.kind] for g in self.signals])
        return idx[np.isin(s.kind[idx], kinds) & s.reliable[idx]]

    def compute(self, s: Series, at: np.ndarray, ctx: PatientContext) -> dict:
        """What the rule computes at the readings `at` (arrays, one entry per reading)."""
        at_day = day_of(s.t[at], ctx.day_offset_s)
        keep = self.keep(s, ctx) if self.keep is not None else None
        num_today = np.zeros(len(at))
        den_today = np.zeros(len(at))
        num_hist = np.zeros((len(at), self.days))
        den_hist = np.zeros((len(at), self.days))
        parts: dict[str, tuple] = {}
        ready = np.zeros(len(at), dtype=bool)
        agree = np.ones(len(at), dtype=bool)
        for j, g in enumerate(self.signals):
            kd = kind_days(s, g.kind, ctx, keep if g.kind is Kind.WEIGHT else None)
            base = baseline(kd, at_day, self.window, g.floor)
            if self.fallback is not None and not np.all(base.ready):
                early = baseline(kd, at_day, self.fallback, g.floor)
                use = ~base.ready & early.ready
                base = Baseline(np.where(use, early.median, base.median),
                                np.where(use, early.sd, base.sd), np.where(use, early.n, base.n))
            if j == 0:
                ready = base.ready
            today = kd.partial(at, at_day)
            hist = kd.days(at_day, -self.days, 0)
            zt = np.clip(g.direction * (today - base.median) / base.sd, -g.cap, g.cap)
            zh = np.clip(g.direction * (hist - base.median[:, None]) / base.sd[:, None],
                         -g.cap, g.cap)  # fmt: skip
            for z, num, den in ((zt, num_today, den_today), (zh, num_hist, den_hist)):
                ok = ~np.isnan(z)
                num += np.where(ok, g.weight * z, 0.0)
                den += np.where(ok, g.weight**2, 0.0)
            parts[g.kind.value] = (today, base.median, base.sd, base.n)
            if self.agree is not None:
                recent = np.concatenate((zh[:, self.days - self.agree_days:], zt[:, None]), 1)
                n_ok = np.sum(~np.isnan(recent), axis=1)
                mean = np.where(n_ok > 0, np.nansum(recent, axis=1) / np.maximum(n_ok, 1), -9)
                agree &= mean >= self.agree
        with np.errstate(invalid="ignore", divide="ignore"):
            z_today = np.where(den_today > 0, num_today / np.sqrt(den_today), np.nan)
            z_hist = np.where(den_hist > 0, num_hist / np.sqrt(den_hist), np.nan)
        score = suffix_cusum(z_hist, z_today, self.k)
        score = np.where(agree, score, 0.0)
        return {"ready": ready, "score": score, "z_today": z_today, "parts": parts}

    def evaluate(self, s: Series, idx: np.ndarray, ctx: PatientContext) -> list[Finding]:
        if not self.applies(ctx):
            return []
        at = self._triggers(s, idx)
        if len(at) == 0:
            return []
        c = self.compute(s, at, ctx)
        fire = c["ready"] & (c["score"] >= self.h - 1e-9)  # 81.2 - 80 is 1.19999...
        return [self._finding(s, int(at[j]), j, c) for j in np.flatnonzero(fire)]

    def explain(self, s: Series, i: int, ctx: PatientContext) -> dict:
        """The details for one reading, also when the rule does not fire."""
        if not self.applies(ctx):
            return {"rule": self.name, "status": f"not used for group {ctx.group}"}
        c = self.compute(s, np.array([i]), ctx)
        if not c["ready"][0]:
            return {"rule": self.name, "status": "no baseline yet",
                    "baseline_days": int(c["parts"][self.signals[0].kind.value][3][0]),
                    "needs_days": self.window.min_days}  # fmt: skip
        return {"rule": self.name, "status": "ok", **self._details(0, c)}

    def _details(self, j: int, c: dict) -> dict:
        out: dict = {"score": round(float(c["score"][j]), 3), "h": self.h, "k": self.k}
        for kind, (today, med, sd, n) in c["parts"].items():
            out[kind] = {"today": _num(today[j]), "baseline_median": _num(med[j]),
                         "baseline_sd": _num(sd[j]), "baseline_days": int(n[j])}  # fmt: skip
        return out

    def _finding(self, s: Series, i: int, j: int, c: dict) -> Finding:
        score = float(c["score"][j])
        severity = Severity.RED if score >= self.red_h - 1e-9 else Severity.YELLOW
        details = self._details(j, c)
        words = []
        for g in self.signals:
            d = details[g.kind.value]
            if d["today"] is None or d["baseline_median"] is None:
                continue
            change = d["today"] - d["baseline_median"]
            if g.direction * change <= 0:
                continue
            words.append(f"{label(g.kind).lower()} {fmt(g.kind, round(d['today'], 2))} against "
                         f"the usual {fmt(g.kind, round(d['baseline_median'], 2))}")
        when = datetime.fromtimestamp(int(s.t[i]), UTC).astimezone(LOCAL).strftime("%d-%m %H:%M")
        what = "; ".join(words) if words else "a sustained change from the usual values"
        todo = ("Call the patient now and assess; contact the responsible doctor."
                if severity is Severity.RED else
                "Follow up today: call the patient, ask about symptoms and for a new measurement.")
        kind = KINDS[int(s.kind[i])]
        return Finding(
            rule=self.name, version=self.version, severity=severity,
            category=Category.CLINICAL, at_index=i, value=float(s.value[i]), kind=kind,
            message=f"Change over several days ({when}): {what}. {todo}", details=details,
        )  # fmt: skip


def _num(x: float) -> float | None:
    return None if np.isnan(x) else round(float(x), 3)
