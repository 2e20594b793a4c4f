"""The alert's one-line headline (vitalvagt/alert_headline.py): what the triage list shows a
nurse, in Danish or English, from the alert's structured fields."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vitalvagt.alert_headline import headline
from vitalvagt.isbar import LANGUAGES
from vitalvagt.kinds import Kind


def _h(lang: str = "da", **kw: object) -> str:
    base: dict[str, object] = {"rule": "limit:spo2", "category": "clinical", "kind": "spo2",
                               "reading": 79.0, "measured_at": None, "details": {}}  # fmt: skip
    return headline(**{**base, **kw}, lang=lang)  # type: ignore[arg-type]


def test_a_limit_names_the_reading_the_side_and_the_limit() -> None:
    below = {"limit": 85, "below": True}
    assert _h(details=below) == "Iltmætning 79 % under 85 %"
    assert _h("en", details=below) == "Oxygen saturation 79 % below 85 %"
    fever = {"rule": "limit:temperature", "kind": "temperature", "reading": 38.6,
             "details": {"limit": 38.5, "below": False}}  # fmt: skip
    assert _h(**fever) == "Temperatur 38,6 °C over 38,5 °C"  # a Danish decimal comma
    assert _h("en", **fever) == "Temperature 38.6 °C above 38.5 °C"


def test_missed_measurements_say_since_when_in_local_time() -> None:
    last = datetime(2026, 12, 1, 7, 5, tzinfo=UTC)  # 08:05 in Copenhagen
    missed = {"rule": "missed", "category": "missed", "kind": None, "reading": None}
    assert _h(**missed, measured_at=last) == "Ingen målinger siden 01-12 kl. 08:05"
    assert _h("en", **missed) == "No measurements received yet"


def test_scores_trends_and_weight_rules() -> None:
    assert _h(rule="news2", kind=None, reading=7) == "NEWS2-score 7"
    assert _h("en", rule="tobs", kind=None, reading=3) == "TOBS score 3"
    gain = _h(rule="weight:gain3d", kind="weight", reading=83.1)
    assert gain == "Vægtøgning over 3 døgn – 83,1 kg"  # the rule already names the weight
    trend = _h("en", rule="trend:copd", reading=90.5)
    assert trend.startswith("COPD deterioration") and trend.endswith("oxygen saturation 90.5 %")


@pytest.mark.parametrize("lang", LANGUAGES)
@given(
    rule=st.one_of(st.sampled_from(["limit:spo2", "missed", "news2", "trend:copd",
                                    "quality:pulse", "weight:loss"]), st.text(max_size=30)),
    category=st.sampled_from(["clinical", "missed", "quality"]),
    kind=st.one_of(st.none(), st.sampled_from([k.value for k in Kind])),
    reading=st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False, width=32)),
    details=st.one_of(st.none(), st.dictionaries(
        st.sampled_from(["limit", "below", "total", "x"]),
        st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=5)),
    )),
)  # fmt: skip
def test_any_alert_gets_a_line_of_text(
    lang: str, rule: str, category: str, kind: str | None, reading: float | None,
    details: dict | None,
) -> None:
    """Whatever an old or odd alert row holds (details are free JSON): a line, never an error."""
    text = headline(rule=rule, category=category, kind=kind, reading=reading, measured_at=None,
                    details=details, lang=lang)  # fmt: skip
    assert isinstance(text, str) and "None" not in text.replace(rule, "")
    assert "\n" not in text.replace(rule, "")
