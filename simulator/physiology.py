"""Virtual patients with known deteriorations: the physiological and behavioural model.

One patient is a baseline per measured quantity, a daily rhythm, slow day-to-day variation,
device reading noise, an adherence pattern (schedule, missed days, stopping) and a list of
events with ground truth: clinical deteriorations (COPD exacerbation, heart-failure
decompensation, infection, dehydration) and non-clinical artefacts (oximeter motion and low
perfusion, a loose cuff, clothes on the scale, another person on the scale).

Pure numpy: every draw comes from a ``numpy.random.Generator`` passed in, never a global RNG.
``simulate_patient`` returns column arrays, not pydantic objects, so that a cohort of
thousands of patient-days is generated in seconds. Every parameter, its value and its
source or rationale are in docs/simulation.md; change both together and bump
``GENERATOR_VERSION`` when the output for a given seed changes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, is_dataclass, replace
from datetime import UTC, date, datetime, timedelta
from enum import Enum, StrEnum
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from vitalvagt.errors import VitalvagtError
from vitalvagt.kinds import KIND_SPECS, Kind
from vitalvagt.quality import Flag
from vitalvagt.settings import DEFAULT_LOCAL_TZ

GENERATOR_VERSION = "1.0.0"
TIMEZONE = DEFAULT_LOCAL_TZ  # the cohort lives in Denmark
DAY_S = 86_400


class SimulatorError(VitalvagtError):
    """Base of the simulator's errors: bad parameters, a cohort that cannot be read or written."""


class Group(StrEnum):
    COPD = "copd"
    HEART_FAILURE = "heart_failure"
    BOTH = "both"  # heart failure with COPD


class DeviceType(StrEnum):
    OXIMETER = "oximeter"
    BP_MONITOR = "bp_monitor"
    SCALE = "scale"
    THERMOMETER = "thermometer"


class EventType(StrEnum):
    # Clinical: the patient changes; evident_at is when they would be admitted or treated.
    COPD_EXACERBATION = "copd_exacerbation"
    HF_DECOMPENSATION = "hf_decompensation"
    INFECTION = "infection"
    DEHYDRATION = "dehydration"
    # Artefacts: one reading is wrong, the patient is unchanged.
    OXIMETER_MOTION = "oximeter_motion"
    OXIMETER_LOW_PERFUSION = "oximeter_low_perfusion"
    LOOSE_CUFF = "loose_cuff"
    CLOTHES_ON_SCALE = "clothes_on_scale"
    OTHER_USER_ON_SCALE = "other_user_on_scale"


CLINICAL_EVENTS = frozenset({EventType.COPD_EXACERBATION, EventType.HF_DECOMPENSATION,
                             EventType.INFECTION, EventType.DEHYDRATION})

# Row order of kinds inside one reading, and the kinds that carry physiological state (the
# mean arterial pressure is derived from systolic and diastolic, as the cuff reports it).
KIND_ORDER: tuple[Kind, ...] = (Kind.SPO2, Kind.PULSE, Kind.BP_SYSTOLIC, Kind.BP_DIASTOLIC,
                                Kind.BP_MEAN, Kind.WEIGHT, Kind.TEMPERATURE)
KIND_INDEX: dict[Kind, int] = {k: i for i, k in enumerate(KIND_ORDER)}
STATE_KINDS: tuple[Kind, ...] = tuple(k for k in KIND_ORDER if k is not Kind.BP_MEAN)
_STATE_INDEX = {k: i for i, k in enumerate(STATE_KINDS)}

# The flags the simulator can set, as bits of Readings.flags.
FLAG_ORDER: tuple[Flag, ...] = (Flag.ERRATIC_SIGNAL, Flag.QUESTIONABLE, Flag.LOW_PERFUSION,
                                Flag.CUFF_TOO_LOOSE, Flag.OTHER_USER, Flag.DEVICE_TIME_MISSING)
_FLAG_BIT = {f: 1 << i for i, f in enumerate(FLAG_ORDER)}

# What the devices can display, intersected with the core's plausible range below.
_DEVICE_RANGE: dict[Kind, tuple[float, float]] = {
    Kind.SPO2: (50, 100),
    Kind.PULSE: (30, 250),
    Kind.BP_SYSTOLIC: (60, 260),
    Kind.BP_DIASTOLIC: (40, 180),
    Kind.BP_MEAN: (40, 220),
    Kind.WEIGHT: (20, 250),
    Kind.TEMPERATURE: (34.0, 42.2),
}
VALUE_RANGE: dict[Kind, tuple[float, float]] = {
    k: (max(lo, KIND_SPECS[k].plausible_min), min(hi, KIND_SPECS[k].plausible_max))
    for k, (lo, hi) in _DEVICE_RANGE.items()
}


