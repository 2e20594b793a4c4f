"""Ingest against hostile input and outages (issue 9): nothing stops it, nothing accepted is
lost, dead letters stay bounded, no sender text reaches a log, /healthz tells the truth, and
gateways get a receipt after the commit. Real broker, real database."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

import ingest.service as service_module
from ingest.bounds import DeadLetterLimits
from ingest.service import IngestService
from tests.ingest.conftest import (
    add_home,
    count_rows,
    gateway_client,
    ingest_config,
    payloads,
    publish_as,
    readings,
    running_ingest,
    wait_for,
)
from tests.mqtt import connect_gateway, end_session
from tests.proxy import Proxy
from vitalvagt.kinds import Kind
from vitalvagt.observation import DeviceRef, Observation
from vitalvagt.stack import Stack
from vitalvagt.wire import Receipt, ReceiptOutcome, encode, make_batch, receipt_topic

pytestmark = pytest.mark.stack


def _obs_doc(gw: str, i: int = 0) -> dict:
    return json.loads(payloads(gw, readings(gw, 1, start=i), 1)[0])


def _dead_letters(conn: psycopg.Connection, gw: str) -> list[tuple[str, str]]:
    return conn.execute(
        "SELECT reason_code, reason FROM dead_letters WHERE gateway_id = %s ORDER BY id", (gw,)
    ).fetchall()


@contextmanager
def _running(stack: Stack, **config: object) -> Iterator[tuple[IngestService, threading.Thread]]:
    cfg = ingest_config(stack, client_id=f"vv-ingest-h{time.monotonic_ns() % 10**8}")
    service = IngestService(cfg.__class__(**{**cfg.__dict__, **config}))
    with running_ingest(stack, service) as thread:
        yield service, thread


def test_nul_in_a_key_or_an_id_is_a_dead_letter_and_ingest_goes_on(
    stack: Stack, registry: psycopg.Connection, ingest: IngestService, caplog
) -> None:
    """Defect 1: a NUL in a key or in ``id`` became a reason PostgreSQL refused, and ingest
    stopped for good."""
    gw, pw, _ = add_home(registry, stack, "nulkey")
    doc = _obs_doc(gw)
    in_key = json.dumps(doc).replace('"unit"', '"un\\u0000it"', 1).encode()
    in_id = json.dumps(doc).replace(doc["observations"][0]["id"], "1234\\u0000", 1).encode()
    raw_nul = json.dumps(doc).replace('"unit"', '"un\x00it"', 1).encode()
    publish_as(
        stack, gw, pw, [in_key, in_id, raw_nul, payloads(gw, readings(gw, 1, start=5), 1)[0]]
    )
    wait_for(lambda: count_rows(registry, gw)[0] == 1, 15, "the good reading after the NULs")
    letters = _dead_letters(registry, gw)
    assert [code for code, _ in letters] == ["missing_field", "invalid_field", "not_json"]
    assert all("\x00" not in reason for _, reason in letters)
    assert not [r for r in caplog.records if r.exc_info], "no traceback for bad input"


def test_a_retained_bad_message_is_dead_lettered_once_not_on_every_start(
    stack: Stack, registry: psycopg.Connection
) -> None:
    """Defects 1 and 8: retained, it was replayed to ingest on every start (one bad message,
    six dead letters, and before the NUL fix a stop on every start)."""
    gw, pw, _ = add_home(registry, stack, "retained")
    bad = json.dumps(_obs_doc(gw)).replace('"unit"', '"un\\u0000it"', 1).encode()
    for run in range(3):
        with _running(stack) as (_service, _thread):
            if run == 0:
                c = gateway_client(stack, gw, pw)
                info = c.client.publish(f"vv/v1/gw/{gw}/obs", bad, qos=1, retain=True)
                info.wait_for_publish(5)
                c.close()
                wait_for(lambda: len(_dead_letters(registry, gw)) == 1, 10, "the live one")
            else:
                wait_for(lambda: _service.metrics.retained_ignored._value.get() >= 1, 10,
                         "the retained copy to arrive on subscribe")  # fmt: skip
            assert _thread.is_alive()
    assert len(_dead_letters(registry, gw)) == 1
    c = gateway_client(stack, gw, pw)  # clear it: an empty retained message
    c.client.publish(f"vv/v1/gw/{gw}/obs", b"", qos=1, retain=True).wait_for_publish(5)
    c.close()


def test_planted_personal_data_reaches_no_log_and_no_reason(
    stack: Stack, registry: psycopg.Connection, ingest: IngestService, caplog
) -> None:
    """Defect 5: six codes copied the sender's text (a CPR number, a name) into the reason,
    and so into the log. Plants them in every field, then greps every log the stack writes."""
    cpr, name = "010190-1234", "Jens Peter Hansen"
    gw, pw, _ = add_home(registry, stack, "pii")
    base = _obs_doc(gw)
    bad: list[bytes] = []
    for secret in (cpr, name):
        for field in ("id", "kind", "value", "unit", "measured_at", "received_at",
                      "time_source", "reading_id", "body_site", "device"):  # fmt: skip
            d = json.loads(json.dumps(base))
            d["observations"][0][field] = secret
            bad.append(json.dumps(d).encode())
        d = json.loads(json.dumps(base))
        d["observations"][0]["flags"] = [secret]
        bad.append(json.dumps(d).encode())
        d = json.loads(json.dumps(base))
        d["observations"][0][secret] = secret  # as an unknown key
        bad.append(json.dumps(d).encode())
        for top in ("v", "gateway_id", "sent_at", "batch_id", "observations"):
            d = json.loads(json.dumps(base))
            d[top] = secret
            bad.append(json.dumps(d).encode())
        bad.append(json.dumps({**base, secret: 1}).encode())
        bad.append(secret.encode())
    caplog.set_level(logging.DEBUG)
    publish_as(stack, gw, pw, bad)
    # One is valid: a CPR-like "010190-1234" is a well-formed batch id (the gateway's own
    # name for its message, echoed only in its own receipt); the rest are dead letters.
    wait_for(lambda: len(_dead_letters(registry, gw)) == len(bad) - 1, 20, "every dead letter")
    assert count_rows(registry, gw)[0] == 1
    reasons = " ".join(r for _, r in _dead_letters(registry, gw))
    logs = "\n".join(r.getMessage() for r in caplog.records)
    files = "\n".join(
        p.read_text(errors="replace") for p in (stack.paths.mq_log, stack.paths.pg_log)
        if p.exists()
    )  # fmt: skip
    for text, where in ((reasons, "a dead-letter reason"), (logs, "ingest's log"),
                        (files, "the broker's or the database's log")):  # fmt: skip
        for secret in (cpr, name, "0101901234", "Hansen"):
            assert secret not in text, f"{secret!r} appeared in {where}"
    assert "internal_error" not in reasons


def test_dead_letters_are_capped_per_gateway_and_counted_beyond(
    stack: Stack, registry: psycopg.Connection, caplog
) -> None:
    """Defect 6: no bound; 193,000 small ones were all kept."""
    gw, pw, _ = add_home(registry, stack, "flood")
    limits = DeadLetterLimits(per_gateway=10, per_gateway_bytes=10**9)
    with _running(stack, dead_letter_limits=limits) as (service, _thread):
        flood = [f"not json {i}".encode() for i in range(60)]
        publish_as(stack, gw, pw, [*flood, payloads(gw, readings(gw, 1), 1)[0]])
        wait_for(lambda: count_rows(registry, gw)[0] == 1, 15, "the good reading")
        capped = service.metrics.dead_letters_capped.labels("not_json")._value.get()
    assert len(_dead_letters(registry, gw)) == 10
    (messages,) = registry.execute(
        "SELECT sum(messages) FROM dead_letter_overflow WHERE gateway_id = %s", (gw,)
    ).fetchone()
    assert messages == 50 and capped == 50
    cap_lines = [r for r in caplog.records if "dead-letter cap" in r.getMessage()]
    assert 1 <= len(cap_lines) <= 5, "the cap is logged, rate-limited"
    dl_lines = [r for r in caplog.records if "dead letter not_json" in r.getMessage()]
    assert len(dl_lines) <= 5, "dead letters are logged rate-limited"


def test_a_reading_from_a_reset_clock_is_a_too_old_dead_letter(
    stack: Stack, registry: psycopg.Connection, ingest: IngestService
) -> None:
    """Defect 9: a reading measured in 1970 was acknowledged, then deleted by retention."""
    gw, pw, _ = add_home(registry, stack, "clock1970")
    old = readings(gw, 1, t0=datetime(1970, 1, 1, 0, 0, 5, tzinfo=UTC))
    publish_as(stack, gw, pw, payloads(gw, old, 1))
    wait_for(lambda: len(_dead_letters(registry, gw)) == 1, 10, "the dead letter")
    assert _dead_letters(registry, gw)[0][0] == "too_old"
    assert count_rows(registry, gw)[0] == 0


def test_deep_nesting_and_extreme_dates_are_invalid_without_tracebacks(
    stack: Stack, registry: psycopg.Connection, ingest: IngestService, caplog
) -> None:
    """Defect 11: RecursionError and OverflowError became internal_error with a traceback."""
    gw, pw, _ = add_home(registry, stack, "deep")
    doc = _obs_doc(gw)
    deep = ("[" * 10_000 + "]" * 10_000).encode()
    dates = []
    for at in ("0001-01-01T00:00+01:00", "9999-12-31T23:59:59-01:00"):
        d = json.loads(json.dumps(doc))
        d["observations"][0]["measured_at"] = at
        dates.append(json.dumps(d).encode())
    publish_as(stack, gw, pw, [deep, *dates])
    wait_for(lambda: len(_dead_letters(registry, gw)) == 3, 10, "three dead letters")
    assert {code for code, _ in _dead_letters(registry, gw)} <= {"invalid_field", "not_an_object"}
    assert not [r for r in caplog.records if r.exc_info]


def test_each_reading_keeps_its_own_device_model_and_serial(
    stack: Stack, registry: psycopg.Connection, ingest: IngestService
) -> None:
    """Defect 12: a reading's model and serial came from the last message of the batch."""
    gw, pw, _ = add_home(registry, stack, "devmeta")
    at = datetime.now(UTC) - timedelta(hours=1)
    msgs = []
    for i, (model, serial) in enumerate((("PO-60", "A1"), ("PO-60 v2", "A1"))):
        o = Observation.create(
            gateway_id=gw, kind=Kind.SPO2, value=95, unit="%",
            measured_at=at + timedelta(minutes=i), received_at=at + timedelta(minutes=i),
            device=DeviceRef(address="00:11:22:33:44:55", model=model, serial=serial),
        )  # fmt: skip
        msgs.append(encode(make_batch(gw, [o])))
    publish_as(stack, gw, pw, msgs)
    wait_for(lambda: count_rows(registry, gw)[0] == 2, 10, "both readings")
    rows = registry.execute(
        "SELECT device_model, device_serial FROM observations WHERE gateway_id = %s"
        " ORDER BY measured_at",
        (gw,),
    ).fetchall()
    assert rows == [("PO-60", "A1"), ("PO-60 v2", "A1")]


