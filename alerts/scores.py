"""Early-warning scores from the parameters present: NEWS2 and TOBS (reference section 4).

Band edges. The published tables print integer bands (temperature in tenths). A value that
falls between two printed bands, or on an edge the card leaves unscored, takes the MORE
severe of the two neighbouring bands (safety first). For TOBS that decides the edges the
card leaves open: pulse 130 -> 3 and 39 -> 2; respiration 25 -> 3 and 8 -> 3; temperature
40.0 -> 3 and 33.9-34.0 -> 3; systolic 200 -> 2 and 69 -> 3. Every edge is tested
(tests/alerts/test_scores.py).

TOBS temperature is rectal: 0.5 C is added to oral and 1 C to armpit readings; an ear
(tympanic) reading is taken as core temperature (+0). NEWS2 uses the reading as it is.

Home devices give only some parameters (no respiration, no consciousness): a score says
which parameters it has and which are missing, and a missing parameter scores nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from alerts.finding import Category, Finding
from alerts.rules import LOCAL, Severity
from alerts.series import HOUR_S, KIND_CODE, PatientContext, Series
from vitalvagt.kinds import Kind

NEWS2_PARAMETERS = ("respiratory_rate", "spo2", "oxygen", "bp_systolic", "pulse",
                    "consciousness", "temperature")  # fmt: skip
TOBS_PARAMETERS = ("pulse", "respiratory_rate", "temperature", "bp_systolic", "consciousness")
TOBS_SITE_CORRECTION = {"rectal": 0.0, "tympanum": 0.0, "oral": 0.5, "axilla": 1.0}


@dataclass(frozen=True)
class Score:
    name: str
    total: int
    points: dict[str, int]  # per parameter present
    missing: tuple[str, ...]  # parameters the score would use but did not have

    @property
    def max_single(self) -> int:
        return max(self.points.values(), default=0)


# --- NEWS2 (Royal College of Physicians 2017) -----------------------------------------

def news2_resp(r: float) -> int:
    return 3 if r > 24 else 2 if r > 20 else 0 if r >= 12 else 1 if r >= 9 else 3


def news2_spo2(s: float, *, scale2: bool = False, on_oxygen: bool = False) -> int:
    if not scale2:
        return 0 if s >= 96 else 1 if s >= 94 else 2 if s >= 92 else 3
    if s < 88:
        return 1 if s >= 86 else 2 if s >= 84 else 3
    if not on_oxygen or s <= 92:
        return 0  # 88-92, or 93 and above on air
    return 3 if s > 96 else 2 if s > 94 else 1


def news2_systolic(p: float) -> int:
    return 3 if p > 219 else 0 if p > 110 else 1 if p > 100 else 2 if p > 90 else 3


def news2_pulse(p: float) -> int:
    return (3 if p > 130 else 2 if p > 110 else 1 if p > 90 else 0 if p > 50
            else 1 if p > 40 else 3)  # fmt: skip


def news2_temperature(t: float) -> int:
    return 2 if t > 39.0 else 1 if t > 38.0 else 0 if t >= 36.1 else 1 if t >= 35.1 else 3


def news2_consciousness(level: int) -> int:
    return 0 if level == 0 else 3  # alert 0; new confusion, voice, pain, unresponsive 3


def news2(values: dict[str, float], *, scale2: bool = False,
          on_oxygen: bool | None = None) -> Score:  # fmt: skip
    """NEWS2 from the parameters given (keys as NEWS2_PARAMETERS, kinds' names)."""
    pts: dict[str, int] = {}
    if "respiratory_rate" in values:
        pts["respiratory_rate"] = news2_resp(values["respiratory_rate"])
    if "spo2" in values:
        pts["spo2"] = news2_spo2(values["spo2"], scale2=scale2, on_oxygen=bool(on_oxygen))
    if on_oxygen is not None:
        pts["oxygen"] = 2 if on_oxygen else 0
    if "bp_systolic" in values:
        pts["bp_systolic"] = news2_systolic(values["bp_systolic"])
    if "pulse" in values:
        pts["pulse"] = news2_pulse(values["pulse"])
    if "consciousness" in values:
        pts["consciousness"] = news2_consciousness(int(values["consciousness"]))
    if "temperature" in values:
        pts["temperature"] = news2_temperature(values["temperature"])
    missing = tuple(p for p in NEWS2_PARAMETERS if p not in pts)
    return Score("NEWS2", sum(pts.values()), pts, missing)


# --- TOBS (Danish Health Authority, 2017) ---------------------------------------------

def tobs_pulse(p: float) -> int:
    return (3 if p > 129 else 2 if p > 109 else 1 if p > 89 else 0 if p >= 50
            else 1 if p >= 40 else 2)  # fmt: skip


def tobs_resp(r: float) -> int:
    return 3 if r > 24 else 2 if r > 20 else 0 if r >= 12 else 1 if r >= 9 else 3


def tobs_temperature(t: float, site: str = "rectal") -> int:
    t = t + TOBS_SITE_CORRECTION.get(site, 0.0)
    t = round(t, 2)  # 38.4 + 0.5 is 38.9, not 38.900000000000006
    return (3 if t > 39.9 else 2 if t > 38.9 else 1 if t > 37.9 else 0 if t >= 36.0
            else 2 if t >= 34.0 else 3)  # fmt: skip


def tobs_systolic(p: float) -> int:
    return 2 if p > 199 else 0 if p >= 100 else 1 if p >= 80 else 2 if p >= 70 else 3


def tobs_consciousness(level: int) -> int:
    return min(max(int(level), 0), 3)  # habitual 0, agitated/voice 1, pain 2, none 3


def tobs(values: dict[str, float], *, temperature_site: str = "rectal") -> Score:
    pts: dict[str, int] = {}
    if "pulse" in values:
        pts["pulse"] = tobs_pulse(values["pulse"])
    if "respiratory_rate" in values:
        pts["respiratory_rate"] = tobs_resp(values["respiratory_rate"])
    if "temperature" in values:
        pts["temperature"] = tobs_temperature(values["temperature"], temperature_site)
    if "bp_systolic" in values:
        pts["bp_systolic"] = tobs_systolic(values["bp_systolic"])
    if "consciousness" in values:
        pts["consciousness"] = tobs_consciousness(int(values["consciousness"]))
    missing = tuple(p for p in TOBS_PARAMETERS if p not in pts)
    return Score("TOBS", sum(pts.values()), pts, missing)


# --- the rule ---------------------------------------------------------------------------

_SCORED = (Kind.SPO2, Kind.PULSE, Kind.BP_SYSTOLIC, Kind.TEMPERATURE, Kind.RESPIRATORY_RATE)


@dataclass(frozen=True)
class ScoreRule:
    """Rule `news2` / `tobs`: the score of the latest reliable reading of each parameter
    within `session_h` hours up to the reading just arrived; fires at `min_total` (red at
    `red_total`) with at least `min_parameters` of the score's own parameters measured. A
    single parameter at 3 fires only with `single3` (the limit rules already watch each
    parameter on its own)."""

    name: str  # "news2" | "tobs"
    min_total: int
    red_total: int
    min_parameters: int = 3
    session_h: float = 2.0
    single3: bool = False
    temperature_site: str = "tympanum"
    version: int = 1

    def score(self, values: dict[str, float], ctx: PatientContext) -> Score:
        if self.name == "news2":
            return news2(values, scale2=ctx.spo2_scale2, on_oxygen=ctx.on_oxygen)
        return tobs(values, temperature_site=self.temperature_site)

    def _latest(self, s: Series, at: np.ndarray) -> dict[Kind, np.ndarray]:
        """Per kind, the index of the latest reliable reading at or before each of `at`
        within the session (-1 if none)."""
        out = {}
        for kind in _SCORED:
            sel = np.flatnonzero((s.kind == KIND_CODE[kind]) & s.reliable)
            p = np.searchsorted(sel, at, side="right") - 1
            ok = p >= 0
            j = np.where(ok, sel[np.maximum(p, 0)] if len(sel) else 0, -1)
            ok &= s.t[np.maximum(j, 0)] >= s.t[at] - self.session_h * HOUR_S
            out[kind] = np.where(ok, j, -1)
        return out

    def values_at(self, s: Series, i: int) -> dict[str, float]:
        """The latest reliable value of each scored kind within the session up to reading i."""
        latest = self._latest(s, np.array([i]))
        return {k.value: float(s.value[j[0]]) for k, j in latest.items() if j[0] >= 0}

    def evaluate(self, s: Series, idx: np.ndarray, ctx: PatientContext) -> list[Finding]:
        codes = np.array([KIND_CODE[k] for k in _SCORED])
        at = idx[np.isin(s.kind[idx], codes) & s.reliable[idx]]
        if len(at) == 0:
            return []
        latest = self._latest(s, at)
        used = NEWS2_PARAMETERS if self.name == "news2" else TOBS_PARAMETERS
        present = sum((j >= 0).astype(int) for k, j in latest.items() if k.value in used)
        total = np.zeros(len(at), dtype=int)
        top = np.zeros(len(at), dtype=int)
        for kind, j in latest.items():  # each parameter's points, from the scalar functions
            pts = np.zeros(len(at), dtype=int)
            has = j >= 0
            if np.any(has):
                vals = s.value[j[has]]
                uniq, inv = np.unique(vals, return_inverse=True)
                table = np.array([self.score({kind.value: float(u)}, ctx).points.get(kind.value, 0)
                                  for u in uniq])  # fmt: skip
                pts[has] = table[inv.reshape(-1)]
            total += pts
            top = np.maximum(top, pts)
        if self.name == "news2" and ctx.on_oxygen:
            total += 2
            top = np.maximum(top, 2)
        fire = (present >= self.min_parameters) & (
            (total >= self.min_total) | ((top >= 3) if self.single3 else False))
        out = []
        for n in np.flatnonzero(fire):
            values = {k.value: float(s.value[j[n]]) for k, j in latest.items() if j[n] >= 0}
            out.append(self._finding(s, int(at[n]), self.score(values, ctx)))
        return out

    def _finding(self, s: Series, i: int, sc: Score) -> Finding:
        red = sc.total >= self.red_total
        when = datetime.fromtimestamp(int(s.t[i]), UTC).astimezone(LOCAL).strftime("%d-%m %H:%M")
        parts = ", ".join(f"{k} {v}" for k, v in sc.points.items())
        missing = ", ".join(sc.missing) or "none"
        todo = ("Call the patient now and assess; contact the responsible doctor." if red
                else "Follow up today: call the patient and assess.")
        return Finding(
            rule=self.name, version=self.version,
            severity=Severity.RED if red else Severity.YELLOW, category=Category.CLINICAL,
            at_index=i, value=float(sc.total), kind=None,
            message=(f"{sc.name} {sc.total} at {when} from the home measurements ({parts}); "
                     f"not measured: {missing}. {todo}"),
            details={"total": sc.total, "points": sc.points, "missing": list(sc.missing)},
        )  # fmt: skip
