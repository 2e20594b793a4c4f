"""Ingest under hostile input, end to end (issue 9, "Done when").

10,000 hostile payloads from a seeded generator (tests/ingest/hostile.py: NUL characters and
bytes, invalid UTF-8, deep nesting, huge and non-finite numbers, wrong types, extreme dates,
oversize and empty payloads, duplicate keys, planted CPR numbers and names, mangled JSON),
interleaved with valid readings, published over the real broker to the real ingest. Hostile
payloads come from two provisioned homes of their own, valid readings from a third, so the
rows of each are counted apart. The contract:

- ingest stays up: its thread is alive at the end and stores a valid message published
  after every hostile one was acknowledged by the broker;
- every valid reading is stored exactly once (rows and distinct ids);
- every hostile message becomes exactly one dead letter (on its topic) with a documented
  code, never ``internal_error`` or ``storage_refused``, and none of it is stored as a
  reading;
- no dead-letter reason repeats the planted personal data or holds a NUL, and no log record
  of ingest repeats the personal data or carries a traceback.

A failure lists what went wrong per payload category and shape (which code, which
exception, how many missing). ``VV_FUZZ_SEED`` picks another seed; ``VV_FUZZ_CATEGORIES=nul,
dates`` publishes only those categories (to look at one at a time).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import threading
import time
from collections import Counter, defaultdict, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from ingest.service import IngestService
from tests.ingest.conftest import (
    add_homes,
    count_rows,
    gateway_client,
    ingest_config,
    payloads,
    readings,
    running_ingest,
)
from tests.ingest.hostile import PII_RE, Hostile, HostileGenerator
from vitalvagt.kinds import Kind
from vitalvagt.stack import Stack
from vitalvagt.wire import obs_topic

pytestmark = [pytest.mark.stack, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SEED = int(os.environ.get("VV_FUZZ_SEED", "20261201"))
CATEGORIES = {c for c in os.environ.get("VV_FUZZ_CATEGORIES", "").split(",") if c}
HOSTILE_HOMES = 2
HOSTILE_PER_HOME = 5_000
VALID_MESSAGES = 800  # of 1-4 readings each
WINDOW = 200  # messages in flight
HUB_FAULTS = {"internal_error", "storage_refused"}
SETTLE_S = 90


def documented_codes() -> set[str]:
    """The dead-letter codes the wire format documents (the Errors section)."""
    text = (ROOT / "docs" / "wire-format.md").read_text()
    section = text.split("\n## Errors", 1)[1].split("\n## ", 1)[0]
    codes = set(re.findall(r"`([a-z][a-z_]+)`", section))
    assert len(codes) >= 10, f"no list of codes found in docs/wire-format.md: {codes}"
    return codes


@dataclass
class RunningIngest:
    service: IngestService
    thread: threading.Thread
    died: list[BaseException]


@pytest.fixture
def fuzz_ingest(stack: Stack) -> Iterator[RunningIngest]:
    """IngestService in a thread, like the ``ingest`` fixture, keeping what ``run`` raised."""
    service = IngestService(ingest_config(stack, "vv-ingest-fuzz"))
    died: list[BaseException] = []

    def run() -> None:
        try:
            service.run()
        except BaseException as exc:  # reported by the test, not as a thread warning
            died.append(exc)

    with running_ingest(stack, service, run) as thread:
        yield RunningIngest(service, thread, died)


@dataclass
class Homes:
    valid: tuple[str, str]  # (gateway, password)
    hostile: list[tuple[str, str]]


@pytest.fixture
def homes(stack: Stack, registry: psycopg.Connection) -> Iterator[Homes]:
    """One home for the valid readings, ``HOSTILE_HOMES`` for the hostile payloads. Fixed
    names, so a seed gives the same payloads (their lengths decide later draws); what a run
    before this one in the session left is deleted first. Their dead letters are deleted
    afterwards: 10,000 of them would slow every later ``replay`` of all open dead letters."""
    names = ["fuzz-valid", *(f"fuzz-hostile{i}" for i in range(HOSTILE_HOMES))]
    homes = add_homes(registry, stack, names)
    valid, hostile = homes[0][:2], [h[:2] for h in homes[1:]]
    gateways = [gw for gw, _ in [valid, *hostile]]
    topics = [obs_topic(gw) for gw in gateways]
    registry.execute("DELETE FROM observations WHERE gateway_id = ANY(%s)", (gateways,))
    registry.execute("DELETE FROM dead_letters WHERE topic = ANY(%s)", (topics,))
    yield Homes(valid, hostile)
    registry.execute("DELETE FROM dead_letters WHERE topic = ANY(%s)", (topics,))


def valid_messages(
    rng: random.Random, gw: str, t0: datetime, count: int, start: int = 0
) -> tuple[list[bytes], int]:
    """(messages, offset after the last reading): readings valid in every respect, each with
    its own start offset, so every reading has a distinct stable id."""
    out = []
    for _ in range(count):
        n = rng.randint(1, 4)
        obs = readings(gw, n, start=start, kind=rng.choice(list(Kind)), t0=t0)
        out += payloads(gw, obs, n)
        start += n
    return out, start


def publish_all(stack: Stack, creds: dict[str, str], stream: list[tuple[str, bytes]]) -> list[str]:
    """Publish each (gateway, payload) as that gateway, QoS 1, ``WINDOW`` in flight; wait for
    every PUBACK. Returns the problems (a refusal, a missing PUBACK, a disconnect)."""
    clients = {gw: gateway_client(stack, gw, pw) for gw, pw in creds.items()}
    problems: list[str] = []
    try:
        for start in range(0, len(stream), WINDOW):
            sent = []
            for gw, payload in stream[start : start + WINDOW]:
                c = clients[gw]
                sent.append((gw, c, c.client.publish(obs_topic(gw), payload, qos=1)))
            for gw, c, info in sent:
                with c.acked:  # paho resends after a reconnect; the PUBACK comes then
                    ok = c.acked.wait_for(lambda c=c, mid=info.mid: mid in c.acks, timeout=60)
                if not ok:
                    return [*problems, f"publishing: no PUBACK for a message of {gw} in 60 s"]
                reason = c.acks.pop(info.mid)
                if reason.is_failure:
                    problems.append(f"publishing: the broker refused a message of {gw}: {reason}")
    finally:
        for gw, c in clients.items():
            disconnects = getattr(c, "disconnects", None)
            if disconnects is not None and disconnects.qsize():
                problems.append(f"publishing: {gw} was disconnected {disconnects.qsize()} times")
            c.close()
    return problems


def dead_letter_counts(conn: psycopg.Connection, topics: list[str]) -> dict[str, int]:
    rows = conn.execute(
        "SELECT topic, count(*) FROM dead_letters WHERE topic = ANY(%s) GROUP BY topic",
        (topics,),
    ).fetchall()
    return {t: 0 for t in topics} | dict(rows)


def settle(
    conn: psycopg.Connection,
    ingest: RunningIngest,
    expected: dict[str, int],
    valid_gw: str,
    n_valid: int,
) -> None:
    """Wait until ingest has handled everything, nothing moves any more, or it is gone."""
    deadline = time.monotonic() + SETTLE_S
    last: object = None
    moved = time.monotonic()
    while time.monotonic() < deadline:
        now = (dead_letter_counts(conn, list(expected)), count_rows(conn, valid_gw)[0])
        if all(now[0][t] >= n for t, n in expected.items()) and now[1] >= n_valid:
            time.sleep(0.5)  # a duplicate would show up now
            return
        if now != last:
            last, moved = now, time.monotonic()
        quiet = time.monotonic() - moved
        if quiet > 15 or (not ingest.thread.is_alive() and quiet > 2):
            return
        time.sleep(0.25)


@dataclass
class ShapeResult:
    published: int = 0
    codes: Counter[str] = field(default_factory=Counter)
    missing: int = 0
    extra: int = 0
    stored_readings: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    undocumented: Counter[str] = field(default_factory=Counter)
    pii: int = 0
    nul: int = 0
    examples: list[str] = field(default_factory=list)

    def problems(self) -> list[tuple[str, int]]:
        """(what went wrong, how many of its payloads)."""
        out = [
            ("no dead letter", self.missing),
            ("stored as readings", self.stored_readings),
            ("extra dead letters", self.extra),
            *sorted(self.faults.items()),
            *((f"undocumented code {c!r}", n) for c, n in sorted(self.undocumented.items())),
            ("personal data in the reason", self.pii),
            ("NUL in the reason", self.nul),
        ]
        return [(what, n) for what, n in out if n]


def fault_of(code: str, reason: str) -> str:
    """``internal_error (RecursionError)``, ``storage_refused (the database's first words)``."""
    if code == "internal_error":
        m = re.search(r"\((\w+)\(", reason)
        return f"internal_error ({m.group(1) if m else reason[:60]})"
    detail = reason.split("refused it: ", 1)[-1]
    return f"storage_refused ({detail[:70]})"


def ids_in(payload: bytes) -> list[str]:
    """The observation ids a lenient parser would read from a payload."""
    if len(payload) > 300_000:
        return []
    try:
        doc = json.loads(payload)
        return [str(o["id"]) for o in doc["observations"]]
    except Exception:  # RecursionError, not JSON, not a batch: nothing to store
        return []


def analyse(
    conn: psycopg.Connection,
    hostile: list[tuple[str, Hostile]],
    allowed: set[str],
) -> tuple[dict[tuple[str, str], ShapeResult], list[str]]:
    """Per (category, shape): what became of its payloads. Plus problems not tied to one."""
    results: dict[tuple[str, str], ShapeResult] = defaultdict(ShapeResult)
    pending: dict[tuple[str, bytes], deque[tuple[str, str]]] = defaultdict(deque)
    by_id: dict[str, tuple[str, str]] = {}
    for gw, h in hostile:
        key = (h.category, h.shape)
        results[key].published += 1
        pending[(obs_topic(gw), hashlib.sha256(h.payload).digest())].append(key)
        for oid in ids_in(h.payload):
            by_id.setdefault(oid, key)
    topics = sorted({obs_topic(gw) for gw, _ in hostile})
    has_sha = conn.execute(
        "SELECT 1 FROM information_schema.columns"
        " WHERE table_name = 'dead_letters' AND column_name = 'payload_sha256'"
    ).fetchone()
    digest = "coalesce(payload_sha256, sha256(payload))" if has_sha else "sha256(payload)"
    rows = conn.execute(
        f"SELECT topic, {digest}, reason_code, reason FROM dead_letters"
        " WHERE topic = ANY(%s) ORDER BY id",
        (topics,),
    ).fetchall()
    other: list[str] = []
    for topic, sha, code, reason in rows:
        keys = pending.get((topic, bytes(sha)))
        if not keys:
            other.append(f"a dead letter on {topic} for no payload published once more: {code}")
            continue
        key = keys.popleft()
        r = results[key]
        r.codes[code] += 1
        if code in HUB_FAULTS:
            r.faults[fault_of(code, reason)] += 1
        elif code not in allowed:
            r.undocumented[code] += 1
        if PII_RE.search(reason):
            r.pii += 1
        if "\x00" in reason:
            r.nul += 1
        if not r.examples and (code in HUB_FAULTS or PII_RE.search(reason) or "\x00" in reason):
            r.examples.append(reason[:150])
    for keys in pending.values():
        for key in keys:
            results[key].missing += 1
    gws = sorted({gw for gw, _ in hostile})
    for (oid,) in conn.execute(
        "SELECT id::text FROM observations WHERE gateway_id = ANY(%s)", (gws,)
    ).fetchall():
        key = by_id.get(oid)
        if key is None:
            other.append(f"a reading stored for a hostile gateway from no known payload: {oid}")
        else:
            results[key].stored_readings += 1
    overflow = conn.execute("SELECT to_regclass('dead_letter_overflow')").fetchone()[0]
    if overflow is not None:
        (capped,) = conn.execute(
            "SELECT coalesce(sum(messages), 0) FROM dead_letter_overflow"
            " WHERE gateway_id = ANY(%s)",
            (gws,),
        ).fetchone()
        if capped:
            other.append(f"{capped} hostile messages were only counted (dead_letter_overflow)")
    return results, other[:20]


def log_problems(records: list[logging.LogRecord]) -> list[str]:
    mine = [r for r in records if r.name == "ingest" or r.name.startswith("ingest.")]
    pii = [r.getMessage() for r in mine if PII_RE.search(r.getMessage())]
    tracebacks = [
        r
        for r in mine
        if r.exc_info or r.exc_text or "Traceback (most recent call last)" in r.getMessage()
    ]
    out = []
    if pii:
        out.append(f"log: {len(pii)} records of ingest repeat personal data, e.g. {pii[0][:150]!r}")
    if tracebacks:
        kinds = Counter(
            type(r.exc_info[1]).__name__ if r.exc_info and r.exc_info[1] else "?"
            for r in tracebacks
        )
        out.append(
            f"log: {len(tracebacks)} records of ingest carry a traceback ({dict(kinds)}),"
            f" e.g. {tracebacks[0].getMessage()[:150]!r}"
        )
    return out


def report(
    results: dict[tuple[str, str], ShapeResult], *, ingest_stopped: bool, limit: int = 250
) -> list[str]:
    """Per category a summary line, then its failing shapes grouped by what went wrong.
    When ingest stopped, a missing dead letter says nothing about the shape: shapes with
    only that are left out."""
    lines = []
    by_category: dict[str, list[tuple[str, ShapeResult]]] = defaultdict(list)
    for (category, shape), r in results.items():
        by_category[category].append((shape, r))
    for category, shapes in sorted(by_category.items()):
        total = sum(r.published for _, r in shapes)
        codes = sum((r.codes for _, r in shapes), Counter())
        missing = sum(r.missing for _, r in shapes)
        failing = [(s, r) for s, r in sorted(shapes) if r.problems()]
        lines.append(
            f"[{category}] {total} published, {missing} without a dead letter,"
            f" {len(failing)} of {len(shapes)} shapes fail; codes {dict(codes.most_common())}"
        )
        groups: dict[tuple[str, ...], list[tuple[str, ShapeResult]]] = defaultdict(list)
        for shape, r in failing:
            signature = tuple(what for what, _ in r.problems())
            if not (ingest_stopped and signature == ("no dead letter",)):
                groups[signature].append((shape, r))
        for signature, members in sorted(groups.items(), key=lambda g: -len(g[1])):
            counts = Counter()
            for _, r in members:
                counts.update(dict(r.problems()))
            what = "; ".join(f"{w} x{counts[w]}" for w in signature)
            names = ", ".join(f"{s} ({r.published})" for s, r in members[:12])
            more = f" and {len(members) - 12} more" if len(members) > 12 else ""
            example = next((r.examples[0] for _, r in members if r.examples), None)
            lines.append(f"  {what}: {names}{more}")
            if example:
                lines.append(f"    e.g. {example!r}")
    if len(lines) > limit:
        lines = [*lines[:limit], f"... and {len(lines) - limit} more lines"]
    return lines


def last_error(records: list[logging.LogRecord]) -> str:
    errors = [
        r.getMessage()
        for r in records
        if r.levelno >= logging.ERROR and r.name.split(".")[0] == "ingest" and not r.exc_info
    ]
    return f"; ingest's last error: {errors[-1][:200]!r}" if errors else ""


def test_hostile_payloads_each_become_one_named_dead_letter_and_ingest_stays_up(
    stack: Stack,
    registry: psycopg.Connection,
    homes: Homes,
    fuzz_ingest: RunningIngest,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="ingest")
    allowed = documented_codes() - HUB_FAULTS
    valid_gw, valid_pw = homes.valid
    now = datetime.now(UTC)
    rng = random.Random(SEED)
    hostile: list[tuple[str, Hostile]] = []
    for gw, _ in homes.hostile:
        generator = HostileGenerator(rng, gw, other_gateway=valid_gw, now=now)
        hostile += [(gw, h) for h in generator.generate(HOSTILE_PER_HOME)]
    if CATEGORIES:
        hostile = [(gw, h) for gw, h in hostile if h.category in CATEGORIES]
        assert hostile, f"no category of {sorted(CATEGORIES)} exists"
    else:
        assert len(hostile) >= 10_000
    t0 = (now - timedelta(days=3)).replace(minute=0, second=0, microsecond=0)
    valid, next_start = valid_messages(rng, valid_gw, t0, VALID_MESSAGES)
    n_valid = next_start
    stream = [(gw, h.payload) for gw, h in hostile] + [(valid_gw, p) for p in valid]
    rng.shuffle(stream)
    creds = {valid_gw: valid_pw} | dict(homes.hostile)

    problems = publish_all(stack, creds, stream)
    # After every hostile message is with the broker: one more valid reading.
    final = readings(valid_gw, 1, start=next_start, t0=t0)
    problems += publish_all(
        stack, {valid_gw: valid_pw}, [(valid_gw, payloads(valid_gw, final, 1)[0])]
    )
    n_valid += 1
    expected = Counter(obs_topic(gw) for gw, _ in hostile)
    settle(registry, fuzz_ingest, dict(expected), valid_gw, n_valid)

    if not fuzz_ingest.thread.is_alive():
        why = f"run() raised {fuzz_ingest.died[0]!r}" if fuzz_ingest.died else "run() returned"
        problems.append(f"ingest is not running at the end: {why}{last_error(caplog.records)}")
    stored_final = registry.execute(
        "SELECT count(*) FROM observations WHERE id = %s", (final[0].id,)
    ).fetchone()[0]
    if stored_final != 1:
        problems.append("the valid message published after all hostile ones was not stored")
    rows, distinct = count_rows(registry, valid_gw)
    if (rows, distinct) != (n_valid, n_valid):
        problems.append(
            f"valid readings: {n_valid} published, {rows} rows and {distinct} distinct ids stored"
        )
    valid_dead = registry.execute(
        "SELECT reason_code, count(*) FROM dead_letters WHERE topic = %s GROUP BY 1",
        (obs_topic(valid_gw),),
    ).fetchall()
    if valid_dead:
        problems.append(f"valid messages became dead letters: {dict(valid_dead)}")
    counts = dead_letter_counts(registry, sorted(expected))
    for topic, n in sorted(expected.items()):
        if counts[topic] != n:
            problems.append(f"{topic}: {n} hostile messages, {counts[topic]} dead letters")
    results, other = analyse(registry, hostile, allowed)
    problems += other
    problems += log_problems(caplog.records)
    problems += report(results, ingest_stopped=not fuzz_ingest.thread.is_alive())
    failing = [ln for ln in problems if not ln.startswith(("[", "  "))]
    if failing or any(r.problems() for r in results.values()):
        pytest.fail(
            f"seed {SEED}: {len(hostile)} hostile and {len(valid) + 1} valid messages"
            " (VV_FUZZ_CATEGORIES=<category> publishes one category only)\n" + "\n".join(problems),
            pytrace=False,
        )
