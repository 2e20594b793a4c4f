"""Virtual patients with known deteriorations: the physiological and behavioural simulation.

One patient is a baseline per measured quantity, a daily rhythm, slow day-to-day variation,
device reading noise, an adherence pattern (schedule, missed days, stopping) and a list of
events with ground truth: clinical deteriorations (COPD exacerbation, heart-failure
decompensation, infection, dehydration) and non-clinical artefacts (oximeter motion and low
perfusion, a loose cuff, clothes on the scale, another person on the scale). The parameters
and their values are in simulator/parameters.py.

Pure numpy: every draw comes from a ``numpy.random.Generator`` passed in, never a global RNG.
``simulate_patient`` returns column arrays, not pydantic objects, so that a cohort of
thousands of patient-days is generated in seconds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np

from simulator.errors import SimulatorError
from simulator.parameters import (
    CLINICAL_EVENTS,
    DAY_S,
    DEFAULT_PARAMS,
    FLAG_BIT,
    KIND_INDEX,
    STATE_INDEX,
    STATE_KINDS,
    TIMEZONE,
    VALUE_RANGE,
    DeviceModel,
    EventType,
    Group,
    SimParams,
)
from vitalvagt.devices import DeviceType
from vitalvagt.kinds import Kind
from vitalvagt.quality import Flag


@dataclass(frozen=True, slots=True)
class Calendar:
    """The simulated days: local dates in ``timezone`` and their midnights in Unix seconds."""

    start: date
    days: int
    timezone: str
    # 00:00 local of each day, using that day's noon UTC offset: exact for every time after the
    # 02:00-03:00 daylight-saving switch, which is all a measuring schedule uses.
    day_start_s: np.ndarray = field(compare=False)

    @classmethod
    def make(cls, start: date, days: int, timezone: str = TIMEZONE) -> Calendar:
        if days < 1:
            raise SimulatorError(f"days must be at least 1, not {days}")
        zone = ZoneInfo(timezone)
        starts = np.empty(days, np.int64)
        for d in range(days):
            day = start + timedelta(days=d)
            offset = datetime(day.year, day.month, day.day, 12, tzinfo=zone).utcoffset()
            midnight = datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()
            starts[d] = int(midnight) - int(offset.total_seconds() if offset else 0)
        starts.flags.writeable = False
        return cls(start, days, timezone, starts)

    @property
    def origin_s(self) -> int:
        return int(self.day_start_s[0])

    @property
    def end_s(self) -> int:
        return self.origin_s + self.days * DAY_S


@dataclass(frozen=True, slots=True)
class Device:
    type: DeviceType
    model: DeviceModel
    address: str


@dataclass(frozen=True, slots=True)
class PatientProfile:
    index: int
    patient_id: str
    gateway_id: str
    group: Group
    baseline: Mapping[Kind, float]  # 24-hour means of the STATE_KINDS
    morning_min: float  # scheduled local time, minutes after midnight
    evening_min: float | None
    miss_fraction: float
    dropout_day: int | None  # first day without any reading, if the patient stops
    devices: tuple[Device, ...]
    other_user_weight: float | None  # someone else in the home who uses the scale
    # Hard variant: multipliers of the day-to-day variation and the reading noise.
    noise: tuple[float, float] | None = None


@dataclass(frozen=True, slots=True)
class Event:
    """Ground truth. Times are UTC; ``evident_at`` is None for artefacts (never clinical)."""

    event_id: str
    patient_id: str
    type: EventType
    onset: datetime
    evident_at: datetime | None
    end: datetime
    magnitude: float  # size of the primary effect, in the unit of magnitude_kind
    magnitude_kind: Kind
    effects: tuple[tuple[Kind, float], ...]  # signed change of each kind at the peak
    admitted: bool = False
    device_address: str | None = None  # artefacts: the device whose reading was wrong

    @property
    def clinical(self) -> bool:
        return self.type in CLINICAL_EVENTS


@dataclass(frozen=True, slots=True, eq=False)
class Readings:
    """One row per observation, sorted by measured time, device, then KIND_ORDER."""

    kind: np.ndarray  # int8: index into KIND_ORDER
    value: np.ndarray  # float64, rounded to the device's resolution
    measured_us: np.ndarray  # int64 Unix microseconds (UTC)
    received_us: np.ndarray  # gateway received the reading
    sent_us: np.ndarray  # gateway published it (later during an uplink outage)
    device: np.ndarray  # int8: index into PatientProfile.devices
    reading: np.ndarray  # int32: rows of one reading share it
    flags: np.ndarray  # int16: bits over FLAG_ORDER
    gateway_time: np.ndarray  # bool: no device clock, measured_us is the gateway's time

    def __len__(self) -> int:
        return int(self.kind.size)


@dataclass(frozen=True, slots=True, eq=False)
class PatientSim:
    profile: PatientProfile
    readings: Readings
    events: tuple[Event, ...]


def patient_id(index: int) -> str:
    return f"sim-p{index + 1:05d}"


def gateway_id(index: int) -> str:
    return f"sim-gw-{index + 1:05d}"


# Fixed per type: a cohort's addresses do not change when vitalvagt.devices gains a type.
_DEVICE_CODE = {DeviceType.OXIMETER: 1, DeviceType.BP: 2, DeviceType.SCALE: 3,
                DeviceType.THERMOMETER: 4, DeviceType.HR: 5}


def device_address(index: int, device_type: DeviceType) -> str:
    """A BLE static random address (top bits 11), unique per patient and device type."""
    n = index + 1
    return (f"C0:5A:{_DEVICE_CODE[device_type]:02X}:{(n >> 16) & 255:02X}:"
            f"{(n >> 8) & 255:02X}:{n & 255:02X}")


def diurnal_offset(kind: Kind, local_hour: np.ndarray | float, params: SimParams = DEFAULT_PARAMS
                   ) -> np.ndarray:
    d = params.diurnal.get(kind)
    if d is None or d.amplitude == 0:
        return np.zeros_like(np.asarray(local_hour, float))
    return d.amplitude * np.cos(2 * np.pi * (np.asarray(local_hour, float) - d.peak_hour) / 24)


def effect_profile(t_s: np.ndarray, onset_s: float, evident_s: float, end_s: float,
                   admitted: bool, shape: float = 1.0) -> np.ndarray:
    """Share of an event's peak effect at times t: a linear rise from onset to evident (the
    time share to the power ``shape``, hard variant), then (at home) a linear fall to zero at
    end, or (admitted) full until discharge, then zero."""
    t = np.asarray(t_s, float)
    p = np.zeros_like(t)
    rise = (t >= onset_s) & (t < evident_s)
    p[rise] = (t[rise] - onset_s) / max(evident_s - onset_s, 1.0)
    if shape != 1.0:
        p[rise] = p[rise] ** shape
    after = (t >= evident_s) & (t < end_s)
    if admitted:
        p[after] = 1.0
    else:
        p[after] = 1.0 - (t[after] - evident_s) / max(end_s - evident_s, 1.0)
    return p


def draw_group(rng: np.random.Generator, params: SimParams = DEFAULT_PARAMS) -> Group:
    groups = list(params.group_mix)
    weights = np.array([params.group_mix[g] for g in groups], float)
    return groups[int(rng.choice(len(groups), p=weights / weights.sum()))]


def draw_missed_days(rng: np.random.Generator, days: int, miss_fraction: float,
                     continuation: float) -> np.ndarray:
    """Two-state Markov chain over days whose stationary miss share is ``miss_fraction`` and
    whose missed runs have mean length 1 / (1 - continuation)."""
    p_start = min(1.0, miss_fraction * (1 - continuation) / max(1 - miss_fraction, 1e-9))
    u = rng.random(days)
    missed = np.zeros(days, bool)
    state = bool(u[0] < miss_fraction)  # start in the stationary distribution
    missed[0] = state
    for d in range(1, days):
        state = bool(u[d] < (continuation if state else p_start))
        missed[d] = state
    return missed


def draw_profile(rng: np.random.Generator, index: int, group: Group, days: int,
                 params: SimParams = DEFAULT_PARAMS) -> PatientProfile:
    base = params.baselines[group]
    baseline = {k: base.of(k).draw(rng) for k in STATE_KINDS}
    while baseline[Kind.BP_SYSTOLIC] - baseline[Kind.BP_DIASTOLIC] < base.min_pulse_pressure:
        baseline[Kind.BP_DIASTOLIC] = base.bp_diastolic.draw(rng)
    baseline = {k: round(v, 2) for k, v in baseline.items()}
    sch, adh = params.schedule, params.adherence
    morning = round(sch.morning_min.draw(rng), 1)
    evening = round(sch.evening_min.draw(rng), 1) if rng.random() < sch.evening_share else None
    miss = round(float(rng.beta(*adh.miss_fraction_beta)), 4)
    stop = rng.exponential(1 / adh.dropout_per_day) if adh.dropout_per_day > 0 else math.inf
    dropout = int(stop) if stop < days else None
    devices = []
    for dtype in params.kits[group]:
        models = params.models[dtype]
        model = models[int(rng.integers(len(models)))]
        devices.append(Device(dtype, model, device_address(index, dtype)))
    other = None
    if DeviceType.SCALE in params.kits[group] and rng.random() < params.household.share:
        hh = params.household
        for _ in range(1000):
            other = round(hh.weight.draw(rng), 1)
            if abs(other - baseline[Kind.WEIGHT]) >= hh.min_difference_kg:
                break
    return PatientProfile(index, patient_id(index), gateway_id(index), group, baseline, morning,
                          evening, miss, dropout, tuple(devices), other)


@dataclass(frozen=True, slots=True)
class Episode:
    type: EventType
    onset_s: float
    evident_s: float
    end_s: float
    admitted: bool
    effects: tuple[tuple[Kind, float], ...]
    shape: float = 1.0  # exponent of the rise (hard variant; 1: linear)


def draw_episodes(rng: np.random.Generator, group: Group, calendar: Calendar,
                  params: SimParams = DEFAULT_PARAMS) -> list[Episode]:
    """Clinical events: per type a Poisson process over the time not already in such an event."""
    out: list[Episode] = []
    for spec in params.events:
        if group not in spec.groups or spec.rate_per_year <= 0:
            continue
        t = 0.0  # days since the calendar's first midnight
        while True:
            t += rng.exponential(365.0 / spec.rate_per_year)
            if t >= calendar.days:
                break
            build = rng.uniform(*spec.buildup_days)
            admitted = bool(rng.random() < spec.admit_probability)
            after = rng.uniform(*(spec.stay_days if admitted else spec.recovery_days))
            primary = rng.uniform(spec.primary.low, spec.primary.high)
            effects = [(spec.primary.kind, round(primary, 2))]
            for eff in spec.secondary:
                present, size = rng.random() < eff.probability, rng.uniform(eff.low, eff.high)
                if present:
                    effects.append((eff.kind, round(size, 2)))
            shape = 1.0
            if spec.primary_probability < 1.0:  # hard variant: maybe only the other signs
                if rng.random() >= spec.primary_probability and len(effects) > 1:
                    effects = effects[1:]
            if spec.shape is not None:
                lo, hi = math.log(spec.shape[0]), math.log(spec.shape[1])
                shape = round(math.exp(rng.uniform(lo, hi)), 3)
            onset = calendar.origin_s + round(t * DAY_S)
            evident = onset + round(build * DAY_S)
            end = evident + round(after * DAY_S)
            out.append(Episode(spec.type, onset, evident, end, admitted, tuple(effects), shape))
            t = (end - calendar.origin_s) / DAY_S
    return out


def _day_variation(rng: np.random.Generator, days: int, params: SimParams) -> np.ndarray:
    """(days, len(STATE_KINDS)) AR(1) deviations; systolic and diastolic share innovations."""
    k = len(STATE_KINDS)
    sd = np.array([params.day_variation[kd].sd for kd in STATE_KINDS])
    phi = np.array([params.day_variation[kd].phi for kd in STATE_KINDS])
    z = rng.standard_normal((days, k))
    s, d = STATE_INDEX[Kind.BP_SYSTOLIC], STATE_INDEX[Kind.BP_DIASTOLIC]
    rho = params.bp_day_correlation
    z[:, d] = rho * z[:, s] + math.sqrt(1 - rho * rho) * z[:, d]
    x = np.empty((days, k))
    x[0] = z[0]
    innov = np.sqrt(1 - phi * phi)
    for i in range(1, days):
        x[i] = phi * x[i - 1] + innov * z[i]
    return x * sd


# An artefact as found while generating: type, Unix seconds, effects, device address.
_Artefact = tuple[EventType, float, tuple[tuple[Kind, float], ...], str]


def _round_to(values: np.ndarray, kind: Kind, resolution: float) -> np.ndarray:
    lo, hi = VALUE_RANGE[kind]
    r = np.round(np.round(values / resolution) * resolution, 2)
    return np.clip(r, lo, hi)


@dataclass(frozen=True, slots=True, eq=False)
class _Block:
    """Readings of one device, before they are flattened into observation rows."""

    device: int
    t_s: np.ndarray  # int64 measured Unix seconds
    values: dict[Kind, np.ndarray]
    flags: np.ndarray
    gateway_time: bool


def simulate_patient(seed: int, index: int, calendar: Calendar, *, group: Group | None = None,
                     params: SimParams = DEFAULT_PARAMS) -> PatientSim:
    """Simulate patient ``index`` of the cohort seeded ``seed``: a pure function of both.

    The patient's generators come from ``SeedSequence(seed, spawn_key=(index, k))``, which is
    ``SeedSequence(seed).spawn(n)[index].spawn(...)[k]`` for any cohort size n: patient i is the
    same whether the cohort has 10 or 10,000 patients. ``group`` None draws it from
    ``params.group_mix``.
    """
    rngs = [np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index, k)))
            for k in range(7)]
    g_rng, p_rng, a_rng, e_rng, v_rng, r_rng, x_rng = rngs
    grp = draw_group(g_rng, params) if group is None else group
    prof = draw_profile(p_rng, index, grp, calendar.days, params)
    episodes = draw_episodes(e_rng, grp, calendar, params)
    dayvar = _day_variation(v_rng, calendar.days, params)
    if params.noise is not None:  # hard variant: its own generator, the others unchanged
        n_rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index, 7)))
        prof = replace(prof, noise=params.noise.draw(n_rng))
        dayvar = dayvar * prof.noise[0]

    # Sessions: (day, local minute) on measuring days before the patient stops.
    adh, sch = params.adherence, params.schedule
    missed = draw_missed_days(a_rng, calendar.days, prof.miss_fraction, adh.miss_run_continuation)
    days = np.flatnonzero(~missed)
    if prof.dropout_day is not None:
        days = days[days < prof.dropout_day]
    sess_day = [days]
    sess_min = [prof.morning_min + a_rng.normal(0, sch.jitter_min, days.size)]
    sess_eve = [np.zeros(days.size, bool)]
    if prof.evening_min is not None:
        eve = days[a_rng.random(days.size) >= adh.evening_skip]
        sess_day.append(eve)
        sess_min.append(prof.evening_min + a_rng.normal(0, sch.jitter_min, eve.size))
        sess_eve.append(np.ones(eve.size, bool))
    s_day = np.concatenate(sess_day)
    s_min = np.clip(np.concatenate(sess_min), 300, 1380)
    s_eve = np.concatenate(sess_eve)
    stays = [(ep.evident_s, ep.end_s) for ep in episodes if ep.admitted]

    blocks: list[_Block] = []
    art_events: list[_Artefact] = []
    for j, dev in enumerate(prof.devices):
        m = dev.model
        use = a_rng.random(s_day.size) >= adh.device_skip
        if dev.type not in sch.evening_devices:
            use &= ~s_eve
        day, minute = s_day[use], s_min[use] + m.session_offset_min
        minute = minute + r_rng.normal(0, sch.device_gap_sd_min, minute.size)
        t_s = (calendar.day_start_s[day] + np.round(minute * 60)).astype(np.int64)
        home = np.ones(t_s.size, bool)
        for admitted_s, discharged_s in stays:  # no readings from hospital
            home &= (t_s < admitted_s) | (t_s >= discharged_s)
        day, minute, t_s = day[home], minute[home], t_s[home]
        hour = minute / 60
        n = t_s.size
        vals: dict[Kind, np.ndarray] = {}
        for kind in m.kinds:
            if kind is Kind.BP_MEAN:
                continue
            truth = (prof.baseline[kind] + diurnal_offset(kind, hour, params)
                     + dayvar[day, STATE_INDEX[kind]])
            for ep in episodes:
                delta = dict(ep.effects).get(kind)
                if delta:
                    truth = truth + delta * effect_profile(t_s, ep.onset_s, ep.evident_s,
                                                           ep.end_s, ep.admitted, ep.shape)
            sd = m.reading_sd[kind] if prof.noise is None else m.reading_sd[kind] * prof.noise[1]
            vals[kind] = truth + r_rng.normal(0, sd, n)
        flags = np.zeros(n, np.int16)
        hit_any = np.zeros(n, bool)
        for spec in params.artefacts:
            if spec.device is not dev.type:
                continue
            hit = (x_rng.random(n) < spec.probability) & ~hit_any
            hit_any |= hit
            idx = np.flatnonzero(hit)
            sizes = {e.kind: x_rng.uniform(e.low, e.high, idx.size) for e in spec.effects}
            for kind, size in sizes.items():
                vals[kind][idx] += size
            for f in spec.flags:
                flags[idx] |= FLAG_BIT[f]
            for i, r in enumerate(idx):
                eff = tuple((k, round(float(s[i]), 2)) for k, s in sizes.items())
                art_events.append((spec.type, float(t_s[r]), eff, dev.address))
        for kind in list(vals):
            vals[kind] = _round_to(vals[kind], kind, m.resolution[kind])
        if dev.type is DeviceType.BP:
            sys_, dia = vals[Kind.BP_SYSTOLIC], vals[Kind.BP_DIASTOLIC]
            vals[Kind.BP_DIASTOLIC] = dia = np.minimum(dia, sys_ - 10)
            vals[Kind.BP_MEAN] = _round_to(dia + (sys_ - dia) / 3, Kind.BP_MEAN, 1)
        blocks.append(_Block(j, t_s, vals, flags, not m.has_clock))
        if dev.type is DeviceType.SCALE and prof.other_user_weight is not None:
            blocks.append(_other_user(x_rng, j, dev, t_s, prof, params, art_events))
    readings = _flatten(blocks, prof, x_rng, calendar, params)
    events = _events(prof, episodes, art_events)
    return PatientSim(prof, readings, events)


def _other_user(rng: np.random.Generator, j: int, dev: Device, t_s: np.ndarray,
                prof: PatientProfile, params: SimParams, art_events: list[_Artefact]) -> _Block:
    """Someone else weighs on the patient's scale a little after the patient did."""
    hh = params.household
    weight = prof.other_user_weight or 0.0
    idx = np.flatnonzero(rng.random(t_s.size) < hh.per_reading)
    t = t_s[idx] + np.round(rng.uniform(*hh.delay_min, idx.size) * 60).astype(np.int64)
    noise = rng.normal(0, params.day_variation[Kind.WEIGHT].sd, idx.size)
    w = _round_to(weight + noise, Kind.WEIGHT, dev.model.resolution[Kind.WEIGHT])
    flags = np.full(idx.size, FLAG_BIT[Flag.OTHER_USER] if dev.model.user_ids else 0, np.int16)
    for ti, wi in zip(t, w, strict=True):
        diff = round(float(wi) - prof.baseline[Kind.WEIGHT], 2)
        art_events.append((EventType.OTHER_USER_ON_SCALE, float(ti), ((Kind.WEIGHT, diff),),
                           dev.address))
    return _Block(j, t, {Kind.WEIGHT: w}, flags, not dev.model.has_clock)


