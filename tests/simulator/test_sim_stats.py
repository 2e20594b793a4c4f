"""Statistical properties of a large generated cohort, against the documented parameters.

The cohort (conftest.BIG) is read back from its files, so these tests check what a user of
the cohort sees. Tolerances are about four standard errors: sampling noise at this size does
not fail them (and the seed is fixed), a change in the model of the size a reader would care
about does.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from simulator.parameters import (
    DEFAULT_PARAMS,
    STATE_KINDS,
    ArtefactSpec,
    EventSpec,
    EventType,
    Group,
)
from simulator.physiology import Event, diurnal_offset, effect_profile
from tests.simulator.conftest import SimData
from vitalvagt.devices import DeviceType
from vitalvagt.kinds import Kind

P = DEFAULT_PARAMS
DAY = 86_400.0
MODELS = {m.name: m for models in P.models.values() for m in models}


def _within(observed: float, expected: float, tolerance: float, what: str) -> None:
    assert abs(observed - expected) <= tolerance, (
        f"{what}: observed {observed:.4g}, expected {expected:.4g} +- {tolerance:.3g}"
    )


# --- baselines --------------------------------------------------------------------------------


def test_group_mix(sim: SimData) -> None:
    n = len(sim.patients)
    for group, share in P.group_mix.items():
        count = sum(p.group is group for p in sim.patients)
        _within(count / n, share, 4 * math.sqrt(share * (1 - share) / n), f"share of {group}")


@pytest.mark.parametrize("kind", STATE_KINDS, ids=lambda k: k.value)
@pytest.mark.parametrize("group", list(Group), ids=lambda g: g.value)
def test_baseline_mean_and_spread(sim: SimData, group: Group, kind: Kind) -> None:
    dist = P.baselines[group].of(kind)
    values = np.array([p.baseline[kind] for p in sim.patients if p.group is group])
    assert values.size >= 30
    mean, sd = dist.moments()
    _within(values.mean(), mean, 4 * sd / math.sqrt(values.size), f"{group} {kind} mean")
    _within(values.std(ddof=1) / sd, 1.0, 4 / math.sqrt(2 * values.size), f"{group} {kind} sd")
    assert dist.low <= values.min() and values.max() <= dist.high


def test_copd_is_less_saturated_than_heart_failure(sim: SimData) -> None:
    spo2 = {g: np.mean([p.baseline[Kind.SPO2] for p in sim.patients if p.group is g])
            for g in Group}
    assert spo2[Group.HEART_FAILURE] - spo2[Group.COPD] > 2


# --- readings: level, rhythm and noise --------------------------------------------------------


def _expected_sd(kind: Kind, model_name: str) -> float:
    m = MODELS[model_name]
    return math.sqrt(P.day_variation[kind].sd ** 2 + m.reading_sd[kind] ** 2
                     + m.resolution[kind] ** 2 / 12)


@pytest.mark.parametrize("kind", STATE_KINDS, ids=lambda k: k.value)
def test_stable_readings_scatter_around_baseline(sim: SimData, kind: Kind) -> None:
    """Outside events and artefacts a reading is baseline + daily rhythm + day-to-day variation
    + device noise; checks all four together, per device model."""
    res = sim.residual()
    rows = sim.kind(kind) & sim.clean
    if kind is Kind.SPO2:  # values are capped at 100 %: keep patients far from it
        rows &= sim.baseline <= 95
    for model in np.unique(sim.table.device_model[rows]):
        m = rows & (sim.table.device_model == model)
        assert m.sum() > 1000
        expected = _expected_sd(kind, str(model))
        _within(float(res[m].mean()), 0.0, 0.1 * expected, f"{kind} {model} mean residual")
        _within(float(res[m].std()) / expected, 1.0, 0.08, f"{kind} {model} residual sd")


def _session_pairs(sim: SimData, a: np.ndarray, b: np.ndarray, *, same_session: bool = True
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Rows of a and b from the same patient and day (and session: morning or evening)."""
    def keyed(rows: np.ndarray) -> dict[tuple[int, int, bool], int]:
        idx = np.flatnonzero(rows)
        session = (sim.local_min[idx] > 900) if same_session else np.zeros(idx.size, bool)
        keys = zip(sim.pidx[idx].tolist(), sim.day[idx].tolist(), session.tolist(), strict=True)
        return dict(zip(keys, idx.tolist(), strict=True))

    ka, kb = keyed(a), keyed(b)
    common = sorted(ka.keys() & kb.keys())
    return np.array([ka[k] for k in common]), np.array([kb[k] for k in common])


