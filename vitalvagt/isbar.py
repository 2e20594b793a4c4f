"""ISBAR handover of one alert, ready to be read out on the phone (Danish; English on request).

Pure functions over ``IsbarData`` (vitalvagt/db/isbar_data.py loads it for one alert):

- I, Identify: the pseudonym, the group, the team answering, the doctor responsible now;
- S, Situation: what happened, with numbers, units and local times, and the escalation;
- B, Background: the group, the baseline, the last days' daily means, recent alerts;
- A, Assessment: the rule that fired and what it computed (the alert's ``details``), NEWS2 and
  TOBS from the home readings with the parameters that were not measured named;
- R, Recommendation: what to do now, by severity.

No personal name or CPR number: the pseudonym only. docs/clinical-rules.md, "ISBAR", shows
the layout.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from vitalvagt.kinds import KIND_SPECS, Kind
from vitalvagt.settings import DEFAULT_LOCAL_TZ

LOCAL = ZoneInfo(DEFAULT_LOCAL_TZ)
LANGUAGES = ("da", "en")

LABELS = {
    "da": {"spo2": "iltmætning", "pulse": "puls", "bp_systolic": "systolisk blodtryk",
           "bp_diastolic": "diastolisk blodtryk", "bp_mean": "middelblodtryk", "weight": "vægt",
           "temperature": "temperatur", "respiratory_rate": "respirationsfrekvens",
           "consciousness": "bevidsthed", "oxygen": "ilttilskud"},
    "en": {"spo2": "oxygen saturation", "pulse": "pulse", "bp_systolic": "systolic pressure",
           "bp_diastolic": "diastolic pressure", "bp_mean": "mean arterial pressure",
           "weight": "weight", "temperature": "temperature",
           "respiratory_rate": "respiratory rate", "consciousness": "consciousness",
           "oxygen": "supplemental oxygen"},
}  # fmt: skip
GROUPS = {"da": {"copd": "KOL", "heart_failure": "hjertesvigt", "both": "KOL og hjertesvigt"},
          "en": {"copd": "COPD", "heart_failure": "heart failure",
                 "both": "COPD and heart failure"}}  # fmt: skip
SEVERITY = {"da": {"red": "Rød", "yellow": "Gul", "blue": "Blå"},
            "en": {"red": "Red", "yellow": "Yellow", "blue": "Blue"}}  # fmt: skip
DOCTOR = {"da": {"gp": "egen læge", "out_of_hours": "vagtlæge", "hospital": "hospitalslæge"},
          "en": {"gp": "the GP", "out_of_hours": "the out-of-hours doctor (vagtlæge)",
                 "hospital": "the hospital doctor"}}  # fmt: skip
RULES = {
    "da": {"trend:copd": "KOL-forværring: vedvarende ændring over flere døgn",
           "trend:spo2": "faldende iltmætning over flere døgn",
           "trend:pulse": "stigende puls over flere døgn",
           "weight:trend": "vægt, iltmætning og puls ændret over flere døgn",
           "weight:gain3d": "vægtøgning over 3 døgn", "weight:jump1d": "vægtøgning på ét døgn",
           "weight:loss": "vægttab over 3 døgn", "news2": "NEWS2-score",
           "tobs": "TOBS-score", "missed": "manglende måling"},
    "en": {"trend:copd": "COPD deterioration: a sustained change over several days",
           "trend:spo2": "oxygen saturation falling over several days",
           "trend:pulse": "pulse rising over several days",
           "weight:trend": "weight, saturation and pulse changed over several days",
           "weight:gain3d": "weight gain within 3 days", "weight:jump1d": "weight gain in one day",
           "weight:loss": "weight loss within 3 days", "news2": "NEWS2 score",
           "tobs": "TOBS score", "missed": "missed measurement"},
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class DayMean:
    kind: str
    day: date  # local date
    mean: float


@dataclass(frozen=True, slots=True)
class PastAlert:
    opened_at: datetime
    rule: str
    severity: str


@dataclass(frozen=True)
class IsbarData:
    alert_id: int
    patient_id: str
    group: str
    team_name: str
    team_phone: str | None
    doctor: dict[str, Any]  # {"role", "name", "phone"} (vitalvagt.routing.Routing.to_json)
    rule: str
    severity: str
    state: str
    category: str
    kind: str | None
    value: float | None
    measured_at: datetime | None
    opened_at: datetime
    message: str
    details: dict[str, Any] = field(default_factory=dict)
    scores: dict[str, Any] | None = None  # {"news2": {...}, "tobs": {...}} (alerts.routing)
    escalations: tuple[str, ...] = ()  # the escalation steps' notes, in order
    baseline: dict[str, float] = field(default_factory=dict)  # kind -> median
    days: tuple[DayMean, ...] = ()
    recent: tuple[PastAlert, ...] = ()


@dataclass(frozen=True)
class Isbar:
    identify: str
    situation: str
    background: str
    assessment: str
    recommendation: str
    lang: str

    def text(self) -> str:
        heads = (("I – Identifikation", "S – Situation", "B – Baggrund", "A – Vurdering",
                  "R – Anbefaling") if self.lang == "da" else
                 ("I – Identify", "S – Situation", "B – Background", "A – Assessment",
                  "R – Recommendation"))  # fmt: skip
        parts = (self.identify, self.situation, self.background, self.assessment,
                 self.recommendation)  # fmt: skip
        return "\n".join(f"{h}: {p}" for h, p in zip(heads, parts, strict=True))


def num(x: float, lang: str) -> str:
    """84 -> '84', 84.25 -> '84,25' in Danish (decimal comma), '84.25' in English."""
    s = f"{round(x, 2):g}"
    return s.replace(".", ",") if lang == "da" else s


def unit(kind: str) -> str:
    try:
        u = KIND_SPECS[Kind(kind)].unit
    except ValueError:
        return ""
    return u.replace("mm[Hg]", "mmHg").replace("Cel", "°C")


def value(kind: str, x: float, lang: str) -> str:
    u = unit(kind)
    return f"{num(x, lang)} {u}" if u else num(x, lang)


def when(t: datetime, lang: str, zone: ZoneInfo = LOCAL) -> str:
    local = t.astimezone(zone)
    return (local.strftime("%d-%m kl. %H:%M") if lang == "da"
            else local.strftime("%d-%m at %H:%M"))  # fmt: skip


def label(kind: str, lang: str) -> str:
    return LABELS[lang].get(kind, kind)


def rule_name(rule: str, lang: str) -> str:
    if rule in RULES[lang]:
        return RULES[lang][rule]
    prefix, _, kind = rule.partition(":")
    if prefix == "limit":
        return (f"grænseværdi for {label(kind, lang)}" if lang == "da"
                else f"limit for {label(kind, lang)}")  # fmt: skip
    if prefix == "quality":
        return (f"upålidelig måling af {label(kind, lang)}" if lang == "da"
                else f"unreliable {label(kind, lang)} reading")  # fmt: skip
    return rule


def _join(items: Sequence[str], lang: str) -> str:
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + (" og " if lang == "da" else " and ") + items[-1]


def identify(d: IsbarData, lang: str) -> str:
    doc = d.doctor or {}
    role = DOCTOR[lang].get(doc.get("role", ""), doc.get("role") or "?")
    who = ", ".join(x for x in (doc.get("name"), (("tlf. " if lang == "da" else "tel. ")
                                                   + doc["phone"]) if doc.get("phone") else None)
                    if x)  # fmt: skip
    team = d.team_name + (f" ({'tlf.' if lang == 'da' else 'tel.'} {d.team_phone})"
                          if d.team_phone else "")  # fmt: skip
    group = GROUPS[lang].get(d.group, d.group)
    if lang == "da":
        return (f"Patient {d.patient_id} ({group}), {team}. Ansvarlig læge nu: {role}"
                f"{': ' + who if who else ''}.")
    return (f"Patient {d.patient_id} ({group}), {team}. Responsible doctor now: {role}"
            f"{': ' + who if who else ''}.")


def situation(d: IsbarData, lang: str, zone: ZoneInfo = LOCAL) -> str:
    sev = SEVERITY[lang][d.severity]
    if d.category == "missed":
        if lang == "da":
            last = (f"; seneste måling {when(d.measured_at, lang, zone)}" if d.measured_at
                    else "; ingen målinger modtaget endnu")  # fmt: skip
            what = f"{sev} alarm {when(d.opened_at, lang, zone)}: ingen målinger{last}."
        else:
            last = (f"; last measurement {when(d.measured_at, lang, zone)}" if d.measured_at
                    else "; no measurements received yet")  # fmt: skip
            what = f"{sev} alert {when(d.opened_at, lang, zone)}: no measurements{last}."
    else:
        reading = ""
        if d.kind and d.value is not None and d.measured_at is not None:
            reading = (f"{label(d.kind, lang)} {value(d.kind, d.value, lang)} "
                       f"{'målt' if lang == 'da' else 'measured'} "
                       f"{when(d.measured_at, lang, zone)}")  # fmt: skip
        elif d.rule in ("news2", "tobs") and d.value is not None:
            reading = f"{d.rule.upper()} {num(d.value, lang)}"
        noun = "alarm" if lang == "da" else "alert"
        what = (f"{sev} {noun} {when(d.opened_at, lang, zone)}: {rule_name(d.rule, lang)}"
                f"{'; ' + reading if reading else ''}.")
    if d.escalations:
        n, last = len(d.escalations), d.escalations[-1]
        if lang == "da":
            for en, da in (("level", "niveau"), ("team lead of", "teamleder for"),
                           ("escalation team", "eskaleringsteam"), ("tel.", "tlf.")):
                last = last.replace(en, da)
            times = "1 gang" if n == 1 else f"{n} gange"
            what += f" Ikke kvitteret: eskaleret {times}, nu {last}."
        else:
            times = {1: "once", 2: "twice"}.get(n, f"{n} times")
            what += f" Not acknowledged: escalated {times}, now {last}."
    return what


def _kinds_for(group: str) -> tuple[str, ...]:
    return {"copd": ("spo2", "pulse"), "heart_failure": ("weight", "spo2", "pulse")}.get(
        group, ("weight", "spo2", "pulse"))


def background(d: IsbarData, lang: str, zone: ZoneInfo = LOCAL) -> str:
    group = GROUPS[lang].get(d.group, d.group)
    out = [(f"{group[0].upper()}{group[1:]}-patient i hjemmemonitorering." if lang == "da"
            else f"{group[0].upper()}{group[1:]} patient monitored at home.")]  # fmt: skip
    kinds = _kinds_for(d.group)
    base = [f"{label(k, lang)} {value(k, d.baseline[k], lang)}" for k in kinds if k in d.baseline]
    if base:
        out.append(("Sædvanlige værdier (median): " if lang == "da"
                    else "Usual values (median): ") + ", ".join(base) + ".")  # fmt: skip
    else:
        out.append("Ingen udgangsværdier endnu." if lang == "da" else "No baseline yet.")
    trend = []
    for k in kinds:
        days = sorted((m for m in d.days if m.kind == k), key=lambda m: m.day)
        if days:
            seq = ", ".join(num(m.mean, lang) for m in days)
            trend.append(f"{label(k, lang)} {seq} {unit(k)}".rstrip())
    if trend:
        n = len({m.day for m in d.days})
        if lang == "da":
            head = ("Døgnmiddel det seneste døgn: " if n == 1
                    else f"Døgnmiddel de seneste {n} døgn: ")  # fmt: skip
        else:
            head = ("Daily mean, the last day: " if n == 1
                    else f"Daily means, the last {n} days: ")  # fmt: skip
        out.append(head + "; ".join(trend) + ".")
    if d.recent:
        items = [f"{SEVERITY[lang][a.severity].lower()} {rule_name(a.rule, lang)} "
                 f"{a.opened_at.astimezone(zone).strftime('%d-%m')}" for a in d.recent]
        out.append(("Tidligere alarmer (14 døgn): " if lang == "da"
                    else "Earlier alerts (14 days): ") + "; ".join(items) + ".")  # fmt: skip
    else:
        out.append("Ingen andre alarmer de seneste 14 døgn." if lang == "da"
                   else "No other alerts in the last 14 days.")  # fmt: skip
    return " ".join(out)


def _detail(d: IsbarData, lang: str) -> str:
    x = d.details or {}
    da = lang == "da"
    if d.category == "missed" and d.measured_at is not None:
        hours = round((d.opened_at - d.measured_at).total_seconds() / 3600)
        return f"ingen målinger i {hours} timer" if da else f"no measurements for {hours} hours"
    if d.rule.startswith("limit:") and "limit" in x and d.kind and d.value is not None:
        side = ("under" if x.get("below") else "over") if da else (
            "below" if x.get("below") else "above")
        text = (f"{value(d.kind, d.value, lang)} er {side} grænsen "
                f"{value(d.kind, x['limit'], lang)}" if da else
                f"{value(d.kind, d.value, lang)} is {side} the limit "
                f"{value(d.kind, x['limit'], lang)}")  # fmt: skip
        if x.get("of_last", 1) > 1:
            text += (f", uden for grænserne i {x['outside']} af de seneste {x['of_last']} målinger"
                     if da else f", outside the limits in {x['outside']} of the last "
                     f"{x['of_last']} readings")  # fmt: skip
        return text
    if "change_kg" in x:
        days = x.get("days", 3)
        return (f"i dag {num(x['today_kg'], lang)} kg mod {num(x['reference_kg'], lang)} kg: "
                f"{num(x['change_kg'], lang)} kg på {days} døgn (grænse "
                f"{num(x['threshold_kg'], lang)} kg)" if da else
                f"today {num(x['today_kg'], lang)} kg against {num(x['reference_kg'], lang)} kg: "
                f"{num(x['change_kg'], lang)} kg in {days} days (threshold "
                f"{num(x['threshold_kg'], lang)} kg)")  # fmt: skip
    if "score" in x:
        parts = []
        for k, v in x.items():
            if isinstance(v, dict) and v.get("today") is not None and v.get("baseline_median"):
                parts.append(f"{label(k, lang)} {value(k, v['today'], lang)} "
                             f"{'mod sædvanligt' if da else 'against the usual'} "
                             f"{value(k, v['baseline_median'], lang)}")  # fmt: skip
        score = (f"CUSUM {num(x['score'], lang)} ({'grænse' if da else 'threshold'} "
                 f"{num(x.get('h', 0), lang)})")
        return "; ".join([*parts, score])
    return ""


# Each score's parameters in the order of its card (a jsonb object keeps no order)
ORDER = {"NEWS2": ("respiratory_rate", "spo2", "oxygen", "bp_systolic", "pulse",
                   "consciousness", "temperature"),
         "TOBS": ("pulse", "respiratory_rate", "temperature", "bp_systolic", "consciousness")}


def _score(name: str, sc: dict[str, Any], lang: str) -> str:
    order = ORDER.get(name, ())
    points = sorted(sc.get("points", {}).items(),
                    key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order))
    pts = ", ".join(f"{label(k, lang)} {v}" for k, v in points)
    missing = [label(k, lang) for k in sorted(
        sc.get("missing", []), key=lambda k: order.index(k) if k in order else len(order))]
    head = f"{name} {sc.get('total', 0)}" + (f" ({pts})" if pts else "")
    if lang == "da":
        return head + (f"; ikke målt: {_join(missing, lang)}" if missing else "; alle målt")
    return head + (f"; not measured: {_join(missing, lang)}" if missing else "; all measured")


def assessment(d: IsbarData, lang: str) -> str:
    detail = _detail(d, lang)
    head = ("Udløst af: " if lang == "da" else "Fired: ") + rule_name(d.rule, lang)
    out = [head + (f" ({detail})." if detail else ".")]
    scores = dict(d.scores or {})
    if d.rule in ("news2", "tobs") and "total" in d.details:
        scores[d.rule] = d.details
    for name in ("news2", "tobs"):
        if name in scores:
            out.append(_score(name.upper(), scores[name], lang) + ".")
    if len(out) == 1 and d.category != "missed":
        out.append("Ingen NEWS2/TOBS: ingen målinger de seneste 2 timer." if lang == "da"
                   else "No NEWS2/TOBS: no readings in the last 2 hours.")  # fmt: skip
    if lang == "en":
        out.append(f"Engine's text: {d.message}")
    return " ".join(out)


# The doctor as the object of a sentence ("contact the out-of-hours doctor")
DOCTOR_OBJECT = {"da": {"gp": "egen læge", "out_of_hours": "vagtlægen",
                        "hospital": "hospitalslægen"},
                 "en": {"gp": "the GP", "out_of_hours": "the out-of-hours doctor",
                        "hospital": "the hospital doctor"}}  # fmt: skip


def recommendation(d: IsbarData, lang: str) -> str:
    doc = DOCTOR_OBJECT[lang].get((d.doctor or {}).get("role", ""), DOCTOR_OBJECT[lang]["gp"])
    phone = (d.doctor or {}).get("phone")
    tel = f" ({'tlf.' if lang == 'da' else 'tel.'} {phone})" if phone else ""
    da = lang == "da"
    if d.category == "missed":
        return ("Ring til patienten: tjek at patienten har det godt, og at tablet og måleudstyr "
                "virker. Bed om en ny måling." if da else
                "Call the patient: check that they are well and that the tablet and devices "
                "work. Ask for a new measurement.")  # fmt: skip
    if d.severity == "red":
        text = (f"Ring til patienten nu og vurder (TOBS med respirationsfrekvens og bevidsthed). "
                f"Kontakt {doc}{tel} telefonisk ved forværring." if da else
                f"Call the patient now and assess (TOBS with respiratory rate and "
                f"consciousness). Phone {doc}{tel} if the condition has changed.")  # fmt: skip
        if d.escalations:
            text += (" Alarmen er eskaleret: kvittér, når du har taget den." if da
                     else " The alert has escalated: acknowledge it when you take it.")
        return text
    if d.rule.startswith("weight:") and d.details.get("change_kg", 0) > 0:
        return (f"Ring til patienten i dag: spørg til åndenød og hævede ankler. Kontakt {doc}{tel}"
                " om vanddrivende behandling." if da else
                f"Call the patient today: ask about breathlessness and swollen ankles. Contact "
                f"{doc}{tel} about diuretics.")  # fmt: skip
    return (f"Følg op i dag: ring til patienten, spørg til symptomer og bed om en ny måling. "
            f"Send en korrespondancemeddelelse til {doc} ved ændring." if da else
            f"Follow up today: call the patient, ask about symptoms and for a new measurement. "
            f"Send {doc} a correspondence message if the condition has changed.")  # fmt: skip


def isbar(d: IsbarData, lang: str = "da", zone: ZoneInfo = LOCAL) -> Isbar:
    if lang not in LANGUAGES:
        raise ValueError(f"lang: {lang!r} is not one of {', '.join(LANGUAGES)}")
    return Isbar(identify(d, lang), situation(d, lang, zone), background(d, lang, zone),
                 assessment(d, lang), recommendation(d, lang), lang)  # fmt: skip
