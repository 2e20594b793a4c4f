"""Hostile observation payloads for ingest's fuzz test (issue 9), from a seeded generator.

Most payloads start from a batch that is valid in every respect (right unit, plausible
value, recent time, stable id) and get exactly one defect, so that a payload ingest stores
points at one missing check. Where the defect is a type or a time that a lenient parser
could coerce (``"95"``, ``1764000000``, ``"0101901234"``), the stable id is recomputed for
the coerced time: only the defect itself can be the reason to refuse it.

The same seed gives the same payload shapes and defects; times are relative to ``now``
because the hub judges them against its clock (``future_time``, and readings that are
too old).

``dump`` writes JSON text from ``dict``/``list``/scalars plus two helpers: ``Pairs`` (an
object whose keys may repeat) and ``Raw`` (bytes put in verbatim: invalid UTF-8, raw NUL,
``NaN``, 5,000-digit numbers, 10,000 levels of nesting).
"""

from __future__ import annotations

import json
import random
import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

from vitalvagt.kinds import KIND_SPECS, Kind
from vitalvagt.observation import BodySite, stable_id
from vitalvagt.quality import Flag

# Planted personal data: made-up CPR numbers and names. No dead-letter reason and no log
# line may repeat them.
CPRS = ("010190-1234", "0101901234", "311285-4711", "2802727530", "170362-2813")
NAMES = ("Jens Hansen", "Karen Jørgensen", "Mette Kirstine Nielsen", "Søren Østergaard")
SURNAMES = ("Hansen", "Jørgensen", "Nielsen", "Østergaard")
PII = CPRS + NAMES
PII_RE = re.compile("|".join(re.escape(p) for p in (*PII, *SURNAMES)), re.IGNORECASE)

MODELS = ("PO-60", "UA-651BLE", "Nonin 3230", "BC-401", "TD-1241")
SHORT_FLAGS = tuple(f.value for f in Flag if len(f.value) <= 9)
KINDS, FLAGS, BODY_SITES = list(Kind), list(Flag), list(BodySite)

# The JSON text of a value that no parser should turn into a number of the plausible range.
BAD_NUMBERS = {
    "1e400": "1e400",
    "-1e400": "-1e400",
    "NaN": "NaN",
    "Infinity": "Infinity",
    "-Infinity": "-Infinity",
    "nan": "nan",
    "inf": "inf",
    "10**5000": "1" + "0" * 5000,
    "-10**5000": "-1" + "0" * 5000,
    "10**400": "1" + "0" * 400,
    "1e-400": "1e-400",
    "-0": "-0",
    "-0.0": "-0.0",
    "0": "0",
    "max_double*10": "1.7976931348623157e309",
    "1e999999999": "1e999999999",
    "denormal": "4.9e-324",
    "hex": "0x5F",
    "leading_plus": "+95",
    "leading_dot": ".5",
    "trailing_dot": "95.",
    "leading_zero": "095",
    "underscore": "9_5",
    "bare_exponent": "1e",
    "double_minus": "--95",
    "huge_int": "123456789012345678901234567890",
}
# Bytes that are not UTF-8 (or not Unicode text at all).
BAD_UTF8 = {
    "lone_continuation_80": b"\x80",
    "lone_continuation_bf": b"\xbf",
    "overlong_slash": b"\xc0\xaf",
    "overlong_nul": b"\xc0\x80",
    "overlong_3byte": b"\xe0\x80\xaf",
    "overlong_4byte": b"\xf0\x80\x80\xaf",
    "cesu_lone_high_surrogate": b"\xed\xa0\x80",
    "cesu_lone_low_surrogate": b"\xed\xbf\xbf",
    "cesu_surrogate_pair": b"\xed\xa0\xbd\xed\xb8\x80",
    "byte_fe": b"\xfe",
    "byte_ff": b"\xff",
    "truncated_3byte": b"\xe2\x82",
    "above_10ffff": b"\xf4\x90\x80\x80",
    "five_byte": b"\xf8\x88\x80\x80\x80",
    "latin1_name": "Jørgensen".encode("latin-1"),
}
LONE_SURROGATES = {
    "high": "\ud800",
    "low": "\udfff",
    "reversed_pair": "\udc00\ud800",
    "high_then_ascii": "\ud800A",
    "low_in_name": "Jens\udc00Hansen",
}
GARBAGE_TIMES = (
    "yesterday", "", "now", "NaN", "T", "2026-13-45T25:61:61Z", "0000-00-00T00:00:00Z",
    "2026-11-22T07:01:55+25:00", "2026-11-22T07:01:55ZZ", "2026-11-22 07:01:55 CET",
    "22/11/2026 07:01", "2026-11-22T07:01:55Z\u0000", "\u0000", "0101901234Z",
)  # fmt: skip