def test_device_noise_two_pulse_readings_in_one_session(sim: SimData) -> None:
    """The cuff and the oximeter measure the same pulse minutes apart: their difference is
    device noise only (the patient's level cancels)."""
    pulse = sim.kind(Kind.PULSE) & sim.clean
    ox = pulse & (sim.table.device_model == P.models[DeviceType.OXIMETER][0].name)
    cuff = pulse & (sim.table.device_model == P.models[DeviceType.BP][0].name)
    i, j = _session_pairs(sim, ox, cuff)
    assert i.size > 10_000
    diff = sim.table.value[i] - sim.table.value[j]
    ox_sd = P.models[DeviceType.OXIMETER][0].reading_sd[Kind.PULSE]
    cuff_sd = P.models[DeviceType.BP][0].reading_sd[Kind.PULSE]
    expected = math.sqrt(ox_sd**2 + cuff_sd**2 + 2 / 12)
    _within(float(diff.mean()), 0.0, 0.2, "mean oximeter - cuff pulse")
    _within(float(diff.std()) / expected, 1.0, 0.05, "sd of oximeter - cuff pulse")


def test_morning_blood_pressure_surge(sim: SimData) -> None:
    """Morning and evening systolic of the same day differ by the daily rhythm; what is left
    is device noise of two readings."""
    sys_ = sim.kind(Kind.BP_SYSTOLIC) & sim.clean
    morning, evening = _session_pairs(sim, sys_ & (sim.local_min < 720),
                                      sys_ & (sim.local_min > 900), same_session=False)
    assert morning.size > 1000
    diff = sim.table.value[morning] - sim.table.value[evening]
    rhythm = (diurnal_offset(Kind.BP_SYSTOLIC, sim.local_min[morning] / 60)
              - diurnal_offset(Kind.BP_SYSTOLIC, sim.local_min[evening] / 60))
    assert diff.mean() > 5  # mmHg higher in the morning
    _within(float(diff.mean()), float(rhythm.mean()), 1.0, "morning - evening systolic")
    noise = math.sqrt(2) * P.models[DeviceType.BP][0].reading_sd[Kind.BP_SYSTOLIC]
    _within(float((diff - rhythm).std()) / noise, 1.0, 0.1, "sd of morning - evening systolic")


@pytest.mark.parametrize("kind", [Kind.WEIGHT, Kind.SPO2], ids=lambda k: k.value)
def test_day_to_day_variation(sim: SimData, kind: Kind) -> None:
    """Successive days differ by the AR(1) day variation plus two readings' noise."""
    rows = sim.kind(kind) & sim.clean & (sim.baseline <= 95 if kind is Kind.SPO2 else True)
    rows &= sim.local_min < 720
    idx = np.flatnonzero(rows)
    key = {(p, d): i for p, d, i in zip(sim.pidx[idx].tolist(), sim.day[idx].tolist(),
                                        idx.tolist(), strict=True)}
    pairs = [(i, key[(p, d + 1)]) for (p, d), i in key.items() if (p, d + 1) in key]
    a, b = np.array(pairs).T
    diff = sim.table.value[b] - sim.table.value[a]
    dv = P.day_variation[kind]
    var = np.array([2 * dv.sd**2 * (1 - dv.phi) + 2 * (MODELS[str(m)].reading_sd[kind] ** 2
                    + MODELS[str(m)].resolution[kind] ** 2 / 12)
                    for m in sim.table.device_model[a]])
    _within(float(diff.std()) / math.sqrt(var.mean()), 1.0, 0.08, f"{kind} day-to-day sd")


def test_values_are_plausible_and_at_device_resolution(sim: SimData) -> None:
    from simulator.parameters import VALUE_RANGE
    from vitalvagt.kinds import KIND_SPECS

    v = sim.table.value
    for kind in Kind:
        m = sim.kind(kind)
        if not m.any():
            continue
        lo, hi = VALUE_RANGE[kind]
        assert KIND_SPECS[kind].plausible_min <= lo and hi <= KIND_SPECS[kind].plausible_max
        assert lo <= v[m].min() and v[m].max() <= hi, kind
        for model in np.unique(sim.table.device_model[m]):
            step = MODELS[str(model)].resolution[kind]
            units = v[m & (sim.table.device_model == model)] / step
            assert np.allclose(units, np.round(units), atol=1e-6), (kind, model)