# ---------------------------------------------------------------------------------------------
# Parameters


@dataclass(frozen=True, slots=True)
class Normal:
    """A normal distribution truncated to [low, high] (redrawn, not clipped: no spikes at ends)."""

    mean: float
    sd: float
    low: float
    high: float

    def draw(self, rng: np.random.Generator) -> float:
        for _ in range(1000):
            x = rng.normal(self.mean, self.sd)
            if self.low <= x <= self.high:
                return float(x)
        raise SimulatorError(f"{self} is almost never inside its bounds")

    def moments(self) -> tuple[float, float]:
        """Mean and sd of the truncated distribution (for tests and the docs)."""
        a, b = (self.low - self.mean) / self.sd, (self.high - self.mean) / self.sd

        def pdf(x: float) -> float:
            return math.exp(-x * x / 2) / math.sqrt(2 * math.pi)

        def cdf(x: float) -> float:
            return 0.5 * (1 + math.erf(x / math.sqrt(2)))

        z = cdf(b) - cdf(a)
        m = (pdf(a) - pdf(b)) / z
        var = 1 + (a * pdf(a) - b * pdf(b)) / z - m * m
        return self.mean + self.sd * m, self.sd * math.sqrt(var)


@dataclass(frozen=True, slots=True)
class Baselines:
    """Distribution of per-patient baselines (24-hour means at rest) in one group."""

    spo2: Normal
    pulse: Normal
    bp_systolic: Normal
    bp_diastolic: Normal
    weight: Normal
    temperature: Normal
    min_pulse_pressure: float = 20.0  # systolic minus diastolic; diastolic redrawn below it

    def of(self, kind: Kind) -> Normal:
        return getattr(self, kind.value)


@dataclass(frozen=True, slots=True)
class DayVariation:
    """Slow biological variation from day to day: AR(1) with stationary sd and day-lag phi."""

    sd: float
    phi: float


@dataclass(frozen=True, slots=True)
class Diurnal:
    """Daily rhythm: amplitude * cos(2 pi (local hour - peak_hour) / 24)."""

    amplitude: float
    peak_hour: float


@dataclass(frozen=True, slots=True)
class DeviceModel:
    name: str
    type: DeviceType
    kinds: tuple[Kind, ...]  # in KIND_ORDER
    reading_sd: Mapping[Kind, float]  # device error plus moment-to-moment variation
    resolution: Mapping[Kind, float]
    user_ids: bool = False  # reports which household user stepped on (scale)
    has_clock: bool = True  # no clock: the gateway stamps the time (DEVICE_TIME_MISSING)
    session_offset_min: float = 0.0  # when in a measuring session it is used


@dataclass(frozen=True, slots=True)
class Schedule:
    morning_min: Normal  # local minutes after midnight, per patient
    evening_share: float  # share of patients with a second (evening) session
    evening_min: Normal
    evening_devices: tuple[DeviceType, ...]  # scale and thermometer only in the morning
    jitter_min: float  # day-to-day sd around the patient's own time
    device_gap_sd_min: float  # sd of each device's start within a session


@dataclass(frozen=True, slots=True)
class Adherence:
    miss_fraction_beta: tuple[float, float]  # per-patient share of missed days ~ Beta(a, b)
    miss_run_continuation: float  # P(missed tomorrow | missed today): runs of missed days
    evening_skip: float  # an evening session left out on a measuring day
    device_skip: float  # one device left out of a session
    dropout_per_day: float  # hazard of stopping for good


@dataclass(frozen=True, slots=True)
class Effect:
    """A signed change of one kind at the event's peak: uniform in [low, high], present in
    ``probability`` of the events."""

    kind: Kind
    low: float
    high: float
    probability: float = 1.0


@dataclass(frozen=True, slots=True)
class EventSpec:
    type: EventType
    groups: frozenset[Group]
    rate_per_year: float  # per patient-year at risk (not during another event of this type)
    buildup_days: tuple[float, float]  # onset to evident, uniform
    primary: Effect  # its size is the event's magnitude
    secondary: tuple[Effect, ...]
    admit_probability: float
    stay_days: tuple[float, float]  # in hospital after evident: no readings; reset at discharge
    recovery_days: tuple[float, float]  # treated at home: effect fades linearly to zero


