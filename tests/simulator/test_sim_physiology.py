"""The physiology model's building blocks, one at a time (no cohort on disk)."""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from simulator.errors import SimulatorError
from simulator.parameters import DEFAULT_PARAMS, KIND_ORDER, VALUE_RANGE, Group, Normal
from simulator.physiology import (
    Calendar,
    device_address,
    diurnal_offset,
    draw_missed_days,
    effect_profile,
    gateway_id,
    patient_id,
    simulate_patient,
)
from vitalvagt.devices import DeviceType
from vitalvagt.kinds import Kind
from vitalvagt.observation import GATEWAY_ID_PATTERN

CAL = Calendar.make(date(2025, 1, 6), 60)


def test_truncated_normal_draws_stay_inside_and_match_their_moments() -> None:
    dist = Normal(93, 2, 87, 98)
    rng = np.random.default_rng(1)
    x = np.array([dist.draw(rng) for _ in range(40_000)])
    assert x.min() >= 87 and x.max() <= 98
    mean, sd = dist.moments()
    assert abs(x.mean() - mean) < 0.03
    assert abs(x.std() - sd) < 0.03
    assert sd < 2  # truncation narrows the spread
    assert mean < 93  # and the cut is nearer on the high side


def test_normal_that_never_fits_its_bounds_is_an_error() -> None:
    with pytest.raises(SimulatorError):
        Normal(0, 1, 50, 51).draw(np.random.default_rng(0))


def test_effect_profile_rises_to_evident_then_fades_or_stops() -> None:
    t = np.array([-1.0, 0, 25, 50, 100, 150, 199, 200, 250])
    home = effect_profile(t, 0, 100, 200, admitted=False)
    assert np.allclose(home, [0, 0, 0.25, 0.5, 1.0, 0.5, 0.01, 0, 0])
    ward = effect_profile(t, 0, 100, 200, admitted=True)
    assert np.allclose(ward, [0, 0, 0.25, 0.5, 1.0, 1.0, 1.0, 0, 0])


@pytest.mark.parametrize(("fraction", "continuation"), [(0.1, 0.5), (0.3, 0.7), (0.05, 0.2)])
def test_missed_days_chain_has_its_share_and_run_length(fraction: float,
                                                        continuation: float) -> None:
    missed = draw_missed_days(np.random.default_rng(7), 200_000, fraction, continuation)
    assert abs(missed.mean() - fraction) < 0.01
    edges = np.diff(np.concatenate([[0], missed.astype(int), [0]]))
    runs = np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)
    assert abs(runs.mean() - 1 / (1 - continuation)) < 0.05 * (1 / (1 - continuation))


def test_calendar_follows_daylight_saving_time() -> None:
    cal = Calendar.make(date(2025, 3, 28), 4)  # Denmark switches on 30 March 2025
    zone = ZoneInfo("Europe/Copenhagen")
    for d in range(4):
        day = date(2025, 3, 28 + d)
        eight = datetime(day.year, day.month, day.day, 8, tzinfo=zone)
        assert cal.day_start_s[d] + 8 * 3600 == eight.timestamp()
    assert cal.day_start_s[3] - cal.day_start_s[2] == 86_400
    assert cal.day_start_s[2] - cal.day_start_s[1] == 86_400 - 3600


def test_daily_rhythm_peaks_where_documented() -> None:
    hours = np.arange(0, 24, 0.25)
    for kind, rhythm in DEFAULT_PARAMS.diurnal.items():
        y = diurnal_offset(kind, hours)
        if rhythm.amplitude:
            assert hours[np.argmax(y)] == rhythm.peak_hour
            assert math.isclose(y.max(), rhythm.amplitude)
    bp = diurnal_offset(Kind.BP_SYSTOLIC, np.array([8.0, 19.0]))
    assert bp[0] - bp[1] > 8  # morning surge
    temp = diurnal_offset(Kind.TEMPERATURE, np.array([8.0, 19.0]))
    assert temp[1] > temp[0]  # warmer in the evening


def test_ids_and_addresses() -> None:
    assert patient_id(0) == "sim-p00001" and gateway_id(41) == "sim-gw-00042"
    assert re.match(GATEWAY_ID_PATTERN, gateway_id(123_456))
    seen = {device_address(i, t) for i in range(3000) for t in DeviceType}
    assert len(seen) == 3000 * len(DeviceType)
    assert all(re.fullmatch(r"([0-9A-F]{2}:){5}[0-9A-F]{2}", a) for a in seen)


def test_simulate_patient_is_a_pure_function_of_seed_and_index() -> None:
    a = simulate_patient(5, 3, CAL)
    b = simulate_patient(5, 3, CAL)
    c = simulate_patient(5, 4, CAL)
    d = simulate_patient(6, 3, CAL)
    for field in ("kind", "value", "measured_us", "received_us", "sent_us", "flags"):
        assert np.array_equal(getattr(a.readings, field), getattr(b.readings, field))
    assert a.events == b.events and a.profile == b.profile
    assert a.profile != c.profile and a.profile != d.profile