# --- adherence --------------------------------------------------------------------------------


def _measured_days(sim: SimData) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per patient: (days on which they could measure, days on which they did)."""
    days = sim.info.days
    out = []
    for p in sim.patients:
        eligible = np.ones(days, bool)
        if p.dropout_day is not None:
            eligible[p.dropout_day:] = False
        for e in sim.events:
            if e.patient_id == p.patient_id and e.admitted and e.evident_at is not None:
                first = int((e.evident_at.timestamp() - sim.calendar.origin_s) // DAY)
                last = int((e.end.timestamp() - sim.calendar.origin_s) // DAY)
                eligible[max(first, 0):last + 1] = False
        did = np.zeros(days, bool)
        did[np.unique(sim.day[sim.pidx == p.index])] = True
        out.append((eligible, did))
    return out


def test_share_of_missed_days(sim: SimData) -> None:
    a, b = P.adherence.miss_fraction_beta
    drawn = np.array([p.miss_fraction for p in sim.patients])
    beta_sd = math.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)))
    _within(drawn.mean(), a / (a + b), 4 * beta_sd / math.sqrt(drawn.size), "mean miss fraction")
    days = _measured_days(sim)
    missed = sum(int((e & ~d).sum()) for e, d in days)
    eligible = sum(int(e.sum()) for e, _ in days)
    _within(missed / eligible, float(drawn.mean()), 0.015, "share of missed days")
    per_patient = np.array([(e & ~d).sum() / max(e.sum(), 1) for e, d in days])
    assert np.corrcoef(per_patient, drawn)[0, 1] > 0.6  # the patient's own habit shows


def test_missed_days_come_in_runs(sim: SimData) -> None:
    runs: list[int] = []
    for eligible, did in _measured_days(sim):
        run = 0
        for e, d in zip(eligible.tolist(), did.tolist(), strict=True):
            if e and not d:
                run += 1
            elif run:
                runs.append(run)
                run = 0
    lengths = np.array(runs)
    c = P.adherence.miss_run_continuation
    assert lengths.size > 1000
    # Runs cut by the end of a window are slightly shorter than the chain's 1 / (1 - c).
    _within(float(lengths.mean()), 1 / (1 - c), 0.2, "mean run of missed days")
    _within(float((lengths == 1).mean()), 1 - c, 0.05, "share of single missed days")


def test_patients_who_stop(sim: SimData) -> None:
    n = len(sim.patients)
    expected = 1 - math.exp(-P.adherence.dropout_per_day * sim.info.days)
    stopped = [p for p in sim.patients if p.dropout_day is not None]
    _within(len(stopped) / n, expected, 4 * math.sqrt(expected * (1 - expected) / n), "dropout")
    assert stopped
    for p in stopped:
        assert not (sim.day[sim.pidx == p.index] >= p.dropout_day).any(), p.patient_id


def test_measuring_times_follow_the_schedule(sim: SimData) -> None:
    bp = sim.table.device_model == P.models[DeviceType.BP][0].name
    morning = bp & sim.kind(Kind.BP_SYSTOLIC) & (sim.local_min < 720)
    scheduled = np.array([sum(int(x) * f for x, f in zip(p.morning_local.split(":"),
                                                         (60, 1, 1 / 60), strict=True))
                          for p in sim.patients])
    late = sim.local_min[morning] - scheduled[sim.pidx[morning]] - 2.0  # the cuff's offset
    sch = P.schedule
    _within(float(late.mean()), 0.0, 1.0, "minutes after the scheduled time")
    expected = math.hypot(sch.jitter_min, sch.device_gap_sd_min)
    _within(float(late.std()) / expected, 1.0, 0.05, "sd of measuring time")
    evening = np.mean([p.evening_local is not None for p in sim.patients])
    _within(float(evening), sch.evening_share, 0.09, "share with an evening session")


# --- events -----------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", P.events, ids=lambda s: s.type.value)
def test_event_frequency(sim: SimData, spec: EventSpec) -> None:
    events = sim.events_of(spec.type.value)
    at_risk_s = 0.0
    for p in sim.patients:
        if p.group in spec.groups:
            at_risk_s += sim.info.days * DAY
    for e in events:  # not at risk again while in an event of the same type
        at_risk_s -= min(e.end.timestamp(), sim.calendar.end_s) - e.onset.timestamp()
    expected = spec.rate_per_year * at_risk_s / (365 * DAY)
    assert expected > 15
    _within(len(events), expected, 4 * math.sqrt(expected), f"{spec.type} count")
    for e in events:
        group = sim.patients[int(e.patient_id[5:]) - 1].group
        assert group in spec.groups, (e.event_id, group)


@pytest.mark.parametrize("spec", P.events, ids=lambda s: s.type.value)
def test_event_timing_and_magnitude_labels(sim: SimData, spec: EventSpec) -> None:
    events = sim.events_of(spec.type.value)
    for e in events:
        assert e.evident_at is not None
        build = (e.evident_at - e.onset).total_seconds() / DAY
        after = (e.end - e.evident_at).total_seconds() / DAY
        lo, hi = spec.buildup_days
        assert lo - 1e-4 <= build <= hi + 1e-4, (e.event_id, build)
        lo, hi = spec.stay_days if e.admitted else spec.recovery_days
        assert lo - 1e-4 <= after <= hi + 1e-4, (e.event_id, after)
        p = spec.primary
        assert e.magnitude_kind is p.kind
        assert min(abs(p.low), abs(p.high)) - 0.01 <= e.magnitude <= max(abs(p.low), abs(p.high))
        allowed = {p.kind} | {s.kind for s in spec.secondary}
        assert {k for k, _ in e.effects} <= allowed
        for kind, delta in e.effects:
            eff = p if kind is p.kind else next(s for s in spec.secondary if s.kind is kind)
            assert eff.low - 0.01 <= delta <= eff.high + 0.01, (e.event_id, kind, delta)
    admitted = np.mean([e.admitted for e in events])
    q = spec.admit_probability
    _within(float(admitted), q, 4 * math.sqrt(max(q * (1 - q), 0.01) / len(events)), "admitted")
    build = np.mean([(e.evident_at - e.onset).total_seconds() / DAY for e in events])
    lo, hi = spec.buildup_days
    _within(float(build), (lo + hi) / 2, 4 * (hi - lo) / math.sqrt(12 * len(events)), "buildup")


def test_copd_exacerbations_sometimes_bring_fever(sim: SimData) -> None:
    events = sim.events_of(EventType.COPD_EXACERBATION.value)
    fever = np.mean([any(k is Kind.TEMPERATURE for k, _ in e.effects) for e in events])
    spec = next(s for s in P.events if s.type is EventType.COPD_EXACERBATION)
    q = next(s.probability for s in spec.secondary if s.kind is Kind.TEMPERATURE)
    _within(float(fever), q, 4 * math.sqrt(q * (1 - q) / len(events)), "share with fever")


def test_no_readings_while_admitted(sim: SimData) -> None:
    admitted = [e for e in sim.events if e.admitted]
    assert len(admitted) > 20
    for e in admitted:
        t = sim.t[sim.patient_rows[int(e.patient_id[5:]) - 1]]
        inside = (t >= e.evident_at.timestamp()) & (t < e.end.timestamp())
        assert not inside.any(), e.event_id


def _event_windows(sim: SimData, e: Event, kind: Kind) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (pre-onset, late build-up) of one event's patient and kind, artefacts out."""
    on, ev = e.onset.timestamp(), e.evident_at.timestamp()
    rows = sim.patient_rows[int(e.patient_id[5:]) - 1]
    rows = rows[(sim.table.kind[rows] == kind.value) & ~sim.artefact[rows]
                & (sim.table.flags[rows] == "")]
    t = sim.t[rows]
    pre = rows[(t < on) & (t >= on - 21 * DAY) & ~sim.in_event[rows]]
    late = rows[(t >= on + 0.5 * (ev - on)) & (t < ev)]
    return pre, late


