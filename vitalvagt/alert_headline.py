"""One line saying what an alert is about, in the nurse's language (Danish; English on request).

The engine's ``message`` is plain English with the advice in it (alerts/rules.py and the
other rules). The triage list needs a short line a Danish nurse reads at a glance: the reading
and the limit it crossed, the score, or the missing measurements. It is built from the
alert's structured fields (rule, category, kind, value, details), with the words of the
ISBAR handover (vitalvagt/isbar.py), so both say the same thing the same way.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from vitalvagt.isbar import label, num, rule_name, value, when


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def headline(
    *,
    rule: str,
    category: str,
    kind: str | None,
    reading: float | None,
    measured_at: datetime | None,
    details: dict[str, Any] | None,
    lang: str,
) -> str:
    da = lang == "da"
    details = details or {}
    if category == "missed":
        if measured_at is None:
            return "Ingen målinger modtaget endnu" if da else "No measurements received yet"
        since = when(measured_at, lang)
        return f"Ingen målinger siden {since}" if da else f"No measurements since {since}"
    limit, below = details.get("limit"), details.get("below")
    numeric = isinstance(limit, int | float) and not isinstance(limit, bool)
    if rule.startswith("limit:") and kind and reading is not None and numeric:
        if isinstance(below, bool):
            side = ("under" if below else "over") if da else ("below" if below else "above")
            bound = value(kind, float(limit), lang)
            return f"{_capital(label(kind, lang))} {value(kind, reading, lang)} {side} {bound}"
    if rule in ("news2", "tobs") and reading is not None:
        return f"{_capital(rule_name(rule, lang))} {num(reading, lang)}"
    name = _capital(rule_name(rule, lang))
    if kind and reading is not None:
        # "Vægtøgning over 3 døgn – 83,1 kg": the kind's name only where the rule's lacks it
        said = label(kind, lang).lower() in name.lower()
        what = (
            value(kind, reading, lang)
            if said
            else f"{label(kind, lang)} {value(kind, reading, lang)}"
        )
        return f"{name} – {what}"
    return name