def test_a_gateway_gets_a_receipt_naming_its_batches_after_the_commit(
    stack: Stack, registry: psycopg.Connection, ingest: IngestService
) -> None:
    gw, pw, _ = add_home(registry, stack, "receipt")
    good = encode(make_batch(gw, readings(gw, 3), batch_id="e1:1-3"))
    bad = json.dumps({**_obs_doc(gw, 9), "batch_id": "e1:4-4", "v": 3}).encode()
    none = payloads(gw, readings(gw, 1, start=20), 1)[0]  # a gateway that asks for none
    c = connect_gateway(stack, gw, pw, subscribe=receipt_topic(gw))
    try:
        for m in (good, bad, none):
            c.publish(f"vv/v1/gw/{gw}/obs", m)
        items = {}
        deadline = time.monotonic() + 10
        while len(items) < 2 and time.monotonic() < deadline:
            topic, payload = c.messages.get(timeout=10)
            assert topic == receipt_topic(gw)
            for item in Receipt.model_validate_json(payload).batches:
                items[item.batch_id] = item
    finally:
        c.close()
    assert items["e1:1-3"].outcome is ReceiptOutcome.STORED and items["e1:1-3"].readings == 3
    assert items["e1:4-4"].outcome is ReceiptOutcome.DEAD_LETTER
    assert items["e1:4-4"].code == "unsupported_version"
    assert count_rows(registry, gw)[0] == 4  # stored before the receipt was sent


