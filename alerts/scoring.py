"""Scoring replayed alerts against labelled events (issue 11, point 4).

- An event is detected when a clinical alert for that patient fired within
  [evident - 7 days, evident - 24 hours], and not before onset - 1 day: it opened there, or
  it was active and its rule fired again there (the nurse has an active alert that is
  being updated). Its lead time is
  evident minus the first finding of such an alert at or after onset - 1 day. The strict
  count takes only alerts that OPENED in the window (lead: evident minus that opening);
  both are reported.
- A clinical alert is false when it opened outside [onset - 1 day, evident + 1 day] of every
  clinical event of that patient (artefacts and benign look-alikes such as a passing fever
  or a slow weight drift, evaluate_input.BENIGN_TYPES, are not clinical events).
- Patient-months: per patient, first to last reading plus one day, over 30.4375 days.
- Missed-measurement notices (blue), counted apart: one per run of days without any
  reading (the day's session missed, grace to the end of the day; the notice clears at the
  next reading), within the patient's monitored span, paused while admitted.
- Quality notices, counted apart: quality alerts after the same deduplication.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from alerts.evaluate_input import CLINICAL_TYPES, Event
from alerts.finding import Category
from alerts.replay import Alert
from alerts.series import DAY_S, HOUR_S, Series, day_of

MONTH_DAYS = 30.4375
WINDOW_EARLY_S = 7 * DAY_S
WINDOW_LATE_S = 24 * HOUR_S
FALSE_MARGIN_S = DAY_S


@dataclass
class EventScore:
    events: int = 0
    detected: int = 0
    leads_h: list[float] = field(default_factory=list)
    strict: int = 0  # detected by an alert that opened in the window
    strict_leads_h: list[float] = field(default_factory=list)

    @property
    def sensitivity(self) -> float | None:
        return self.detected / self.events if self.events else None

    @property
    def strict_sensitivity(self) -> float | None:
        return self.strict / self.events if self.events else None

    @property
    def strict_median_lead_h(self) -> float | None:
        return float(np.median(self.strict_leads_h)) if self.strict_leads_h else None

    @property
    def median_lead_h(self) -> float | None:
        return float(np.median(self.leads_h)) if self.leads_h else None


@dataclass
class Score:
    ruleset: str
    patients: int = 0
    patient_months: float = 0.0
    patient_days: float = 0.0
    by_type: dict[str, EventScore] = field(default_factory=dict)
    clinical_alerts: int = 0
    false_clinical: int = 0
    quality: int = 0
    missed: int = 0
    false_by_rule: Counter = field(default_factory=Counter)
    alerts_by_rule: Counter = field(default_factory=Counter)
    detected_by_rule: Counter = field(default_factory=Counter)

    def per_month(self, n: int) -> float | None:
        return n / self.patient_months if self.patient_months else None

    def as_dict(self) -> dict:
        r = lambda x: None if x is None else round(x, 4)  # noqa: E731
        return {
            "ruleset": self.ruleset, "patients": self.patients,
            "patient_months": round(self.patient_months, 2),
            "events": {t: {"events": s.events, "detected": s.detected,
                           "sensitivity": r(s.sensitivity), "median_lead_h": r(s.median_lead_h),
                           "detected_strict": s.strict,
                           "sensitivity_strict": r(s.strict_sensitivity),
                           "median_lead_h_strict": r(s.strict_median_lead_h)}
                       for t, s in sorted(self.by_type.items())},
            "clinical_alerts": self.clinical_alerts,
            "clinical_alerts_per_patient_month": r(self.per_month(self.clinical_alerts)),
            "false_clinical_alerts": self.false_clinical,
            "false_clinical_per_patient_month": r(self.per_month(self.false_clinical)),
            "quality_notices": self.quality,
            "quality_per_patient_month": r(self.per_month(self.quality)),
            "missed_notices": self.missed,
            "missed_per_patient_month": r(self.per_month(self.missed)),
            "false_by_rule": dict(sorted(self.false_by_rule.items())),
            "alerts_by_rule": dict(sorted(self.alerts_by_rule.items())),
            "first_detections_by_rule": dict(sorted(self.detected_by_rule.items())),
        }  # fmt: skip


def missed_notices(series: Series, events: list[Event], day_offset_s: int) -> int:
    """Runs of days without a reading, inside the monitored span, not while admitted."""
    if len(series) == 0:
        return 0
    days = np.unique(day_of(series.t, day_offset_s))
    span = np.arange(days[0], days[-1] + 1)
    missing = ~np.isin(span, days)
    for e in events:
        if e.admitted and e.evident is not None:
            end = e.end if e.end is not None else e.evident
            lo, hi = day_of(e.evident, day_offset_s), day_of(end, day_offset_s)
            missing &= ~((span >= lo) & (span <= hi))
    starts = missing & ~np.concatenate(([False], missing[:-1]))
    return int(np.sum(starts))


def score_patient(score: Score, series: Series, alerts: list[Alert], events: list[Event],
                  day_offset_s: int) -> None:  # fmt: skip
    score.patients += 1
    if len(series):
        days = (int(series.t[-1]) - int(series.t[0])) / DAY_S + 1
        score.patient_days += days
        score.patient_months += days / MONTH_DAYS
    score.missed += missed_notices(series, events, day_offset_s)
    clinical = [e for e in events if e.clinical and e.evident is not None]
    opened = sorted((a for a in alerts if a.category == Category.CLINICAL),
                    key=lambda a: a.opened_at)
    score.quality += sum(a.category == Category.QUALITY for a in alerts)
    for a in opened:
        score.clinical_alerts += 1
        score.alerts_by_rule[a.rule] += 1
        if not any(e.onset - FALSE_MARGIN_S <= a.opened_at <= e.evident + FALSE_MARGIN_S
                   for e in clinical):  # fmt: skip
            score.false_clinical += 1
            score.false_by_rule[a.rule] += 1
    for e in clinical:
        s = score.by_type.setdefault(e.type, EventScore())
        s.events += 1
        lo, hi = e.evident - WINDOW_EARLY_S, e.evident - WINDOW_LATE_S
        strict = [a for a in opened if lo <= a.opened_at <= hi]
        if strict:
            s.strict += 1
            s.strict_leads_h.append((e.evident - strict[0].opened_at) / HOUR_S)
        start = e.onset - FALSE_MARGIN_S
        firing = [a for a in opened if any(max(lo, start) <= f <= hi for f in a.fired)]
        if firing:
            first = min((f, a.rule) for a in firing for f in a.fired if start <= f <= hi)
            s.detected += 1
            s.leads_h.append((e.evident - first[0]) / HOUR_S)
            score.detected_by_rule[first[1]] += 1


def new_score(ruleset: str) -> Score:
    s = Score(ruleset)
    for t in sorted(CLINICAL_TYPES):
        s.by_type[t] = EventScore()
    return s
