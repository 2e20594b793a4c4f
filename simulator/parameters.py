"""The virtual patients' parameters: what the model is made of and the values it uses.

The groups, event types and kinds a simulated reading can have, the parameter dataclasses
(baselines, variation, devices, schedule, adherence, events, artefacts, household, delivery)
and ``DEFAULT_PARAMS``, their values. simulator/physiology.py simulates patients from them.
Every parameter, its value and its source or rationale are in docs/simulation.md; change both
together and bump ``GENERATOR_VERSION`` when the output for a given seed changes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass, replace
from enum import Enum, StrEnum
from typing import Any

import numpy as np

from simulator.errors import SimulatorError
from vitalvagt.devices import DeviceType
from vitalvagt.kinds import KIND_SPECS, Kind
from vitalvagt.quality import Flag
from vitalvagt.settings import DEFAULT_LOCAL_TZ

GENERATOR_VERSION = "1.1.0"  # 1.1.0: device type "bp_monitor" is "bp" (vitalvagt.devices)
TIMEZONE = DEFAULT_LOCAL_TZ  # the cohort lives in Denmark
DAY_S = 86_400


class Group(StrEnum):
    COPD = "copd"
    HEART_FAILURE = "heart_failure"
    BOTH = "both"  # heart failure with COPD


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
    # Hard variant only. An artefact: a falsely low SpO2 the oximeter did not flag.
    OXIMETER_SPURIOUS_LOW = "oximeter_spurious_low"
    # Hard variant only. Benign look-alikes: the patient changes, but nothing needs doing.
    BENIGN_FEVER = "benign_fever"  # a passing fever (a cold) without deterioration
    WEIGHT_DRIFT = "weight_drift"  # a slow gain over weeks (appetite, season), not fluid


CLINICAL_EVENTS = frozenset(
    {
        EventType.COPD_EXACERBATION,
        EventType.HF_DECOMPENSATION,
        EventType.INFECTION,
        EventType.DEHYDRATION,
    }
)

# Non-clinical episodes (evident_at is their peak; alerting on them is a false alert).
BENIGN_EVENTS = frozenset({EventType.BENIGN_FEVER, EventType.WEIGHT_DRIFT})

# Hard-variant parameters: in cohort.json only when not at their default (a standard
# cohort's cohort.json stays byte-identical to earlier versions').
_HARD_ONLY = {"omit_default": True}

# Row order of kinds inside one reading, and the kinds that carry physiological state (the
# mean arterial pressure is derived from systolic and diastolic, as the cuff reports it).
KIND_ORDER: tuple[Kind, ...] = (
    Kind.SPO2,
    Kind.PULSE,
    Kind.BP_SYSTOLIC,
    Kind.BP_DIASTOLIC,
    Kind.BP_MEAN,
    Kind.WEIGHT,
    Kind.TEMPERATURE,
)
KIND_INDEX: dict[Kind, int] = {k: i for i, k in enumerate(KIND_ORDER)}
STATE_KINDS: tuple[Kind, ...] = tuple(k for k in KIND_ORDER if k is not Kind.BP_MEAN)
STATE_INDEX = {k: i for i, k in enumerate(STATE_KINDS)}

# The flags the simulator can set, as bits of Readings.flags.
FLAG_ORDER: tuple[Flag, ...] = (
    Flag.ERRATIC_SIGNAL,
    Flag.QUESTIONABLE,
    Flag.LOW_PERFUSION,
    Flag.CUFF_TOO_LOOSE,
    Flag.OTHER_USER,
    Flag.DEVICE_TIME_MISSING,
)
FLAG_BIT = {f: 1 << i for i, f in enumerate(FLAG_ORDER)}

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
    # Hard variant: the primary change is present in this share of events (absent: the event
    # shows only its secondary changes; an event keeps at least one change).
    primary_probability: float = field(default=1.0, metadata=_HARD_ONLY)
    # Hard variant: the rise from onset to evident is (time share) ** p, p log-uniform in
    # this range (p < 1 early and fast, p > 1 slow then late); None: linear (p = 1).
    shape: tuple[float, float] | None = field(default=None, metadata=_HARD_ONLY)


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


@dataclass(frozen=True, slots=True)
class PatientNoise:
    """Hard variant: per-patient multipliers of the day-to-day variation and of the reading
    noise, each log-normal with this median and log-sd, clipped to [low, high]."""

    median: float
    log_sd: float
    low: float
    high: float

    def draw(self, rng: np.random.Generator) -> tuple[float, float]:
        day, reading = np.clip(self.median * np.exp(rng.normal(0, self.log_sd, 2)),
                               self.low, self.high)  # fmt: skip
        return round(float(day), 3), round(float(reading), 3)


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
    variant: str = field(default="standard", metadata=_HARD_ONLY)
    noise: PatientNoise | None = field(default=None, metadata=_HARD_ONLY)

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(self)


def _jsonable(obj: Any) -> Any:
    if is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _jsonable(getattr(obj, f.name)) for f in fields(obj)
                if not (f.metadata.get("omit_default") and getattr(obj, f.name) == f.default)}
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
    "VV-Sim PX1 fingertip oximeter",
    DeviceType.OXIMETER,
    (Kind.SPO2, Kind.PULSE),
    {Kind.SPO2: 1.0, Kind.PULSE: 2.0},
    {Kind.SPO2: 1, Kind.PULSE: 1},
    session_offset_min=5.0,
)
_BP = DeviceModel(
    "VV-Sim BP2 upper-arm monitor",
    DeviceType.BP,
    (Kind.PULSE, Kind.BP_SYSTOLIC, Kind.BP_DIASTOLIC, Kind.BP_MEAN),
    {Kind.BP_SYSTOLIC: 5.0, Kind.BP_DIASTOLIC: 4.0, Kind.PULSE: 3.0},
    {Kind.BP_SYSTOLIC: 1, Kind.BP_DIASTOLIC: 1, Kind.BP_MEAN: 1, Kind.PULSE: 1},
    session_offset_min=2.0,
)
_SCALES = (
    DeviceModel(
        "VV-Sim WS1 scale (users)",
        DeviceType.SCALE,
        (Kind.WEIGHT,),
        {Kind.WEIGHT: 0.1},
        {Kind.WEIGHT: 0.05},
        user_ids=True,
    ),
    DeviceModel(
        "VV-Sim WS2 scale", DeviceType.SCALE, (Kind.WEIGHT,), {Kind.WEIGHT: 0.1}, {Kind.WEIGHT: 0.1}
    ),
)
_THERMOMETERS = (
    DeviceModel(
        "VV-Sim TH1 ear thermometer",
        DeviceType.THERMOMETER,
        (Kind.TEMPERATURE,),
        {Kind.TEMPERATURE: 0.15},
        {Kind.TEMPERATURE: 0.1},
        session_offset_min=8.0,
    ),
    DeviceModel(
        "VV-Sim TH2 ear thermometer (no clock)",
        DeviceType.THERMOMETER,
        (Kind.TEMPERATURE,),
        {Kind.TEMPERATURE: 0.15},
        {Kind.TEMPERATURE: 0.1},
        has_clock=False,
        session_offset_min=8.0,
    ),
)

DEFAULT_PARAMS = SimParams(
    group_mix={Group.COPD: 0.5, Group.HEART_FAILURE: 0.4, Group.BOTH: 0.1},
    baselines={
        Group.COPD: Baselines(
            spo2=Normal(93, 2, 87, 98),
            pulse=Normal(82, 10, 55, 110),
            bp_systolic=Normal(135, 15, 100, 180),
            bp_diastolic=Normal(78, 9, 55, 105),
            weight=Normal(72, 15, 40, 130),
            temperature=Normal(36.8, 0.2, 36.2, 37.4),
        ),
        Group.HEART_FAILURE: Baselines(
            spo2=Normal(96, 1.5, 92, 99),
            pulse=Normal(72, 10, 50, 100),
            bp_systolic=Normal(122, 15, 90, 170),
            bp_diastolic=Normal(72, 9, 50, 100),
            weight=Normal(84, 17, 45, 150),
            temperature=Normal(36.8, 0.2, 36.2, 37.4),
        ),
        Group.BOTH: Baselines(
            spo2=Normal(93, 2, 87, 98),
            pulse=Normal(78, 10, 50, 110),
            bp_systolic=Normal(126, 15, 90, 175),
            bp_diastolic=Normal(74, 9, 50, 100),
            weight=Normal(80, 17, 45, 150),
            temperature=Normal(36.8, 0.2, 36.2, 37.4),
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
        Group.COPD: (DeviceType.OXIMETER, DeviceType.BP, DeviceType.THERMOMETER),
        Group.HEART_FAILURE: (DeviceType.SCALE, DeviceType.OXIMETER, DeviceType.BP),
        Group.BOTH: (DeviceType.SCALE, DeviceType.OXIMETER, DeviceType.BP, DeviceType.THERMOMETER),
    },
    models={
        DeviceType.OXIMETER: (_OXIMETER,),
        DeviceType.BP: (_BP,),
        DeviceType.SCALE: _SCALES,
        DeviceType.THERMOMETER: _THERMOMETERS,
    },
    schedule=Schedule(
        morning_min=Normal(480, 40, 390, 630),
        evening_share=0.25,
        evening_min=Normal(1140, 50, 1020, 1290),
        evening_devices=(DeviceType.OXIMETER, DeviceType.BP),
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
            EventType.COPD_EXACERBATION,
            _COPD,
            1.5,
            (3, 7),
            Effect(Kind.SPO2, -6, -2),
            (Effect(Kind.PULSE, 5, 20), Effect(Kind.TEMPERATURE, 0.8, 1.8, 0.3)),
            admit_probability=0.5,
            stay_days=(3, 8),
            recovery_days=(7, 14),
        ),
        EventSpec(
            EventType.HF_DECOMPENSATION,
            _HF,
            0.8,
            (3, 14),
            Effect(Kind.WEIGHT, 1, 5),
            (Effect(Kind.SPO2, -4, -1, 0.5), Effect(Kind.PULSE, 5, 15, 0.6)),
            admit_probability=0.6,
            stay_days=(4, 10),
            recovery_days=(3, 7),
        ),
        EventSpec(
            EventType.INFECTION,
            _ALL,
            1.0,
            (1, 3),
            Effect(Kind.TEMPERATURE, 1.0, 2.5),
            (Effect(Kind.PULSE, 6, 15),),
            admit_probability=0.0,
            stay_days=(0, 0),
            recovery_days=(3, 7),
        ),
        EventSpec(
            EventType.DEHYDRATION,
            _HF,
            0.4,
            (1, 4),
            Effect(Kind.WEIGHT, -3.5, -1.5),
            (
                Effect(Kind.PULSE, 5, 15, 0.7),
                Effect(Kind.BP_SYSTOLIC, -20, -5),
                Effect(Kind.BP_DIASTOLIC, -10, -3),
            ),
            admit_probability=0.2,
            stay_days=(2, 5),
            recovery_days=(2, 5),
        ),
    ),
    artefacts=(
        ArtefactSpec(
            EventType.OXIMETER_MOTION,
            DeviceType.OXIMETER,
            0.02,
            (Effect(Kind.SPO2, -15, -4), Effect(Kind.PULSE, 5, 30)),
            (Flag.ERRATIC_SIGNAL, Flag.QUESTIONABLE),
        ),
        ArtefactSpec(
            EventType.OXIMETER_LOW_PERFUSION,
            DeviceType.OXIMETER,
            0.02,
            (Effect(Kind.SPO2, -10, -3),),
            (Flag.LOW_PERFUSION,),
        ),
        ArtefactSpec(
            EventType.LOOSE_CUFF,
            DeviceType.BP,
            0.02,
            (Effect(Kind.BP_SYSTOLIC, 10, 30), Effect(Kind.BP_DIASTOLIC, 5, 15)),
            (Flag.CUFF_TOO_LOOSE,),
        ),
        ArtefactSpec(
            EventType.CLOTHES_ON_SCALE,
            DeviceType.SCALE,
            0.05,
            (Effect(Kind.WEIGHT, 0.5, 1.5),),
            (),
        ),
    ),
    household=Household(
        share=0.3,
        weight=Normal(78, 15, 45, 140),
        min_difference_kg=8.0,
        per_reading=0.04,
        delay_min=(2, 90),
    ),
    delivery=Delivery(
        receive_delay_s=(2, 40),
        send_delay_s=(0.1, 1.5),
        outage_per_day=0.02,
        outage_hours=(1, 24),
    ),
)


# The hard variant (docs/simulation.md, "The hard variant"): noisier patients, subtler and
# more varied events, benign look-alikes. Event rates are the standard ones.
HARD_PARAMS = replace(
    DEFAULT_PARAMS,
    variant="hard",
    day_variation={k: DayVariation(round(v.sd * 1.2, 3), v.phi)
                   for k, v in DEFAULT_PARAMS.day_variation.items()},
    noise=PatientNoise(median=1.1, log_sd=0.3, low=0.7, high=2.5),
    events=(
        EventSpec(
            EventType.COPD_EXACERBATION, _COPD, 1.5, (1.5, 12),
            Effect(Kind.SPO2, -6, -1.5),
            (Effect(Kind.PULSE, 3, 18, 0.85), Effect(Kind.TEMPERATURE, 0.5, 1.5, 0.3)),
            admit_probability=0.5, stay_days=(3, 8), recovery_days=(7, 14),
            primary_probability=0.7, shape=(0.4, 2.5),
        ),
        EventSpec(
            EventType.HF_DECOMPENSATION, _HF, 0.8, (2, 21),
            Effect(Kind.WEIGHT, 0.8, 5),
            (Effect(Kind.SPO2, -3, -1, 0.3), Effect(Kind.PULSE, 3, 15, 0.5)),
            admit_probability=0.6, stay_days=(4, 10), recovery_days=(3, 7),
            primary_probability=0.9, shape=(0.4, 2.5),
        ),
        EventSpec(
            EventType.INFECTION, _ALL, 1.0, (0.5, 4),
            Effect(Kind.TEMPERATURE, 0.8, 2.5), (Effect(Kind.PULSE, 4, 15, 0.8),),
            admit_probability=0.0, stay_days=(0, 0), recovery_days=(3, 7), shape=(0.4, 2.5),
        ),
        EventSpec(
            EventType.DEHYDRATION, _HF, 0.4, (1, 6),
            Effect(Kind.WEIGHT, -3.5, -1.2),
            (Effect(Kind.PULSE, 3, 15, 0.6), Effect(Kind.BP_SYSTOLIC, -20, -3, 0.8),
             Effect(Kind.BP_DIASTOLIC, -10, -2, 0.8)),
            admit_probability=0.2, stay_days=(2, 5), recovery_days=(2, 5), shape=(0.4, 2.5),
        ),
        # Benign look-alikes: never admitted, never clinical.
        EventSpec(
            EventType.BENIGN_FEVER, _ALL, 1.5, (0.3, 1.5),
            Effect(Kind.TEMPERATURE, 0.5, 1.4), (Effect(Kind.PULSE, 2, 8, 0.7),),
            admit_probability=0.0, stay_days=(0, 0), recovery_days=(1, 3),
        ),
        EventSpec(
            EventType.WEIGHT_DRIFT, _HF, 1.0, (14, 45),
            Effect(Kind.WEIGHT, 1.0, 3.0), (),
            admit_probability=0.0, stay_days=(0, 0), recovery_days=(14, 60),
        ),
    ),
    artefacts=(
        *DEFAULT_PARAMS.artefacts,
        # A falsely low SpO2 the oximeter does not flag (cold fingers, nail polish).
        ArtefactSpec(EventType.OXIMETER_SPURIOUS_LOW, DeviceType.OXIMETER, 0.01,
                     (Effect(Kind.SPO2, -12, -5),), ()),
    ),
)

VARIANTS: dict[str, SimParams] = {"standard": DEFAULT_PARAMS, "hard": HARD_PARAMS}