async def _health_turns(service: IngestService, *, healthy: bool) -> dict:
    """/healthz's state once it says ``healthy`` (or after 10 s)."""
    for _ in range(100):
        if service.health()["healthy"] is healthy:
            break
        await asyncio.sleep(0.1)
    return service.health()


async def test_healthz_turns_unhealthy_while_the_database_is_unreachable(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defect 7: the age of the oldest message was set once, so /healthz said healthy
    through a 66 s PostgreSQL stop. Outage made with a TCP proxy between ingest and the
    database; thresholds shortened for the test."""
    monkeypatch.setattr(service_module, "HEALTH_DB_DOWN_S", 1.0)
    monkeypatch.setattr(service_module, "IDLE_DB_CHECK_S", 0.3)
    proxy = await Proxy(stack.settings.pg_port).start()
    url = stack.database_url().replace(f":{stack.settings.pg_port}/", f":{proxy.port}/")
    cfg = ingest_config(stack, client_id="vv-ingest-health")
    service = IngestService(cfg.__class__(**{**cfg.__dict__, "database_url": url}))
    thread = threading.Thread(target=service.run, name="ingest-health")
    thread.start()
    try:
        assert await asyncio.to_thread(service.wait_connected, 10)
        await asyncio.sleep(1.0)
        assert service.health()["healthy"], service.health()
        await proxy.cut()
        state = await _health_turns(service, healthy=False)
        assert not state["healthy"] and not state["database_reachable"]
        assert any("database unreachable" in p for p in state["problems"]), state
        await proxy.restore()
        assert (await _health_turns(service, healthy=True))["healthy"], service.health()
    finally:
        service.stop()
        await asyncio.to_thread(thread.join, 15)
        await asyncio.to_thread(end_session, stack, "vv-ingest", cfg.client_id)
        assert not thread.is_alive(), "ingest did not stop"
        await proxy.close()


async def test_healthz_turns_unhealthy_while_the_broker_is_unreachable(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defect 7, the broker's side: ingest's connection to mosquitto goes through a TCP proxy
    that the test cuts; threshold shortened for the test."""
    monkeypatch.setattr(service_module, "HEALTH_MQTT_DOWN_S", 1.0)
    proxy = await Proxy(stack.settings.mqtt_port).start()
    cfg = ingest_config(stack, client_id="vv-ingest-health-mqtt")
    service = IngestService(cfg.__class__(**{**cfg.__dict__, "mqtt_port": proxy.port}))
    thread = threading.Thread(target=service.run, name="ingest-health-mqtt")
    thread.start()
    try:
        assert await asyncio.to_thread(service.wait_connected, 10)
        assert service.health()["healthy"], service.health()
        await proxy.cut()
        state = await _health_turns(service, healthy=False)
        assert not state["healthy"] and not state["mqtt_connected"], state
        assert any("broker unreachable" in p for p in state["problems"]), state
        await proxy.restore()
        assert await asyncio.to_thread(service.wait_connected, 40)
        assert service.health()["healthy"], service.health()
    finally:
        service.stop()
        await asyncio.to_thread(thread.join, 15)
        await asyncio.to_thread(end_session, stack, "vv-ingest", cfg.client_id)
        assert not thread.is_alive(), "ingest did not stop"
        await proxy.close()
