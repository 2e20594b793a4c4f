"""Rule quality:<kind>: a flagged reading asks for a new measurement, never a clinical alert."""

from __future__ import annotations

import numpy as np

from alerts.quality_rule import QualityRule
from alerts.ruleset import FULL, GUIDELINE, evaluate_new
from alerts.series import PatientContext, Series
from vitalvagt.kinds import Kind

T0 = 1_736_150_400


def test_one_notice_per_flagged_measurement() -> None:
    # a flagged cuff reading (pulse, systolic, diastolic, mean at one time; pulse last) and a
    # flagged oximeter reading (SpO2, pulse), then a good SpO2
    t = [T0] * 4 + [T0 + 300] * 2 + [T0 + 600]
    kinds = [Kind.BP_SYSTOLIC, Kind.BP_DIASTOLIC, Kind.BP_MEAN, Kind.PULSE, Kind.SPO2,
             Kind.PULSE, Kind.SPO2]  # fmt: skip
    values = [230, 120, 157, 150, 70, 140, 95]
    s = Series.build(t, kinds, values, [False] * 6 + [True])
    out = QualityRule().evaluate(s, np.arange(len(s)), PatientContext("copd"))
    assert [(f.rule, f.at_index, f.category) for f in out] == [
        ("quality:bp_systolic", 0, "quality"), ("quality:spo2", 4, "quality")]
    assert "flagged unreliable by the device" in out[0].message
    assert "Ask the patient to measure again" in out[0].message


def test_a_flagged_pulse_alone_gets_its_notice() -> None:
    s = Series.build([T0], [Kind.PULSE], [180], [False])
    out = QualityRule().evaluate(s, np.arange(1), PatientContext("copd"))
    assert [f.rule for f in out] == ["quality:pulse"]


def test_flagged_extremes_open_nothing_clinical_in_either_rule_set() -> None:
    s = Series.build([T0 + i * 3600 for i in range(4)], [Kind.SPO2] * 4, [60, 61, 62, 60],
                     [False] * 4)  # fmt: skip
    for rs in (GUIDELINE, FULL):
        out = evaluate_new(s, slice(None), PatientContext("heart_failure"), rs)
        assert {f.category for f in out} == {"quality"}
        assert len(out) == 4
