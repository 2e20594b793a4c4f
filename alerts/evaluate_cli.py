"""`vitalvagt evaluate`: replay readings through the rules offline and score them.

Input is a simulator cohort (`--cohort DIR`) or CSV files from any system
(`--observations F --patients F [--events F]`, alerts/evaluate_input.py). Every reading is
evaluated in time order (alerts/replay.py), findings become alerts as the live engine keeps
them (one active per patient and rule, auto-clear), and the alerts are scored against the
labelled events (alerts/scoring.py). Needs no database.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from vitalvagt.settings import Settings

if TYPE_CHECKING:  # the rules need numpy; `vitalvagt` builds its parser without it
    from alerts.evaluate_input import PatientData
    from alerts.ruleset import RuleSet
    from alerts.scoring import Score


def run(patients: list[PatientData], ruleset: RuleSet, *, chunking: str = "all",
        alerts_out: csv.writer | None = None) -> tuple[Score, float]:  # fmt: skip
    """Score one rule set over all patients; returns the score and the seconds taken."""
    from alerts.replay import replay_patient
    from alerts.scoring import new_score, score_patient

    score = new_score(ruleset.name)
    began = time.perf_counter()
    for p in patients:
        series = p.series()
        alerts = replay_patient(series, p.ctx, ruleset, chunking)
        score_patient(score, series, alerts, p.events, p.ctx.day_offset_s)
        if alerts_out is not None:
            for a in alerts:
                when = datetime.fromtimestamp(a.opened_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                alerts_out.writerow((ruleset.name, p.patient_id, when, a.rule,
                                     a.severity.value, a.category))  # fmt: skip
    return score, time.perf_counter() - began


def _fmt(x: float | None, pct: bool = False) -> str:
    if x is None:
        return "-"
    return f"{100 * x:.0f} %" if pct else f"{x:.2f}" if x < 100 else f"{x:.0f}"


def table(scores: list[Score]) -> str:
    rows: list[tuple[str, ...]] = [("", *(s.ruleset for s in scores))]
    types = sorted({t for s in scores for t in s.by_type})
    for t in types:
        rows.append((f"{t}: events", *(str(s.by_type[t].events) for s in scores)))
        rows.append(("  detected 7 d..24 h before evident",
                     *(f"{s.by_type[t].detected} ({_fmt(s.by_type[t].sensitivity, True)})"
                       for s in scores)))  # fmt: skip
        rows.append(("  median lead time h", *(_fmt(s.by_type[t].median_lead_h) for s in scores)))
        rows.append(("  strict (opened in the window), lead h",
                     *(f"{s.by_type[t].strict} ({_fmt(s.by_type[t].strict_sensitivity, True)}),"
                       f" {_fmt(s.by_type[t].strict_median_lead_h)}" for s in scores)))
    rows.append(("patients / patient-months",
                 *(f"{s.patients} / {s.patient_months:.0f}" for s in scores)))  # fmt: skip
    for label, attr in (("clinical alerts", "clinical_alerts"),
                        ("false clinical alerts", "false_clinical"),
                        ("quality notices", "quality"), ("missed notices", "missed")):
        rows.append((f"{label} (per patient-month)",
                     *(f"{getattr(s, attr)} ({_fmt(s.per_month(getattr(s, attr)))})"
                       for s in scores)))  # fmt: skip
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    return "\n".join("  ".join(v.ljust(w) if c == 0 else v.rjust(w)
                               for c, (v, w) in enumerate(zip(r, widths, strict=True))).rstrip()
                     for r in rows)  # fmt: skip


def _evaluate(args: argparse.Namespace, settings: Settings) -> int:
    from alerts.evaluate_input import read_cohort, read_csv_input
    from alerts.ruleset import RULESETS

    if args.cohort is None and (args.observations is None or args.patients is None):
        print("vitalvagt evaluate: give --cohort DIR, or --observations F and --patients F",
              file=sys.stderr)
        return 2
    if args.cohort is not None and (args.observations or args.patients or args.events):
        print("vitalvagt evaluate: --cohort and the CSV files exclude each other",
              file=sys.stderr)
        return 2
    began = time.perf_counter()
    if args.cohort is not None:
        patients = read_cohort(args.cohort, copd_scale2=args.copd_scale2)
    else:
        patients = read_csv_input(args.observations, args.patients, args.events)
    read_s = time.perf_counter() - began
    names = ["guideline", "full"] if args.rules == "both" else [args.rules]
    out_file = open(args.alerts_out, "w", newline="") if args.alerts_out else None
    try:
        writer = csv.writer(out_file, lineterminator="\n") if out_file else None
        if writer:
            writer.writerow(("ruleset", "patient_id", "time", "rule", "severity", "category"))
        results = [run(patients, RULESETS[n], chunking=args.chunking, alerts_out=writer)
                   for n in names]  # fmt: skip
    finally:
        if out_file:
            out_file.close()
    scores = [s for s, _ in results]
    days = scores[0].patient_days
    speed = {s.ruleset: round(days / sec, 1) if sec > 0 else None for s, sec in results}
    if args.json:
        print(json.dumps({"scores": [s.as_dict() for s in scores],
                          "patient_days": round(days, 1), "read_s": round(read_s, 2),
                          "patient_days_per_s": speed, "chunking": args.chunking},
                         indent=2))  # fmt: skip
    else:
        print(table(scores))
        speeds = ", ".join(f"{n} {v:,.0f}" for n, v in speed.items() if v)
        print(f"\n{len(patients)} patients, {days:,.0f} patient-days read in {read_s:.1f} s; "
              f"replay ({args.chunking} chunks) patient-days/s: {speeds}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate", help="replay readings through the alert rules offline and score them",
        description="Replay every reading through the alert rules in time order (no database) "
        "and score the alerts against labelled events: per event type the share alerted 7 "
        "days to 24 hours before evident and the median lead time; false clinical alerts "
        "(outside onset - 1 day .. evident + 1 day of every clinical event) and all alerts "
        "per patient-month; missed-measurement and quality notices apart. Alerts are "
        "deduplicated as the live engine does: one active per patient and rule, cleared "
        "automatically when the rule stayed silent for its clear time (docs/clinical-rules.md).",
    )  # fmt: skip
    p.add_argument("--cohort", type=Path, default=None, metavar="DIR",
                   help="a simulator cohort directory (vitalvagt simulate cohort)")
    p.add_argument("--observations", type=Path, default=None, metavar="F",
                   help="CSV: patient_id, kind, value, unit, measured_at, flags")
    p.add_argument("--patients", type=Path, default=None, metavar="F",
                   help="CSV: patient_id, group [, on_oxygen, spo2_scale2]")
    p.add_argument("--events", type=Path, default=None, metavar="F",
                   help="CSV: patient_id, type, onset, evident [, end, admitted]")
    p.add_argument("--rules", choices=("guideline", "full", "both"), default="full",
                   help="guideline: fixed limits only; full: the personalised set (default); "
                   "both: side by side")
    p.add_argument("--json", action="store_true", help="print the scores as JSON")
    p.add_argument("--alerts-out", type=Path, default=None, metavar="FILE",
                   help="write every alert as CSV: ruleset, patient_id, time, rule, severity, "
                   "category")
    p.add_argument("--chunking", choices=("all", "day", "reading"), default="all",
                   help="readings per evaluate_new call (the findings are the same; day and "
                   "reading show it, all is fastest)")
    p.add_argument("--copd-scale2", action="store_true",
                   help="cohort only: score SpO2 on NEWS2 scale 2 for COPD patients")
    p.set_defaults(handler=_evaluate)