@dataclass(frozen=True, slots=True)
class ArtefactSpec:
    type: EventType
    device: DeviceType
    probability: float  # per reading of that device
    effects: tuple[Effect, ...]
    flags: tuple[Flag, ...]


@dataclass(frozen=True, slots=True)
class Household:
    share: float  # patients living with someone who also uses the scale
    weight: Normal
    min_difference_kg: float
    per_reading: float  # P(the other person weighs on a day the patient does)
    delay_min: tuple[float, float]  # after the patient's reading


@dataclass(frozen=True, slots=True)
class Delivery:
    receive_delay_s: tuple[float, float]  # device to gateway (BLE transfer after measuring)
    send_delay_s: tuple[float, float]  # gateway outbox to MQTT when online
    outage_per_day: float  # gateway uplink outages; readings wait in the outbox
    outage_hours: tuple[float, float]


@dataclass(frozen=True)
class SimParams:
    group_mix: Mapping[Group, float]
    baselines: Mapping[Group, Baselines]
    day_variation: Mapping[Kind, DayVariation]
    bp_day_correlation: float
    diurnal: Mapping[Kind, Diurnal]
    kits: Mapping[Group, tuple[DeviceType, ...]]
    models: Mapping[DeviceType, tuple[DeviceModel, ...]]  # one chosen uniformly per patient
    schedule: Schedule
    adherence: Adherence
    events: tuple[EventSpec, ...]
    artefacts: tuple[ArtefactSpec, ...]
    household: Household
    delivery: Delivery

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(self)


def _jsonable(obj: Any) -> Any:
    if is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _jsonable(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, Mapping):
        return {str(_jsonable(k)): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, frozenset | set):
        return sorted(_jsonable(v) for v in obj)
    if isinstance(obj, tuple | list):
        return [_jsonable(v) for v in obj]
    return obj


_ALL = frozenset(Group)
_HF = frozenset({Group.HEART_FAILURE, Group.BOTH})
_COPD = frozenset({Group.COPD, Group.BOTH})

_OXIMETER = DeviceModel(
    "VV-Sim PX1 fingertip oximeter", DeviceType.OXIMETER, (Kind.SPO2, Kind.PULSE),
    {Kind.SPO2: 1.0, Kind.PULSE: 2.0}, {Kind.SPO2: 1, Kind.PULSE: 1}, session_offset_min=5.0,
)
_BP = DeviceModel(
    "VV-Sim BP2 upper-arm monitor", DeviceType.BP_MONITOR,
    (Kind.PULSE, Kind.BP_SYSTOLIC, Kind.BP_DIASTOLIC, Kind.BP_MEAN),
    {Kind.BP_SYSTOLIC: 5.0, Kind.BP_DIASTOLIC: 4.0, Kind.PULSE: 3.0},
    {Kind.BP_SYSTOLIC: 1, Kind.BP_DIASTOLIC: 1, Kind.BP_MEAN: 1, Kind.PULSE: 1},
    session_offset_min=2.0,
)
_SCALES = (
    DeviceModel("VV-Sim WS1 scale (users)", DeviceType.SCALE, (Kind.WEIGHT,),
                {Kind.WEIGHT: 0.1}, {Kind.WEIGHT: 0.05}, user_ids=True),
    DeviceModel("VV-Sim WS2 scale", DeviceType.SCALE, (Kind.WEIGHT,),
                {Kind.WEIGHT: 0.1}, {Kind.WEIGHT: 0.1}),
)
_THERMOMETERS = (
    DeviceModel("VV-Sim TH1 ear thermometer", DeviceType.THERMOMETER, (Kind.TEMPERATURE,),
                {Kind.TEMPERATURE: 0.15}, {Kind.TEMPERATURE: 0.1}, session_offset_min=8.0),
    DeviceModel("VV-Sim TH2 ear thermometer (no clock)", DeviceType.THERMOMETER,
                (Kind.TEMPERATURE,), {Kind.TEMPERATURE: 0.15}, {Kind.TEMPERATURE: 0.1},
                has_clock=False, session_offset_min=8.0),
)

