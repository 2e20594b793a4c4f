"""ISBAR (issue 12, point 3): the handover texts pinned for a COPD exacerbation, a heart-
failure weight gain, a missed measurement and an escalated red alert, in Danish and English;
and the loader that reads one alert's ISBAR from the database."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import psycopg
import pytest

from alerts.routing import route_pending
from tests.alerts.delivery_helpers import add_alert, add_patient, add_teams
from vitalvagt.db.isbar_data import isbar_text, load
from vitalvagt.isbar import DayMean, IsbarData, PastAlert, isbar
from vitalvagt.stack import Stack

CPH = ZoneInfo("Europe/Copenhagen")
GP = {"role": "gp", "name": "Lægerne Søndergade", "phone": "86 12 34 56"}
VAGT = {"role": "out_of_hours", "name": "Lægevagten Region Midtjylland", "phone": "70 11 31 31"}
COPD_SCORES = {
    "news2": {"total": 5, "points": {"spo2": 3, "oxygen": 0, "pulse": 1, "temperature": 1},
              "missing": ["respiratory_rate", "bp_systolic", "consciousness"]},
    "tobs": {"total": 2, "points": {"pulse": 1, "temperature": 1},
             "missing": ["respiratory_rate", "bp_systolic", "consciousness"]},
}


def t(*a: int) -> datetime:
    return datetime(*a, tzinfo=CPH)


COPD = IsbarData(
    alert_id=101, patient_id="p-kol-0042", group="copd", team_name="Akutteam Aarhus Syd",
    team_phone="+45 8713 0000", doctor=GP, rule="trend:copd", severity="yellow", state="open",
    category="clinical", kind="spo2", value=89.0, measured_at=t(2026, 3, 11, 8, 5),
    opened_at=t(2026, 3, 11, 8, 6),
    message="Change over several days (11-03 08:05): oxygen saturation 89 % against the usual "
            "93 %; pulse 96 /min against the usual 78 /min. Follow up today: call the patient, "
            "ask about symptoms and for a new measurement.",
    details={"score": 4.512, "h": 3.75, "k": 0.5,
             "spo2": {"today": 89.0, "baseline_median": 93.0, "baseline_sd": 1.5,
                      "baseline_days": 28},
             "pulse": {"today": 96.0, "baseline_median": 78.0, "baseline_sd": 5.0,
                       "baseline_days": 28},
             "temperature": {"today": None, "baseline_median": 36.8, "baseline_sd": 0.2,
                             "baseline_days": 20}},
    scores=COPD_SCORES, baseline={"spo2": 93.0, "pulse": 78.0},
    days=(DayMean("spo2", date(2026, 3, 9), 92.0), DayMean("spo2", date(2026, 3, 10), 90.5),
          DayMean("spo2", date(2026, 3, 11), 89.0), DayMean("pulse", date(2026, 3, 9), 84.0),
          DayMean("pulse", date(2026, 3, 10), 90.0), DayMean("pulse", date(2026, 3, 11), 96.0)),
    recent=(PastAlert(t(2026, 3, 2, 9, 0), "limit:spo2", "yellow"),),
)
HF = IsbarData(
    alert_id=202, patient_id="p-hs-0107", group="heart_failure", team_name="Akutteam Horsens",
    team_phone=None, doctor=GP, rule="weight:gain3d", severity="yellow", state="open",
    category="clinical", kind="weight", value=84.2, measured_at=t(2026, 6, 3, 7, 12),
    opened_at=t(2026, 6, 3, 7, 13),
    message="Weight up 2.3 kg within 3 days (today 84.2 kg, before 81.9 kg): possible fluid "
            "gain. Call the patient today: ask about breathlessness and swollen ankles; contact "
            "the responsible doctor about diuretics.",
    details={"today_kg": 84.2, "reference_kg": 81.9, "change_kg": 2.3, "threshold_kg": 2.0,
             "days": 3},
    scores={"news2": {"total": 0, "points": {"spo2": 0, "oxygen": 0, "pulse": 0},
                      "missing": ["respiratory_rate", "bp_systolic", "consciousness",
                                  "temperature"]},
            "tobs": {"total": 0, "points": {"pulse": 0},
                     "missing": ["respiratory_rate", "temperature", "bp_systolic",
                                 "consciousness"]}},
    baseline={"weight": 81.85, "spo2": 96.0, "pulse": 72.0},
    days=(DayMean("weight", date(2026, 6, 1), 82.4), DayMean("weight", date(2026, 6, 2), 83.3),
          DayMean("weight", date(2026, 6, 3), 84.2)),
)
MISSED = IsbarData(
    alert_id=303, patient_id="p-kol-0042", group="copd", team_name="Nattevagt Klynge Midt",
    team_phone="+45 8713 0002", doctor=VAGT, rule="missed", severity="blue", state="open",
    category="missed", kind=None, value=None, measured_at=t(2026, 3, 14, 7, 40),
    opened_at=t(2026, 3, 15, 19, 40),
    message="No measurements for 36 hours (last 14-03 07:40). Call the patient: check that "
            "they are well, and that the tablet and devices work.",
    baseline={"spo2": 93.0, "pulse": 78.0},
    days=(DayMean("spo2", date(2026, 3, 14), 92.0), DayMean("pulse", date(2026, 3, 14), 80.0)),
)
RED = IsbarData(
    alert_id=404, patient_id="p-kol-0042", group="copd", team_name="Nattevagt Klynge Midt",
    team_phone="+45 8713 0002", doctor=VAGT, rule="limit:spo2", severity="red", state="open",
    category="clinical", kind="spo2", value=83.0, measured_at=t(2026, 3, 12, 2, 10),
    opened_at=t(2026, 3, 12, 2, 11),
    message="Oxygen saturation 83 % at 12-03 02:10 is below the alert limit 85 %. Call the "
            "patient now and assess; contact the responsible doctor if the condition has "
            "changed. Outside the limits in 2 of the last 3 readings.",
    details={"limit": 85.0, "below": True, "outside": 2, "of_last": 3,
             "persistence": "2 of 3"},
    scores={"news2": {"total": 6, "points": {"spo2": 3, "oxygen": 0, "pulse": 2,
                                             "temperature": 1},
                      "missing": ["respiratory_rate", "bp_systolic", "consciousness"]},
            "tobs": {"total": 3, "points": {"pulse": 2, "temperature": 1},
                     "missing": ["respiratory_rate", "bp_systolic", "consciousness"]}},
    escalations=("level 1: team lead of Nattevagt Klynge Midt (Teamleder Nat, tel. +45 8713 "
                 "0009)", "level 2: escalation team Akutteam Aarhus Syd (tel. +45 8713 0000)"),
    baseline={"spo2": 93.0, "pulse": 78.0},
    days=(DayMean("spo2", date(2026, 3, 10), 90.5), DayMean("spo2", date(2026, 3, 11), 89.0),
          DayMean("spo2", date(2026, 3, 12), 83.5), DayMean("pulse", date(2026, 3, 10), 90.0),
          DayMean("pulse", date(2026, 3, 11), 96.0), DayMean("pulse", date(2026, 3, 12), 112.0)),
    recent=(PastAlert(t(2026, 3, 11, 8, 6), "trend:copd", "yellow"),),
)


CASES = {"COPD": COPD, "HF": HF, "MISSED": MISSED, "RED": RED}
EXPECTED = {
    ("COPD", "da"): (
        'I – Identifikation: Patient p-kol-0042 (KOL), Akutteam Aarhus Syd (tlf. +45 8713 '
        '0000). Ansvarlig læge nu: egen læge: Lægerne Søndergade, tlf. 86 12 34 56.\n'
        'S – Situation: Gul alarm 11-03 kl. 08:06: KOL-forværring: vedvarende ændring over '
        'flere døgn; iltmætning 89 % målt 11-03 kl. 08:05.\n'
        'B – Baggrund: KOL-patient i hjemmemonitorering. Sædvanlige værdier (median): '
        'iltmætning 93 %, puls 78 /min. Døgnmiddel de seneste 3 døgn: iltmætning 92, 90,5, 89'
        ' %; puls 84, 90, 96 /min. Tidligere alarmer (14 døgn): gul grænseværdi for '
        'iltmætning 02-03.\n'
        'A – Vurdering: Udløst af: KOL-forværring: vedvarende ændring over flere døgn '
        '(iltmætning 89 % mod sædvanligt 93 %; puls 96 /min mod sædvanligt 78 /min; CUSUM '
        '4,51 (grænse 3,75)). NEWS2 5 (iltmætning 3, ilttilskud 0, puls 1, temperatur 1); '
        'ikke målt: respirationsfrekvens, systolisk blodtryk og bevidsthed. TOBS 2 (puls 1, '
        'temperatur 1); ikke målt: respirationsfrekvens, systolisk blodtryk og bevidsthed.\n'
        'R – Anbefaling: Følg op i dag: ring til patienten, spørg til symptomer og bed om en '
        'ny måling. Send en korrespondancemeddelelse til egen læge ved ændring.'
    ),
    ("COPD", "en"): (
        'I – Identify: Patient p-kol-0042 (COPD), Akutteam Aarhus Syd (tel. +45 8713 0000). '
        'Responsible doctor now: the GP: Lægerne Søndergade, tel. 86 12 34 56.\n'
        'S – Situation: Yellow alert 11-03 at 08:06: COPD deterioration: a sustained change '
        'over several days; oxygen saturation 89 % measured 11-03 at 08:05.\n'
        'B – Background: COPD patient monitored at home. Usual values (median): oxygen '
        'saturation 93 %, pulse 78 /min. Daily means, the last 3 days: oxygen saturation 92, '
        '90.5, 89 %; pulse 84, 90, 96 /min. Earlier alerts (14 days): yellow limit for oxygen'
        ' saturation 02-03.\n'
        'A – Assessment: Fired: COPD deterioration: a sustained change over several days '
        '(oxygen saturation 89 % against the usual 93 %; pulse 96 /min against the usual 78 '
        '/min; CUSUM 4.51 (threshold 3.75)). NEWS2 5 (oxygen saturation 3, supplemental '
        'oxygen 0, pulse 1, temperature 1); not measured: respiratory rate, systolic pressure'
        ' and consciousness. TOBS 2 (pulse 1, temperature 1); not measured: respiratory rate,'
        " systolic pressure and consciousness. Engine's text: Change over several days (11-03"
        ' 08:05): oxygen saturation 89 % against the usual 93 %; pulse 96 /min against the '
        'usual 78 /min. Follow up today: call the patient, ask about symptoms and for a new '
        'measurement.\n'
        'R – Recommendation: Follow up today: call the patient, ask about symptoms and for a '
        'new measurement. Send the GP a correspondence message if the condition has changed.'
    ),
    ("HF", "da"): (
        'I – Identifikation: Patient p-hs-0107 (hjertesvigt), Akutteam Horsens. Ansvarlig '
        'læge nu: egen læge: Lægerne Søndergade, tlf. 86 12 34 56.\n'
        'S – Situation: Gul alarm 03-06 kl. 07:13: vægtøgning over 3 døgn; vægt 84,2 kg målt '
        '03-06 kl. 07:12.\n'
        'B – Baggrund: Hjertesvigt-patient i hjemmemonitorering. Sædvanlige værdier (median):'
        ' vægt 81,85 kg, iltmætning 96 %, puls 72 /min. Døgnmiddel de seneste 3 døgn: vægt '
        '82,4, 83,3, 84,2 kg. Ingen andre alarmer de seneste 14 døgn.\n'
        'A – Vurdering: Udløst af: vægtøgning over 3 døgn (i dag 84,2 kg mod 81,9 kg: 2,3 kg '
        'på 3 døgn (grænse 2 kg)). NEWS2 0 (iltmætning 0, ilttilskud 0, puls 0); ikke målt: '
        'respirationsfrekvens, systolisk blodtryk, bevidsthed og temperatur. TOBS 0 (puls 0);'
        ' ikke målt: respirationsfrekvens, temperatur, systolisk blodtryk og bevidsthed.\n'
        'R – Anbefaling: Ring til patienten i dag: spørg til åndenød og hævede ankler. '
        'Kontakt egen læge (tlf. 86 12 34 56) om vanddrivende behandling.'
    ),
    ("HF", "en"): (
        'I – Identify: Patient p-hs-0107 (heart failure), Akutteam Horsens. Responsible '
        'doctor now: the GP: Lægerne Søndergade, tel. 86 12 34 56.\n'
        'S – Situation: Yellow alert 03-06 at 07:13: weight gain within 3 days; weight 84.2 '
        'kg measured 03-06 at 07:12.\n'
        'B – Background: Heart failure patient monitored at home. Usual values (median): '
        'weight 81.85 kg, oxygen saturation 96 %, pulse 72 /min. Daily means, the last 3 '
        'days: weight 82.4, 83.3, 84.2 kg. No other alerts in the last 14 days.\n'
        'A – Assessment: Fired: weight gain within 3 days (today 84.2 kg against 81.9 kg: 2.3'
        ' kg in 3 days (threshold 2 kg)). NEWS2 0 (oxygen saturation 0, supplemental oxygen '
        '0, pulse 0); not measured: respiratory rate, systolic pressure, consciousness and '
        'temperature. TOBS 0 (pulse 0); not measured: respiratory rate, temperature, systolic'
        " pressure and consciousness. Engine's text: Weight up 2.3 kg within 3 days (today "
        '84.2 kg, before 81.9 kg): possible fluid gain. Call the patient today: ask about '
        'breathlessness and swollen ankles; contact the responsible doctor about diuretics.\n'
        'R – Recommendation: Call the patient today: ask about breathlessness and swollen '
        'ankles. Contact the GP (tel. 86 12 34 56) about diuretics.'
    ),
    ("MISSED", "da"): (
        'I – Identifikation: Patient p-kol-0042 (KOL), Nattevagt Klynge Midt (tlf. +45 8713 '
        '0002). Ansvarlig læge nu: vagtlæge: Lægevagten Region Midtjylland, tlf. 70 11 31 31.\n'
        'S – Situation: Blå alarm 15-03 kl. 19:40: ingen målinger; seneste måling 14-03 kl. '
        '07:40.\n'
        'B – Baggrund: KOL-patient i hjemmemonitorering. Sædvanlige værdier (median): '
        'iltmætning 93 %, puls 78 /min. Døgnmiddel det seneste døgn: iltmætning 92 %; puls 80'
        ' /min. Ingen andre alarmer de seneste 14 døgn.\n'
        'A – Vurdering: Udløst af: manglende måling (ingen målinger i 36 timer).\n'
        'R – Anbefaling: Ring til patienten: tjek at patienten har det godt, og at tablet og '
        'måleudstyr virker. Bed om en ny måling.'
    ),
    ("MISSED", "en"): (
        'I – Identify: Patient p-kol-0042 (COPD), Nattevagt Klynge Midt (tel. +45 8713 0002).'
        ' Responsible doctor now: the out-of-hours doctor (vagtlæge): Lægevagten Region '
        'Midtjylland, tel. 70 11 31 31.\n'
        'S – Situation: Blue alert 15-03 at 19:40: no measurements; last measurement 14-03 at'
        ' 07:40.\n'
        'B – Background: COPD patient monitored at home. Usual values (median): oxygen '
        'saturation 93 %, pulse 78 /min. Daily mean, the last day: oxygen saturation 92 %; '
        'pulse 80 /min. No other alerts in the last 14 days.\n'
        "A – Assessment: Fired: missed measurement (no measurements for 36 hours). Engine's "
        'text: No measurements for 36 hours (last 14-03 07:40). Call the patient: check that '
        'they are well, and that the tablet and devices work.\n'
        'R – Recommendation: Call the patient: check that they are well and that the tablet '
        'and devices work. Ask for a new measurement.'
    ),
    ("RED", "da"): (
        'I – Identifikation: Patient p-kol-0042 (KOL), Nattevagt Klynge Midt (tlf. +45 8713 '
        '0002). Ansvarlig læge nu: vagtlæge: Lægevagten Region Midtjylland, tlf. 70 11 31 31.\n'
        'S – Situation: Rød alarm 12-03 kl. 02:11: grænseværdi for iltmætning; iltmætning 83 '
        '% målt 12-03 kl. 02:10. Ikke kvitteret: eskaleret 2 gange, nu niveau 2: '
        'eskaleringsteam Akutteam Aarhus Syd (tlf. +45 8713 0000).\n'
        'B – Baggrund: KOL-patient i hjemmemonitorering. Sædvanlige værdier (median): '
        'iltmætning 93 %, puls 78 /min. Døgnmiddel de seneste 3 døgn: iltmætning 90,5, 89, '
        '83,5 %; puls 90, 96, 112 /min. Tidligere alarmer (14 døgn): gul KOL-forværring: '
        'vedvarende ændring over flere døgn 11-03.\n'
        'A – Vurdering: Udløst af: grænseværdi for iltmætning (83 % er under grænsen 85 %, '
        'uden for grænserne i 2 af de seneste 3 målinger). NEWS2 6 (iltmætning 3, ilttilskud '
        '0, puls 2, temperatur 1); ikke målt: respirationsfrekvens, systolisk blodtryk og '
        'bevidsthed. TOBS 3 (puls 2, temperatur 1); ikke målt: respirationsfrekvens, '
        'systolisk blodtryk og bevidsthed.\n'
        'R – Anbefaling: Ring til patienten nu og vurder (TOBS med respirationsfrekvens og '
        'bevidsthed). Kontakt vagtlægen (tlf. 70 11 31 31) telefonisk ved forværring. Alarmen'
        ' er eskaleret: kvittér, når du har taget den.'
    ),
    ("RED", "en"): (
        'I – Identify: Patient p-kol-0042 (COPD), Nattevagt Klynge Midt (tel. +45 8713 0002).'
        ' Responsible doctor now: the out-of-hours doctor (vagtlæge): Lægevagten Region '
        'Midtjylland, tel. 70 11 31 31.\n'
        'S – Situation: Red alert 12-03 at 02:11: limit for oxygen saturation; oxygen '
        'saturation 83 % measured 12-03 at 02:10. Not acknowledged: escalated twice, now '
        'level 2: escalation team Akutteam Aarhus Syd (tel. +45 8713 0000).\n'
        'B – Background: COPD patient monitored at home. Usual values (median): oxygen '
        'saturation 93 %, pulse 78 /min. Daily means, the last 3 days: oxygen saturation '
        '90.5, 89, 83.5 %; pulse 90, 96, 112 /min. Earlier alerts (14 days): yellow COPD '
        'deterioration: a sustained change over several days 11-03.\n'
        'A – Assessment: Fired: limit for oxygen saturation (83 % is below the limit 85 %, '
        'outside the limits in 2 of the last 3 readings). NEWS2 6 (oxygen saturation 3, '
        'supplemental oxygen 0, pulse 2, temperature 1); not measured: respiratory rate, '
        'systolic pressure and consciousness. TOBS 3 (pulse 2, temperature 1); not measured: '
        "respiratory rate, systolic pressure and consciousness. Engine's text: Oxygen "
        'saturation 83 % at 12-03 02:10 is below the alert limit 85 %. Call the patient now '
        'and assess; contact the responsible doctor if the condition has changed. Outside the'
        ' limits in 2 of the last 3 readings.\n'
        'R – Recommendation: Call the patient now and assess (TOBS with respiratory rate and '
        'consciousness). Phone the out-of-hours doctor (tel. 70 11 31 31) if the condition '
        'has changed. The alert has escalated: acknowledge it when you take it.'
    ),
}  # fmt: skip


@pytest.mark.parametrize(("case", "lang"), list(EXPECTED))
def test_isbar_text_is_pinned(case: str, lang: str) -> None:
    assert isbar(CASES[case], lang).text() == EXPECTED[(case, lang)]


def test_isbar_has_the_five_parts_and_no_other_language() -> None:
    with pytest.raises(ValueError, match="lang"):
        isbar(COPD, "de")
    parts = isbar(RED, "da")
    assert parts.situation.startswith("Rød alarm 12-03 kl. 02:11")
    assert "escalat" not in parts.text()  # the escalation note is put into Danish


@pytest.mark.stack
def test_isbar_from_the_database(stack: Stack, registry: psycopg.Connection) -> None:
    day, _, _ = add_teams(registry, "9107")
    pid = add_patient(registry, "p-isbar-db", "9107", day)
    opened = datetime(2026, 2, 4, 9, 30, tzinfo=CPH)  # a Wednesday morning: the day team
    rows = [(opened - timedelta(days=d, hours=1), "spo2", v)
            for d, v in ((20, 93.0), (15, 94.0), (10, 92.0), (2, 91.0), (1, 89.0))]
    rows += [(opened - timedelta(minutes=30), "spo2", 84.0),
             (opened - timedelta(minutes=31), "pulse", 118.0)]
    for at, kind, value in rows:
        registry.execute(
            "INSERT INTO observations (id, measured_at, received_at, patient_id, gateway_id,"
            " device_address, kind, value, unit) VALUES (gen_random_uuid(), %s, %s, %s,"
            " 'gw-isbar', 'AA', %s, %s, 'x')", (at, at, pid, kind, value))  # fmt: skip
    earlier = add_alert(registry, pid, day, rule="trend:copd", severity="yellow",
                        opened_at=opened - timedelta(days=1))  # fmt: skip
    a = add_alert(registry, pid, day, opened_at=opened, measured_at=opened - timedelta(minutes=30),
                  details={"limit": 85.0, "below": True, "outside": 1, "of_last": 1})
    route_pending(registry)
    data = load(registry, a, now=opened + timedelta(minutes=5))
    assert data is not None and data.recent[0].rule == "trend:copd" and earlier
    assert data.baseline == {"spo2": 93.0}  # 35 to 7 days back: 93, 94 and 92
    assert [(m.day, m.mean) for m in data.days if m.kind == "spo2"] == [
        (date(2026, 2, 2), 91.0), (date(2026, 2, 3), 89.0), (date(2026, 2, 4), 84.0)]
    text = isbar_text(registry, a, now=opened + timedelta(minutes=5))
    assert text is not None
    assert "Ansvarlig læge nu: egen læge: Lægerne Søndergade, tlf. 86 12 34 56." in text
    assert "Akutteam Dag (tlf. +45 7000 0001)" in text
    assert "iltmætning 84 % målt 04-02 kl. 09:00" in text
    assert "NEWS2 5 (iltmætning 3, ilttilskud 0, puls 2); ikke målt: respirationsfrekvens," in text
    # At 17:00 the same alert names the vagtlæge and the night team: the routing of now
    late = isbar_text(registry, a, now=opened + timedelta(hours=7, minutes=30), lang="en")
    assert late is not None and "out-of-hours doctor (vagtlæge): Lægevagten" in late
    assert "Nattevagt Klynge" in late
    assert isbar_text(registry, 10**12, now=datetime.now(UTC)) is None