@pytest.mark.parametrize(
    ("typ", "kind"),
    [
        (EventType.COPD_EXACERBATION, Kind.SPO2),
        (EventType.COPD_EXACERBATION, Kind.PULSE),
        (EventType.HF_DECOMPENSATION, Kind.WEIGHT),
        (EventType.INFECTION, Kind.TEMPERATURE),
        (EventType.INFECTION, Kind.PULSE),
        (EventType.DEHYDRATION, Kind.WEIGHT),
    ],
    ids=lambda x: x.value,
)
def test_effect_size_against_own_baseline(sim: SimData, typ: EventType, kind: Kind) -> None:
    """In the second half of the build-up the readings depart from the patient's own
    pre-onset median by the labelled change times the event's profile."""
    observed, expected, right_way = [], [], 0
    for e in sim.events_of(typ.value):
        delta = dict(e.effects).get(kind)
        if delta is None:
            continue
        pre, late = _event_windows(sim, e, kind)
        if pre.size < 3 or late.size < 1:
            continue
        shift = sim.table.value[late].mean() - np.median(sim.table.value[pre])
        share = effect_profile(sim.t[late], e.onset.timestamp(), e.evident_at.timestamp(),
                               e.end.timestamp(), e.admitted).mean()
        observed.append(shift)
        expected.append(delta * share)
        right_way += np.sign(shift) == np.sign(delta)
    assert len(observed) >= 10
    ratio = sum(observed) / sum(expected)
    _within(ratio, 1.0, 0.2, f"{typ} {kind} observed / labelled change")
    assert right_way / len(observed) >= 0.85