DEFAULT_PARAMS = SimParams(
    group_mix={Group.COPD: 0.5, Group.HEART_FAILURE: 0.4, Group.BOTH: 0.1},
    baselines={
        Group.COPD: Baselines(
            spo2=Normal(93, 2, 87, 98), pulse=Normal(82, 10, 55, 110),
            bp_systolic=Normal(135, 15, 100, 180), bp_diastolic=Normal(78, 9, 55, 105),
            weight=Normal(72, 15, 40, 130), temperature=Normal(36.8, 0.2, 36.2, 37.4),
        ),
        Group.HEART_FAILURE: Baselines(
            spo2=Normal(96, 1.5, 92, 99), pulse=Normal(72, 10, 50, 100),
            bp_systolic=Normal(122, 15, 90, 170), bp_diastolic=Normal(72, 9, 50, 100),
            weight=Normal(84, 17, 45, 150), temperature=Normal(36.8, 0.2, 36.2, 37.4),
        ),
        Group.BOTH: Baselines(
            spo2=Normal(93, 2, 87, 98), pulse=Normal(78, 10, 50, 110),
            bp_systolic=Normal(126, 15, 90, 175), bp_diastolic=Normal(74, 9, 50, 100),
            weight=Normal(80, 17, 45, 150), temperature=Normal(36.8, 0.2, 36.2, 37.4),
        ),
    },
    day_variation={
        Kind.SPO2: DayVariation(1.2, 0.5),
        Kind.PULSE: DayVariation(5.0, 0.5),
        Kind.BP_SYSTOLIC: DayVariation(7.0, 0.4),
        Kind.BP_DIASTOLIC: DayVariation(4.0, 0.4),
        Kind.WEIGHT: DayVariation(0.4, 0.7),
        Kind.TEMPERATURE: DayVariation(0.15, 0.3),
    },
    bp_day_correlation=0.7,
    diurnal={
        Kind.SPO2: Diurnal(0.0, 12.0),
        Kind.PULSE: Diurnal(4.0, 15.0),
        Kind.BP_SYSTOLIC: Diurnal(6.0, 10.0),  # morning surge
        Kind.BP_DIASTOLIC: Diurnal(4.0, 10.0),
        Kind.WEIGHT: Diurnal(0.4, 20.0),  # heavier after the day's food and drink
        Kind.TEMPERATURE: Diurnal(0.3, 18.0),  # circadian peak in the early evening
    },
    kits={
        Group.COPD: (DeviceType.OXIMETER, DeviceType.BP_MONITOR, DeviceType.THERMOMETER),
        Group.HEART_FAILURE: (DeviceType.SCALE, DeviceType.OXIMETER, DeviceType.BP_MONITOR),
        Group.BOTH: (
            DeviceType.SCALE, DeviceType.OXIMETER, DeviceType.BP_MONITOR, DeviceType.THERMOMETER
        ),
    },
    models={
        DeviceType.OXIMETER: (_OXIMETER,),
        DeviceType.BP_MONITOR: (_BP,),
        DeviceType.SCALE: _SCALES,
        DeviceType.THERMOMETER: _THERMOMETERS,
    },
    schedule=Schedule(
        morning_min=Normal(480, 40, 390, 630),
        evening_share=0.25,
        evening_min=Normal(1140, 50, 1020, 1290),
        evening_devices=(DeviceType.OXIMETER, DeviceType.BP_MONITOR),
        jitter_min=20.0,
        device_gap_sd_min=0.5,
    ),
    adherence=Adherence(
        miss_fraction_beta=(2.0, 18.0),
        miss_run_continuation=0.5,
        evening_skip=0.3,
        device_skip=0.03,
        dropout_per_day=0.001,
    ),
    events=(
        EventSpec(
            EventType.COPD_EXACERBATION, _COPD, 1.5, (3, 7),
            Effect(Kind.SPO2, -6, -2),
            (Effect(Kind.PULSE, 5, 20), Effect(Kind.TEMPERATURE, 0.8, 1.8, 0.3)),
            admit_probability=0.5, stay_days=(3, 8), recovery_days=(7, 14),
        ),
        EventSpec(
            EventType.HF_DECOMPENSATION, _HF, 0.8, (3, 14),
            Effect(Kind.WEIGHT, 1, 5),
            (Effect(Kind.SPO2, -4, -1, 0.5), Effect(Kind.PULSE, 5, 15, 0.6)),
            admit_probability=0.6, stay_days=(4, 10), recovery_days=(3, 7),
        ),
        EventSpec(
            EventType.INFECTION, _ALL, 1.0, (1, 3),
            Effect(Kind.TEMPERATURE, 1.0, 2.5),
            (Effect(Kind.PULSE, 6, 15),),
            admit_probability=0.0, stay_days=(0, 0), recovery_days=(3, 7),
        ),
        EventSpec(
            EventType.DEHYDRATION, _HF, 0.4, (1, 4),
            Effect(Kind.WEIGHT, -3.5, -1.5),
            (Effect(Kind.PULSE, 5, 15, 0.7), Effect(Kind.BP_SYSTOLIC, -20, -5),
             Effect(Kind.BP_DIASTOLIC, -10, -3)),
            admit_probability=0.2, stay_days=(2, 5), recovery_days=(2, 5),
        ),
    ),
    artefacts=(
        ArtefactSpec(
            EventType.OXIMETER_MOTION, DeviceType.OXIMETER, 0.02,
            (Effect(Kind.SPO2, -15, -4), Effect(Kind.PULSE, 5, 30)),
            (Flag.ERRATIC_SIGNAL, Flag.QUESTIONABLE),
        ),
        ArtefactSpec(
            EventType.OXIMETER_LOW_PERFUSION, DeviceType.OXIMETER, 0.02,
            (Effect(Kind.SPO2, -10, -3),), (Flag.LOW_PERFUSION,),
        ),
        ArtefactSpec(
            EventType.LOOSE_CUFF, DeviceType.BP_MONITOR, 0.02,
            (Effect(Kind.BP_SYSTOLIC, 10, 30), Effect(Kind.BP_DIASTOLIC, 5, 15)),
            (Flag.CUFF_TOO_LOOSE,),
        ),
        ArtefactSpec(
            EventType.CLOTHES_ON_SCALE, DeviceType.SCALE, 0.05,
            (Effect(Kind.WEIGHT, 0.5, 1.5),), (),
        ),
    ),
    household=Household(
        share=0.3, weight=Normal(78, 15, 45, 140), min_difference_kg=8.0,
        per_reading=0.04, delay_min=(2, 90),
    ),
    delivery=Delivery(
        receive_delay_s=(2, 40), send_delay_s=(0.1, 1.5),
        outage_per_day=0.02, outage_hours=(1, 24),
    ),
)