def _flatten(blocks: Sequence[_Block], prof: PatientProfile, rng: np.random.Generator,
             calendar: Calendar, params: SimParams) -> Readings:
    dl = params.delivery
    kind_l, val_l, t_l, dev_l, read_l, flag_l, gw_l = [], [], [], [], [], [], []
    rec_l = []
    first = 0
    for b in blocks:
        n = b.t_s.size
        rec = b.t_s * 1_000_000 + np.round(rng.uniform(*dl.receive_delay_s, n) * 1000) * 1000
        rec = rec.astype(np.int64)
        # A device without a clock: the gateway's receive time is the measured time.
        meas = rec if b.gateway_time else b.t_s * 1_000_000
        fl = b.flags | (FLAG_BIT[Flag.DEVICE_TIME_MISSING] if b.gateway_time else 0)
        reading = np.arange(first, first + n, dtype=np.int32)
        first += n
        for kind in sorted(b.values, key=KIND_INDEX.__getitem__):
            kind_l.append(np.full(n, KIND_INDEX[kind], np.int8))
            val_l.append(b.values[kind])
            t_l.append(meas)
            rec_l.append(rec)
            dev_l.append(np.full(n, b.device, np.int8))
            read_l.append(reading)
            flag_l.append(fl.astype(np.int16))
            gw_l.append(np.full(n, b.gateway_time))
    if not kind_l:
        e = np.empty(0)
        return Readings(e.astype(np.int8), e, e.astype(np.int64), e.astype(np.int64),
                        e.astype(np.int64), e.astype(np.int8), e.astype(np.int32),
                        e.astype(np.int16), e.astype(bool))
    kind, meas, dev = np.concatenate(kind_l), np.concatenate(t_l), np.concatenate(dev_l)
    order = np.lexsort((kind, dev, meas))
    reading = np.concatenate(read_l)[order]
    rec = np.concatenate(rec_l)[order]
    # Gateway publishes each reading right away, or at the end of an uplink outage.
    n_read = first
    send = rng.uniform(*dl.send_delay_s, n_read)
    sent_by_reading = np.zeros(n_read, np.int64)
    sent_by_reading[reading] = rec + np.round(send[reading] * 1000).astype(np.int64) * 1000
    n_out = rng.poisson(dl.outage_per_day * calendar.days)
    starts = rng.uniform(calendar.origin_s, calendar.end_s, n_out) * 1e6
    lengths = rng.uniform(*dl.outage_hours, n_out) * 3600e6
    for s, ln in zip(starts, lengths, strict=True):
        inside = (sent_by_reading >= s) & (sent_by_reading < s + ln)
        sent_by_reading[inside] = int(s + ln)
    return Readings(kind[order], np.concatenate(val_l)[order], meas[order], rec,
                    sent_by_reading[reading], dev[order], reading,
                    np.concatenate(flag_l)[order], np.concatenate(gw_l)[order])