def wire_time(at: datetime) -> str:
    """A UTC time as the gateway writes it (``2026-11-22T07:01:55.123000Z``)."""
    return at.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class Raw:
    """JSON text put into a payload verbatim (may be invalid on purpose)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes | str) -> None:
        self.data = data.encode() if isinstance(data, str) else data


class Pairs:
    """A JSON object as (key, value) pairs in order: keys may repeat, a key may be Raw."""

    __slots__ = ("items",)

    def __init__(self, items: Iterable[tuple[Any, Any]] = ()) -> None:
        self.items = list(items)


class _NotPlain(Exception):
    pass


def _not_plain(_: object) -> NoReturn:
    raise _NotPlain


def dump(x: Any) -> bytes:
    """JSON text; strings ASCII-escaped (so \\u0000 and lone surrogates are escapes)."""
    try:  # the C encoder for everything without Raw or Pairs in it
        return json.dumps(x, allow_nan=True, separators=(",", ":"), default=_not_plain).encode()
    except (_NotPlain, TypeError):
        pass
    if isinstance(x, Raw):
        return x.data
    if isinstance(x, dict | Pairs):
        items = x.items() if isinstance(x, dict) else x.items
        return b"{" + b",".join(dump(k) + b":" + dump(v) for k, v in items) + b"}"
    if isinstance(x, list | tuple):
        return b"[" + b",".join(dump(v) for v in x) + b"]"
    raise TypeError(f"cannot write {type(x).__name__} as JSON")


def raw_string(prefix: str, bad: bytes, suffix: str = "") -> Raw:
    """A JSON string with bytes in it that are not (escaped) UTF-8."""
    return Raw(dump(prefix)[:-1] + bad + dump(suffix)[1:])


def nest(depth: int, style: str) -> str:
    if style == "arrays":
        return "[" * depth + "]" * depth
    if style == "objects":
        return '{"":' * depth + "1" + "}" * depth
    if style == "mixed":
        return '[{"":' * (depth // 2) + "1" + "}]" * (depth // 2)
    return "[" * depth  # unbalanced


@dataclass(frozen=True, slots=True)
class Hostile:
    category: str
    shape: str
    payload: bytes


# Fields of a batch by where they sit: "top" (the batch), "obs" (an observation), "device".
STRING_FIELDS = (
    "gateway_id", "sent_at", "obs.id", "obs.kind", "obs.unit", "obs.measured_at",
    "obs.received_at", "obs.time_source", "obs.reading_id", "obs.body_site", "obs.flags[]",
    "device.address", "device.model", "device.serial",
)  # fmt: skip
ALL_FIELDS = (*STRING_FIELDS, "v", "observations", "obs.value", "obs.device", "obs.flags")
OPTIONAL = {"obs.reading_id", "obs.body_site", "device.model", "device.serial"}
TIME_FIELDS = ("obs.measured_at", "obs.received_at", "sent_at")


class HostileGenerator:
    """Payloads for one hostile gateway; ``other_gateway`` is a real gateway to spoof."""

    def __init__(
        self, rng: random.Random, gateway_id: str, *, other_gateway: str, now: datetime
    ) -> None:
        self.rng = rng
        self.gw = gateway_id
        self.other = other_gateway
        self.now = now
        # Payloads of each category per 10,000.
        self.categories: dict[str, tuple[int, Callable[[], tuple[str, bytes]]]] = {
            "nul": (1800, self.nul),
            "utf8": (1200, self.utf8),
            "nesting": (600, self.nesting),
            "numbers": (1200, self.numbers),
            "types": (1800, self.types),
            "dates": (1000, self.dates),
            "size": (300, self.size),
            "dupkeys": (600, self.dupkeys),
            "pii": (1000, self.pii),
            "mangled": (500, self.mangled),
        }

    def generate(self, total: int = 10_000) -> list[Hostile]:
        """``total`` payloads (a multiple of 20), the categories in fixed proportions."""
        out = []
        for category, (per_10k, make) in self.categories.items():
            for _ in range(per_10k * total // 10_000):
                shape, payload = make()
                out.append(Hostile(category, shape, payload))
        self.rng.shuffle(out)
        return out

    # --- valid material ---------------------------------------------------------------
    def observation(
        self, *, at: datetime | None = None, kind: Kind | None = None
    ) -> dict[str, Any]:
        """One observation valid in every respect, as the gateway encodes it."""
        rng = self.rng
        kind = kind or rng.choice(KINDS)
        s = KIND_SPECS[kind]
        if at is None:
            at = self.now - timedelta(seconds=rng.uniform(3600, 20 * 86400))
            at = at.replace(microsecond=at.microsecond // 1000 * 1000)
        address = ":".join(f"{rng.randrange(256):02X}" for _ in range(6))
        o: dict[str, Any] = {
            "id": str(stable_id(self.gw, address, kind, at)),
            "kind": kind.value,
            "value": round(rng.uniform(s.plausible_min, s.plausible_max), 1),
            "unit": s.unit,
            "measured_at": wire_time(at),
            "received_at": wire_time(at + timedelta(seconds=1.5)),
            "time_source": "device",
            "device": {
                "address": address,
                "model": rng.choice(MODELS),
                "serial": str(rng.randrange(10**9)),
            },
            "flags": sorted(f.value for f in rng.sample(FLAGS, rng.choice((0, 0, 1, 2)))),
            "reading_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        }
        if kind is Kind.TEMPERATURE:
            o["body_site"] = rng.choice(BODY_SITES).value
        return o

    def base(self, n: int | None = None) -> dict[str, Any]:
        """A batch valid in every respect, as a JSON document."""
        n = n or self.rng.choice((1, 1, 2, 3))
        return {
            "v": 1,
            "gateway_id": self.gw,
            "sent_at": wire_time(self.now),
            "observations": [self.observation() for _ in range(n)],
        }

    def slot(self, doc: dict[str, Any], field: str) -> tuple[Any, Any]:
        """(container, key) of a field in ``doc``; an observation chosen at random."""
        where, _, name = field.rpartition(".")
        if not where:
            return doc, name
        o = self.rng.choice(doc["observations"])
        if where == "device":
            return o["device"], name
        if name == "flags[]":
            if not o["flags"]:
                o["flags"] = [self.rng.choice(list(Flag)).value]
            return o["flags"], self.rng.randrange(len(o["flags"]))
        if name == "body_site" and "body_site" not in o:
            o["body_site"] = self.rng.choice(list(BodySite)).value
        return o, name

    def plant(self, doc: dict[str, Any], field: str, value: Any) -> dict[str, Any]:
        """The observation (or batch) where ``field`` now holds ``value``."""
        container, key = self.slot(doc, field)
        container[key] = value
        return container

    def set_time(self, doc: dict[str, Any], field: str, value: Any, means: datetime | None) -> None:
        """A time field set to ``value``; for measured_at, the id recomputed as if ``value``
        were read as ``means`` (so that a lenient parser would store it)."""
        o = self.plant(doc, field, value)
        if field == "obs.measured_at" and means is not None:
            o["id"] = str(stable_id(self.gw, o["device"]["address"], o["kind"], means))

    def text_of(self, doc: dict[str, Any], field: str) -> str:
        container, key = self.slot(doc, field)
        value = container.get(key) if isinstance(container, dict) else container[key]
        return value if isinstance(value, str) else "x"

    # --- categories ---------------------------------------------------------------------
    def nul(self) -> tuple[str, bytes]:
        rng, doc = self.rng, self.base()
        shape = rng.choice(("key", "key", "renamed_key", "raw_key", "value", "value", "value",
                            "raw_value", "raw_anywhere", "every_field", "pii_value"))  # fmt: skip
        level = rng.choice(("top", "obs", "device"))
        container = {"top": doc, "obs": doc["observations"][0],
                     "device": doc["observations"][0]["device"]}[level]  # fmt: skip
        if shape == "key":
            key = rng.choice(
                ("\u0000", "k\u0000ind", "flags\u0000", "\u0000" + CPRS[0], "a\u0000b")
            )
            container[key] = rng.choice((1, "x", "\u0000", None))
            return f"escaped_nul_in_key@{level}", dump(doc)
        if shape == "renamed_key":
            real = rng.choice(sorted(container))
            container[real[:1] + "\u0000" + real[1:]] = container.pop(real)
            return f"escaped_nul_in_renamed_key@{level}", dump(doc)
        if shape == "raw_key":
            pairs = Pairs(container.items())
            pairs.items.append((raw_string("k", b"\x00", "ind"), "spo2"))
            container.clear()
            if level == "top":
                return "raw_nul_in_key@top", dump(pairs)
            container["__raw__"] = Raw(b"0")  # placeholder, replaced below
            text = dump(doc).replace(b'"__raw__":0', dump(pairs)[1:-1])
            return f"raw_nul_in_key@{level}", text
        if shape in ("value", "pii_value"):
            field = rng.choice(STRING_FIELDS)
            text = self.text_of(doc, field) if shape == "value" else rng.choice(PII)
            at = rng.choice((0, len(text) // 2, len(text)))
            self.plant(doc, field, text[:at] + "\u0000" * rng.choice((1, 1, 3)) + text[at:])
            return f"escaped_nul_in_{field}" + ("+pii" if shape == "pii_value" else ""), dump(doc)
        if shape == "raw_value":
            field = rng.choice(STRING_FIELDS)
            text = self.text_of(doc, field)
            at = len(text) // 2
            self.plant(doc, field, raw_string(text[:at], b"\x00", text[at:]))
            return f"raw_nul_in_{field}", dump(doc)
        if shape == "every_field":
            for field in STRING_FIELDS:
                self.plant(doc, field, self.text_of(doc, field) + "\u0000")
            return "escaped_nul_in_every_string_field", dump(doc)
        raw = dump(doc)
        at = rng.randrange(len(raw) + 1)
        return "raw_nul_byte_anywhere", raw[:at] + b"\x00" + raw[at:]

    def utf8(self) -> tuple[str, bytes]:
        rng, doc = self.rng, self.base()
        shape = rng.choice(("raw_in_field", "raw_in_field", "raw_in_key", "raw_between_tokens",
                            "escaped_surrogate", "escaped_surrogate", "escaped_surrogate_key",
                            "encoding"))  # fmt: skip
        if shape == "encoding":
            enc = rng.choice(("utf-16-le", "utf-16-be", "utf-16", "utf-32-le", "utf-32"))
            return f"whole_payload_as_{enc}", dump(doc).decode().encode(enc)
        if shape == "escaped_surrogate":
            field = rng.choice(STRING_FIELDS)
            name, s = rng.choice(sorted(LONE_SURROGATES.items()))
            self.plant(doc, field, self.text_of(doc, field)[:8] + s)
            return f"escaped_lone_surrogate_{name}_in_{field}", dump(doc)
        if shape == "escaped_surrogate_key":
            name, s = rng.choice(sorted(LONE_SURROGATES.items()))
            doc["observations"][0]["x" + s] = 1
            return f"escaped_lone_surrogate_{name}_in_key", dump(doc)
        name, bad = rng.choice(sorted(BAD_UTF8.items()))
        if shape == "raw_in_field":
            field = rng.choice(STRING_FIELDS)
            text = self.text_of(doc, field)
            at = rng.randrange(len(text) + 1)
            self.plant(doc, field, raw_string(text[:at], bad, text[at:]))
            return f"raw_{name}_in_{field}", dump(doc)
        if shape == "raw_in_key":
            doc["observations"][0]["__bad__"] = 1
            return f"raw_{name}_in_key", dump(doc).replace(b"__bad__", b"x" + bad)
        raw = dump(doc)
        at = raw.index(b"{", 1)  # before an inner object
        return f"raw_{name}_between_tokens", raw[:at] + bad + raw[at:]

    def nesting(self) -> tuple[str, bytes]:
        rng = self.rng
        depth = rng.choice((10_000, 10_000, 10_000, 10_000, 1_000, 100_000))
        style = rng.choice(("arrays", "objects", "mixed", "unbalanced"))
        if depth == 100_000 and style != "unbalanced":
            depth = 10_000  # 100,000 levels only unbalanced: 100 kB, under the size limit
        where = rng.choice(("top", "obs.value", "obs.device", "obs.flags", "obs.id",
                            "obs.measured_at", "device.model", "unknown_key", "observations[]",
                            "observations"))  # fmt: skip
        text = nest(depth, style)
        if where == "top":
            return f"{style}_{depth}_deep@top", text.encode()
        doc = self.base()
        if where == "unknown_key":
            doc["x"] = Raw(text)
        elif where == "observations[]":
            doc["observations"].append(Raw(text))
        else:
            self.plant(doc, where, Raw(text))
        return f"{style}_{depth}_deep@{where}", dump(doc)

    def numbers(self) -> tuple[str, bytes]:
        rng, doc = self.rng, self.base()
        where = rng.choice(("obs.value", "obs.value", "obs.value", "v", "obs.measured_at"))
        if where == "obs.value" and rng.random() < 0.3:
            # In the plausible range, but not a JSON number.
            o = rng.choice(doc["observations"])
            v = o["value"]
            shape, o["value"] = rng.choice((
                ("string", str(v)), ("string_int", str(int(v))), ("string_exp", f"{v:e}"),
                ("true", True), ("false", False), ("null", None), ("array", [v]),
                ("object", {"value": v}), ("string_padded", f" {v} "),
            ))  # fmt: skip
            return f"value={shape}", dump(doc)
        if where == "v":
            shape, text = rng.choice((
                *BAD_NUMBERS.items(), ("string", '"1"'), ("true", "true"), ("null", "null"),
                ("array", "[1]"), ("two", "2"), ("minus_one", "-1"), ("one_and_a_half", "1.5"),
                ("pii", json.dumps(rng.choice(PII))),
            ))  # fmt: skip
            doc["v"] = Raw(text)
            return f"v={shape}", dump(doc)
        name, text = rng.choice(sorted(BAD_NUMBERS.items()))
        self.plant(doc, where, Raw(text))
        return f"{where.removeprefix('obs.')}={name}", dump(doc)

    def types(self) -> tuple[str, bytes]:
        rng, doc = self.rng, self.base()
        if rng.random() < 0.05:
            shape, text = rng.choice(
                (
                    ("array", "[]"),
                    ("string", '"x"'),
                    ("number", "1"),
                    ("null", "null"),
                    ("true", "true"),
                    ("array_of_batch", "[" + dump(doc).decode() + "]"),
                    ("string_of_batch", json.dumps(dump(doc).decode())),
                )
            )
            return f"payload_is_{shape}", text.encode()  # fmt: skip
        if rng.random() < 0.2:
            return self.time_type(doc)
        field = rng.choice((*ALL_FIELDS, "observations[]"))
        wrong: dict[str, Any] = {
            "object": {}, "object_nested": {"value": "x", "$date": "2026-11-22T07:01:55Z"},
            "array": [], "array_of_one": ["x"], "number": 17, "float": 3.5, "true": True,
            "false": False, "null": None, "string": "x", "numeric_string": "95",
        }  # fmt: skip
        # Skip the types that can be valid: a number is a plausible value of some kind, a
        # string is a valid model, null a valid reading_id.
        valid_types = {
            "v": (), "observations": (), "observations[]": (), "obs.device": (),
            "obs.value": ("number", "float"), "obs.flags": ("array",),
        }.get(field, ("string", "numeric_string"))  # fmt: skip
        skip = set(valid_types) | ({"null"} if field in OPTIONAL else set())
        shape = rng.choice(sorted(set(wrong) - skip))
        if field == "observations[]":
            doc["observations"][rng.randrange(len(doc["observations"]))] = wrong[shape]
        else:
            self.plant(doc, field, wrong[shape])
        return f"{field}={shape}", dump(doc)

    def time_type(self, doc: dict[str, Any]) -> tuple[str, bytes]:
        """A time as a number, a numeric string, an object or an array."""
        rng = self.rng
        field = rng.choice(TIME_FIELDS)
        recent = int((self.now - timedelta(days=rng.randint(1, 20))).timestamp())
        shape, value, means = rng.choice((
            ("epoch_1700000000", 1700000000, datetime.fromtimestamp(1700000000, UTC)),
            ("epoch_recent", recent, datetime.fromtimestamp(recent, UTC)),
            ("epoch_recent_float", recent + 0.25, datetime.fromtimestamp(recent + 0.25, UTC)),
            ("epoch_recent_ms", recent * 1000, datetime.fromtimestamp(recent, UTC)),
            ("epoch_recent_string", str(recent), datetime.fromtimestamp(recent, UTC)),
            ("cpr_as_epoch_string", "0101901234", datetime.fromtimestamp(101901234, UTC)),
            ("object", {"$date": "2026-11-22T07:01:55Z"}, None),
            ("array", [2026, 11, 22, 7, 1, 55], None),
            ("true", True, None),
            ("null", None, None),
        ))  # fmt: skip
        self.set_time(doc, field, value, means)
        return f"{field}={shape}", dump(doc)

    def dates(self) -> tuple[str, bytes]:
        """Extreme, zone-less, leap-second and garbage times in all three time fields. Year 1
        at +01:00 and 9999-12-31 at -01:00 have no UTC form: refused in sent_at too (which
        is not stored), since anything that converts it to UTC would fail. Readings from a
        reset device clock (1970, 2000) and year 1 in UTC are refused as too old."""
        rng, doc = self.rng, self.base()
        field = rng.choice(TIME_FIELDS)
        o = rng.choice(doc["observations"])
        day = o["measured_at"][:10]
        choices: list[tuple[str, Any, datetime | None]] = [
            ("year1_+01:00", "0001-01-01T00:00+01:00", None),
            ("year9999_-01:00", "9999-12-31T23:59:59-01:00", None),
            ("no_zone", o["measured_at"].rstrip("Z"), None),
            ("date_only", day, None),
            ("leap_second", f"{day}T23:59:60Z", None),
            *((f"garbage_{i}", g, None) for i, g in enumerate(GARBAGE_TIMES)),
        ]
        if field == "obs.measured_at":
            soon = self.now + timedelta(days=1)
            choices += [
                ("year1_utc", "0001-01-01T00:00:00Z", datetime(1, 1, 1, tzinfo=UTC)),
                ("year9999_utc", "9999-12-31T23:59:59Z", datetime(9999, 12, 31, 23, 59, 59,
                                                                  tzinfo=UTC)),
                ("reset_clock_1970", "1970-01-01T00:00:17Z", datetime(1970, 1, 1, 0, 0, 17,
                                                                      tzinfo=UTC)),
                ("reset_clock_2000", "2000-01-01T00:00:05Z", datetime(2000, 1, 1, 0, 0, 5,
                                                                      tzinfo=UTC)),
                ("tomorrow", soon.isoformat(), soon),
            ]  # fmt: skip
        shape, value, means = rng.choice(choices)
        if field != "obs.measured_at":
            self.plant(doc, field, value)
        else:
            o["measured_at"] = value
            if means is not None:
                o["id"] = str(stable_id(self.gw, o["device"]["address"], o["kind"], means))
        return f"{field}={shape}", dump(doc)

    def size(self) -> tuple[str, bytes]:
        rng = self.rng
        shape = rng.choices(
            ("just_over_256KiB", "300KB", "1MB_random_bytes", "1MB_json", "1MB_brackets",
             "empty", "whitespace_only", "15000_flags", "15000_unknown_flags",
             "1001_observations", "1001_compact_observations", "1001_empty_objects"),
            weights=(15, 10, 6, 4, 2, 60, 40, 25, 15, 8, 25, 40),
        )[0]  # fmt: skip
        if shape == "empty":
            return shape, b""
        if shape == "whitespace_only":
            return shape, b" \n\t\r"[: rng.randint(1, 4)] * rng.randint(1, 100)
        if shape == "1MB_random_bytes":
            return shape, rng.randbytes(1_000_000)
        if shape == "1MB_brackets":
            return shape, b"[" * 1_000_000
        if shape in ("just_over_256KiB", "300KB", "1MB_json"):
            raw = dump(self.base())
            size = {"just_over_256KiB": 256 * 1024 + rng.randint(1, 64), "300KB": 300_000,
                    "1MB_json": 1_000_000}[shape]  # fmt: skip
            return shape, raw[:-1] + b" " * (size - len(raw)) + b"}"  # valid JSON, too big
        doc = self.base(1)
        o = doc["observations"][0]
        if shape == "15000_flags":
            o["flags"] = [rng.choice(SHORT_FLAGS) for _ in range(15_000)]
        elif shape == "15000_unknown_flags":
            o["flags"] = ["x"] * 15_000
        elif shape == "1001_empty_objects":
            doc["observations"] = [{}] * 1001
        else:
            start = (self.now - timedelta(days=2)).replace(microsecond=0)
            if shape == "1001_observations":
                doc["observations"] = [
                    self.observation(at=start + timedelta(seconds=i), kind=Kind.PULSE)
                    for i in range(1001)
                ]
            else:  # ~185 bytes each: under 256 KiB, so the count is what is wrong
                doc["observations"] = [
                    {
                        "id": str(stable_id(self.gw, "A", Kind.PULSE, at)),
                        "kind": "pulse",
                        "value": 60,
                        "unit": "/min",
                        "measured_at": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                        "received_at": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                        "device": {"address": "A"},
                    }
                    for at in (start + timedelta(seconds=i) for i in range(1001))
                ]
        return shape, dump(doc)

    def dupkeys(self) -> tuple[str, bytes]:
        """A key twice in one object, the last value bad: refused. The hub's rule (documented
        in docs/wire-format.md) is that the last value counts, as in Python's json and
        pydantic's jiter, which the hub's every reader uses: refusing every duplicate would
        take a second full parse of each valid message on ingest's hot path. So a duplicate
        whose last value is good is a valid message, not a hostile one, and is not sent here."""
        rng, doc = self.rng, self.base()
        o = doc["observations"][0]
        level = rng.choice(("top", "obs", "device"))
        container = {"top": doc, "obs": o, "device": o["device"]}[level]
        key = rng.choice(sorted(container))
        real = container[key]
        bad: Any = {
            "v": 2, "gateway_id": self.other, "sent_at": "yesterday", "observations": [],
            "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)), "kind": "glucose",
            "value": Raw("1e400"), "unit": "mmHg", "measured_at": "1970-01-01T00:00:17Z",
            "received_at": "0001-01-01T00:00+01:00", "time_source": "sundial",
            "flags": ["x"], "reading_id": "x", "body_site": "elbow", "address": 17,
            "model": 17, "serial": 17, "device": "x",
        }.get(key, "x")  # fmt: skip
        order = "bad_last"
        first, last = {"bad_first": (bad, real), "bad_last": (real, bad),
                       "identical": (real, real)}[order]  # fmt: skip
        pairs = Pairs()
        for k, v in container.items():
            pairs.items += [(k, first), (k, last)] if k == key else [(k, v)]
        shape = f"duplicate_{key}_{order}@{level}"
        if level == "top":
            return shape, dump(pairs)
        container.clear()
        container["__dup__"] = 0
        return shape, dump(doc).replace(b'"__dup__":0', dump(pairs)[1:-1])

    def pii(self) -> tuple[str, bytes]:
        rng, doc = self.rng, self.base()
        secret = rng.choice(PII)
        shape = rng.choice(
            (
                "unknown_key",
                "unknown_key",
                "key_is_pii",
                "in_field",
                "in_field",
                "in_field",
                "gateway_cpr",
                "address_too_long",
                "model_plus_defect",
            )
        )
        level = rng.choice(("top", "obs", "device"))
        container = {"top": doc, "obs": doc["observations"][0],
                     "device": doc["observations"][0]["device"]}[level]  # fmt: skip
        if shape == "unknown_key":
            key = rng.choice(("cpr", "patient_name", "navn", "personnummer", "patient"))
            container[key] = {"name": NAMES[0], "cpr": CPRS[0]} if key == "patient" else secret
            return f"unknown_key_{key}@{level}", dump(doc)
        if shape == "key_is_pii":
            container[secret] = rng.choice((secret, 1, True, {"cpr": CPRS[1]}))
            return f"pii_as_key@{level}", dump(doc)
        if shape == "gateway_cpr":  # matches the gateway-id pattern: refused by the topic
            doc["gateway_id"] = rng.choice(("010190-1234", "0101901234", "2802727530"))
            return "cpr_as_gateway_id", dump(doc)
        if shape == "address_too_long":
            doc["observations"][0]["device"]["address"] = (secret + " ") * 8
            return "pii_in_too_long_device.address", dump(doc)
        if shape == "model_plus_defect":
            o = doc["observations"][0]
            o["device"]["model"] = f"{secret} {CPRS[0]}"
            defect, value = rng.choice(
                (
                    ("value_nan", Raw("NaN")),
                    ("kind", "glucose"),
                    ("unit", "mmHg"),
                    ("measured_at", "yesterday"),
                )
            )
            o[defect.removesuffix("_nan")] = value
            return f"pii_in_model+{defect}", dump(doc)
        field = rng.choice(("v", "gateway_id", "sent_at", "obs.id", "obs.kind", "obs.value",
                            "obs.unit", "obs.measured_at", "obs.received_at", "obs.time_source",
                            "obs.flags[]", "obs.reading_id", "obs.body_site", "obs.device",
                            "obs.flags", "observations"))  # fmt: skip
        if field == "obs.measured_at" and secret == "0101901234":
            self.set_time(doc, field, secret, datetime.fromtimestamp(101901234, UTC))
        else:
            self.plant(doc, field, secret)
        return f"pii_in_{field}", dump(doc)

    def mangled(self) -> tuple[str, bytes]:
        rng, doc = self.rng, self.base()
        raw = dump(doc)
        shape = rng.choice(("truncated", "truncated", "doubled", "trailing", "leading",
                            "random_bytes", "missing_field", "missing_field", "comment",
                            "trailing_comma", "single_quotes"))  # fmt: skip
        if shape == "truncated":
            return shape, raw[: rng.randrange(1, len(raw))]
        if shape == "doubled":
            return shape, raw + rng.choice((b"", b"\n", b" ")) + raw
        if shape == "trailing":
            return shape, raw + rng.choice((b"x", b"}", b",", b"]", b"\x01"))
        if shape == "leading":
            return shape, rng.choice((b"x", b")]}',\n", b"\x1b", b"[")) + raw
        if shape == "random_bytes":
            return shape, rng.randbytes(rng.randint(1, 1000))
        if shape == "comment":
            return shape, raw[:-1] + b"/* Jens Hansen */}"
        if shape == "trailing_comma":
            return shape, raw[:-1] + b",}"
        if shape == "single_quotes":
            return shape, raw.replace(b'"', b"'")
        field = rng.choice(("v", "gateway_id", "sent_at", "observations", "obs.id", "obs.kind",
                            "obs.value", "obs.unit", "obs.measured_at", "obs.received_at",
                            "obs.device", "device.address"))  # fmt: skip
        container, key = self.slot(doc, field)
        del container[key]
        return f"missing_{field}", dump(doc)