def test_exacerbation_spo2_drop_is_two_to_six_points(sim: SimData) -> None:
    """Extrapolated to the evident time, the SpO2 fall seen in the readings is 2-6 points."""
    drops = []
    for e in sim.events_of(EventType.COPD_EXACERBATION.value):
        pre, late = _event_windows(sim, e, Kind.SPO2)
        if pre.size < 3 or late.size < 2:
            continue
        share = effect_profile(sim.t[late], e.onset.timestamp(), e.evident_at.timestamp(),
                               e.end.timestamp(), e.admitted).mean()
        drops.append((np.median(sim.table.value[pre]) - sim.table.value[late].mean()) / share)
    assert len(drops) >= 20
    assert 2 <= float(np.median(drops)) <= 6
    assert 3 <= float(np.mean(drops)) <= 5  # the labels are uniform on 2-6


def test_decompensation_weight_gain_is_one_to_five_kg(sim: SimData) -> None:
    gains = []
    for e in sim.events_of(EventType.HF_DECOMPENSATION.value):
        pre, late = _event_windows(sim, e, Kind.WEIGHT)
        if pre.size < 3 or late.size < 1:
            continue
        last = late[-1]
        share = effect_profile(sim.t[[last]], e.onset.timestamp(), e.evident_at.timestamp(),
                               e.end.timestamp(), e.admitted)[0]
        gains.append((sim.table.value[last] - np.median(sim.table.value[pre])) / share)
    assert len(gains) >= 20
    g = np.array(gains)
    assert 2.0 <= g.mean() <= 4.0
    assert np.mean((g > 0.3) & (g < 6.5)) >= 0.9  # 1-5 kg plus day-to-day scatter


def test_every_measured_event_shows_in_the_readings(sim: SimData) -> None:
    """Every clinical event whose expected change in the readings stands clear of the noise
    (3 standard errors) moves the late build-up readings the labelled way."""
    res = sim.residual()
    noise = {k: float(res[sim.kind(k) & sim.clean].std()) for k in STATE_KINDS}
    checked, missing = 0, []
    for e in sim.events:
        if not e.clinical:
            continue
        for kind, delta in e.effects:
            pre, late = _event_windows(sim, e, kind)
            if pre.size < 3 or late.size < 1:
                continue
            share = effect_profile(sim.t[late], e.onset.timestamp(), e.evident_at.timestamp(),
                                   e.end.timestamp(), e.admitted).mean()
            # Day-to-day variation is autocorrelated: it does not average out over the few
            # late days, so it enters whole.
            se = math.sqrt(P.day_variation[kind].sd ** 2
                           + noise[kind] ** 2 * (1 / late.size + 1.6 / pre.size))
            if abs(delta * share) < 3 * se:
                continue
            checked += 1
            shift = sim.table.value[late].mean() - np.median(sim.table.value[pre])
            if shift * np.sign(delta) < abs(delta * share) / 4:
                missing.append((e.event_id, kind.value, delta, round(float(shift), 2)))
    assert checked > 50, checked
    assert not missing, missing