def _utc(t_s: float) -> datetime:
    return datetime.fromtimestamp(round(t_s), UTC)


def _events(prof: PatientProfile, episodes: Sequence[Episode],
            artefacts: Sequence[_Artefact]) -> tuple[Event, ...]:
    out = []
    for ep in episodes:
        kind, size = ep.effects[0]
        out.append(Event("", prof.patient_id, ep.type, _utc(ep.onset_s), _utc(ep.evident_s),
                         _utc(ep.end_s), round(abs(size), 2), kind, ep.effects, ep.admitted))
    for typ, t, effects, address in artefacts:
        kind, size = effects[0]
        out.append(Event("", prof.patient_id, typ, _utc(t), None, _utc(t), round(abs(size), 2),
                         kind, effects, False, address))
    out.sort(key=lambda e: (e.onset, e.type.value, e.device_address or ""))
    return tuple(replace(e, event_id=f"{prof.patient_id}-e{i + 1:04d}") for i, e in enumerate(out))


class ContinuousOximetry:
    """An oximeter worn for hours (PLX Continuous, about one reading a second), as some COPD
    patients wear one at night: the patient's baseline and daily rhythm, the effects of their
    clinical events at that moment, a slow wander of the signal over minutes (AR(1), time
    constant ``WANDER_TAU_S``) and the device's reading noise, rounded to its resolution.

    Stateful (the wander goes on from one call to the next): ``read`` takes increasing Unix
    seconds. Draws come from ``rng`` only.
    """

    KINDS = (Kind.SPO2, Kind.PULSE)
    WANDER_SD: Mapping[Kind, float] = {Kind.SPO2: 0.8, Kind.PULSE: 3.0}
    WANDER_TAU_S = 120.0

    def __init__(self, rng: np.random.Generator, baseline: Mapping[Kind, float],
                 events: Sequence[Event] = (), *, params: SimParams = DEFAULT_PARAMS,
                 timezone: str = TIMEZONE) -> None:  # fmt: skip
        self._rng, self._params = rng, params
        self._model = params.models[DeviceType.OXIMETER][0]
        self._base = {k: float(baseline[k]) for k in self.KINDS}
        self._events = [e for e in events if e.clinical and e.evident_at is not None]
        self._zone = ZoneInfo(timezone)
        self._wander = {k: float(rng.normal(0, self.WANDER_SD[k])) for k in self.KINDS}
        self._last_s: float | None = None

    def read(self, t_s: Sequence[float]) -> dict[Kind, np.ndarray]:
        """The readings at the (increasing) times ``t_s``, per kind."""
        t = np.asarray(t_s, float)
        out = {k: np.empty(t.size) for k in self.KINDS}
        hours = np.array([
            (d := datetime.fromtimestamp(x, self._zone)).hour + d.minute / 60 + d.second / 3600
            for x in t
        ])  # fmt: skip
        for kind in self.KINDS:
            truth = self._base[kind] + diurnal_offset(kind, hours, self._params)
            for e in self._events:
                delta = dict(e.effects).get(kind)
                if delta and e.evident_at is not None:
                    truth = truth + delta * effect_profile(
                        t, e.onset.timestamp(), e.evident_at.timestamp(), e.end.timestamp(),
                        e.admitted,
                    )  # fmt: skip
            out[kind] = truth
        last = self._last_s
        for i, x in enumerate(t):
            phi = math.exp(-(x - last) / self.WANDER_TAU_S) if last is not None else 1.0
            for kind in self.KINDS:
                sd = self.WANDER_SD[kind] * math.sqrt(1 - phi * phi)
                self._wander[kind] = phi * self._wander[kind] + float(self._rng.normal(0, sd))
                out[kind][i] += self._wander[kind]
            last = float(x)
        self._last_s = last
        for kind in self.KINDS:
            noisy = out[kind] + self._rng.normal(0, self._model.reading_sd[kind], t.size)
            out[kind] = _round_to(noisy, kind, self._model.resolution[kind])
        return out