# ---------------------------------------------------------------------------------------------
# Patient, events, readings


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


_DEVICE_CODE = {DeviceType.OXIMETER: 1, DeviceType.BP_MONITOR: 2, DeviceType.SCALE: 3,
                DeviceType.THERMOMETER: 4}


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
                   admitted: bool) -> np.ndarray:
    """Share of an event's peak effect at times t: a linear rise from onset to evident, then
    (at home) a linear fall to zero at end, or (admitted) full until discharge, then zero."""
    t = np.asarray(t_s, float)
    p = np.zeros_like(t)
    rise = (t >= onset_s) & (t < evident_s)
    p[rise] = (t[rise] - onset_s) / max(evident_s - onset_s, 1.0)
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
            onset = calendar.origin_s + round(t * DAY_S)
            evident = onset + round(build * DAY_S)
            end = evident + round(after * DAY_S)
            out.append(Episode(spec.type, onset, evident, end, admitted, tuple(effects)))
            t = (end - calendar.origin_s) / DAY_S
    return out


def _day_variation(rng: np.random.Generator, days: int, params: SimParams) -> np.ndarray:
    """(days, len(STATE_KINDS)) AR(1) deviations; systolic and diastolic share innovations."""
    k = len(STATE_KINDS)
    sd = np.array([params.day_variation[kd].sd for kd in STATE_KINDS])
    phi = np.array([params.day_variation[kd].phi for kd in STATE_KINDS])
    z = rng.standard_normal((days, k))
    s, d = _STATE_INDEX[Kind.BP_SYSTOLIC], _STATE_INDEX[Kind.BP_DIASTOLIC]
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
                     + dayvar[day, _STATE_INDEX[kind]])
            for ep in episodes:
                delta = dict(ep.effects).get(kind)
                if delta:
                    truth = truth + delta * effect_profile(t_s, ep.onset_s, ep.evident_s,
                                                           ep.end_s, ep.admitted)
            vals[kind] = truth + r_rng.normal(0, m.reading_sd[kind], n)
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
                flags[idx] |= _FLAG_BIT[f]
            for i, r in enumerate(idx):
                eff = tuple((k, round(float(s[i]), 2)) for k, s in sizes.items())
                art_events.append((spec.type, float(t_s[r]), eff, dev.address))
        for kind in list(vals):
            vals[kind] = _round_to(vals[kind], kind, m.resolution[kind])
        if dev.type is DeviceType.BP_MONITOR:
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
    flags = np.full(idx.size, _FLAG_BIT[Flag.OTHER_USER] if dev.model.user_ids else 0, np.int16)
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
        fl = b.flags | (_FLAG_BIT[Flag.DEVICE_TIME_MISSING] if b.gateway_time else 0)
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