# --- artefacts --------------------------------------------------------------------------------


ARTEFACT_FLAGS = {
    EventType.OXIMETER_MOTION: "erratic_signal;questionable",
    EventType.OXIMETER_LOW_PERFUSION: "low_perfusion",
    EventType.LOOSE_CUFF: "cuff_too_loose",
    EventType.CLOTHES_ON_SCALE: "",
}


def _artefact_row(sim: SimData, e: Event, kind: Kind) -> int:
    return sim.row_of[(e.device_address or "", int(e.onset.timestamp()), kind.value)]


@pytest.mark.parametrize("spec", P.artefacts, ids=lambda s: s.type.value)
def test_artefacts_rate_flags_and_values(sim: SimData, spec: ArtefactSpec) -> None:
    events = sim.events_of(spec.type.value)
    kind = spec.effects[0].kind
    device_rows = sim.kind(kind) & np.isin(
        sim.table.device_model, [m.name for m in P.models[spec.device]])
    readings = int(device_rows.sum()) + 0  # one row of this kind per reading
    # Earlier artefact types of the same device take their readings first.
    _within(len(events) / readings, spec.probability, 4 * math.sqrt(spec.probability / readings)
            + 0.003, f"{spec.type} rate")
    errors = []
    res = sim.residual()
    for e in events:
        row = _artefact_row(sim, e, kind)
        assert sim.table.flags[row] == ARTEFACT_FLAGS[spec.type], e.event_id
        errors.append(res[row] - dict(e.effects)[kind])
    # Left after the labelled error: the patient's ordinary scatter around baseline and rhythm.
    _within(float(np.mean(errors)), 0.0, 1.0 if kind is not Kind.WEIGHT else 0.3,
            f"{spec.type} value minus baseline minus labelled error")
    flagged = sim.table.flags != ""
    if ARTEFACT_FLAGS[spec.type]:
        with_flag = device_rows & flagged & (sim.table.flags == ARTEFACT_FLAGS[spec.type])
        assert with_flag.sum() == len(events)  # no unlabelled flagged reading


def test_oximeter_artefacts_read_falsely_low(sim: SimData) -> None:
    drops = []
    for typ in (EventType.OXIMETER_MOTION, EventType.OXIMETER_LOW_PERFUSION):
        for e in sim.events_of(typ.value):
            row = _artefact_row(sim, e, Kind.SPO2)
            drops.append(sim.baseline[row] - sim.table.value[row])
    assert np.mean(drops) > 5
    assert np.mean(np.array(drops) > 0) > 0.9


def test_another_person_on_the_scale(sim: SimData) -> None:
    events = sim.events_of(EventType.OTHER_USER_ON_SCALE.value)
    assert len(events) > 30
    users = {d.address: d.user_ids for p in sim.patients for d in p.devices}
    flagged = 0
    for e in events:
        row = _artefact_row(sim, e, Kind.WEIGHT)
        assert abs(sim.table.value[row] - sim.baseline[row]) >= P.household.min_difference_kg - 2.5
        expect = "other_user" if users[e.device_address] else ""
        assert sim.table.flags[row] == expect, e.event_id
        flagged += bool(expect)
    assert 0 < flagged < len(events)  # some scales report the user, some do not
    other = sim.table.flags == "other_user"
    assert other.sum() == flagged


# --- times ------------------------------------------------------------------------------------


def test_times_received_and_sent(sim: SimData) -> None:
    tab = sim.table
    measured = tab.measured_at.astype(np.int64)
    received = tab.received_at.astype(np.int64)
    sent = tab.sent_at.astype(np.int64)
    assert (measured <= received).all() and (received <= sent).all()
    gateway_time = np.char.find(tab.flags.astype(str), "device_time_missing") >= 0
    assert gateway_time.any()
    assert (measured[gateway_time] == received[gateway_time]).all()
    delay = received[~gateway_time] - measured[~gateway_time]
    lo, hi = P.delivery.receive_delay_s
    assert (delay >= lo * 1000 - 1000).all() and (delay <= hi * 1000 + 1000).all()
    # Uplink outages hold some readings back for hours.
    held = (sent - received) > 3_600_000
    assert 0.002 < held.mean() < 0.1