def test_patient_streams_are_the_cohort_seed_sequence_spawned() -> None:
    """Documented derivation: SeedSequence(seed).spawn(n)[i].spawn(k) for any n."""
    for n in (5, 50):
        child = np.random.SeedSequence(99).spawn(n)[3].spawn(7)[2]
        direct = np.random.SeedSequence(99, spawn_key=(3, 2))
        assert np.array_equal(child.generate_state(4), direct.generate_state(4))


@pytest.mark.parametrize("group", list(Group), ids=lambda g: g.value)
def test_a_fixed_group_gets_its_kit(group: Group) -> None:
    for i in range(20):
        sim = simulate_patient(1, i, CAL, group=group)
        assert sim.profile.group is group
        assert tuple(d.type for d in sim.profile.devices) == DEFAULT_PARAMS.kits[group]
        kinds = {KIND_ORDER[k] for k in np.unique(sim.readings.kind)}
        assert (Kind.WEIGHT in kinds) == (DeviceType.SCALE in DEFAULT_PARAMS.kits[group]) or \
            len(sim.readings) == 0


def test_readings_are_sorted_and_grouped_into_readings() -> None:
    for i in range(30):
        r = simulate_patient(2, i, CAL).readings
        assert (np.diff(r.measured_us) >= 0).all()
        for reading in np.unique(r.reading):
            rows = r.reading == reading
            assert len(set(r.measured_us[rows].tolist())) == 1
            assert len(set(r.device[rows].tolist())) == 1
        for k, kind in enumerate(KIND_ORDER):
            v = r.value[r.kind == k]
            if v.size:
                assert VALUE_RANGE[kind][0] <= v.min() and v.max() <= VALUE_RANGE[kind][1]


def test_blood_pressure_parts_are_consistent() -> None:
    r = simulate_patient(3, 0, CAL, group=Group.HEART_FAILURE).readings
    sys_ = r.value[r.kind == KIND_ORDER.index(Kind.BP_SYSTOLIC)]
    dia = r.value[r.kind == KIND_ORDER.index(Kind.BP_DIASTOLIC)]
    mean = r.value[r.kind == KIND_ORDER.index(Kind.BP_MEAN)]
    assert sys_.size > 20 and sys_.size == dia.size == mean.size
    assert (dia <= sys_ - 10).all()
    assert (np.abs(mean - (dia + (sys_ - dia) / 3)) <= 0.5 + 1e-9).all()


def test_parameters_are_json_for_the_cohort_file() -> None:
    doc = DEFAULT_PARAMS.to_dict()
    text = json.dumps(doc, sort_keys=True)
    assert json.loads(text)["events"][0]["type"] == "copd_exacerbation"
    assert doc["baselines"]["copd"]["spo2"] == {"mean": 93, "sd": 2, "low": 87, "high": 98}


def test_event_times_are_utc_and_ordered() -> None:
    sim = simulate_patient(4, 2, Calendar.make(date(2025, 1, 6), 365), group=Group.BOTH)
    assert any(e.clinical for e in sim.events)
    for e in sim.events:
        assert e.onset.tzinfo is UTC and e.onset <= e.end
        if e.clinical:
            assert e.evident_at is not None and e.onset < e.evident_at <= e.end
        else:
            assert e.evident_at is None and e.device_address
    assert [e.event_id for e in sim.events] == sorted(e.event_id for e in sim.events)
    assert [e.onset for e in sim.events] == sorted(e.onset for e in sim.events)


def test_continuous_oximetry_follows_the_patient_and_their_events() -> None:
    """A reading a second around the patient's baseline, deterministic from its generator,
    inside the device's range, and lower in SpO2 during a COPD exacerbation."""
    from datetime import UTC, datetime, timedelta

    from simulator.parameters import EventType
    from simulator.physiology import ContinuousOximetry, Event

    base = {Kind.SPO2: 93.0, Kind.PULSE: 80.0}
    t0 = datetime(2025, 1, 6, 2, tzinfo=UTC)
    seconds = [t0.timestamp() + i for i in range(3600)]
    calm = ContinuousOximetry(np.random.default_rng(3), base).read(seconds)
    again = ContinuousOximetry(np.random.default_rng(3), base).read(seconds)
    assert all(np.array_equal(calm[k], again[k]) for k in calm)
    for kind, values in calm.items():
        lo, hi = VALUE_RANGE[kind]
        assert values.min() >= lo and values.max() <= hi
        assert np.all(values == np.round(values))  # the oximeter's 1 % and 1 /min
        night = base[kind] + float(diurnal_offset(kind, 3.5))  # 03:00-04:00 in Copenhagen
        assert abs(values.mean() - night) < 2.5
    ill = Event("e1", "p", EventType.COPD_EXACERBATION, t0 - timedelta(days=3),
                t0 - timedelta(hours=1), t0 + timedelta(days=5), 5.0, Kind.SPO2,
                ((Kind.SPO2, -5.0), (Kind.PULSE, 10.0)))  # fmt: skip
    sick = ContinuousOximetry(np.random.default_rng(3), base, [ill]).read(seconds)
    assert sick[Kind.SPO2].mean() < calm[Kind.SPO2].mean() - 3
    assert sick[Kind.PULSE].mean() > calm[Kind.PULSE].mean() + 6
