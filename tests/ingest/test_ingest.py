"""Ingest against the real mosquitto and TimescaleDB."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time

import psycopg
import pytest

from ingest.bounds import PREFIX_BYTES
from ingest.deadletters import replay
from ingest.errors import IngestError
from ingest.messages import Message
from ingest.service import IngestService
from tests.ingest.conftest import (
    add_home,
    count_rows,
    gateway_client,
    ingest_config,
    payloads,
    readings,
    wait_for,
)
from tests.mqtt import end_session
from vitalvagt.db.notify import notify_chunks
from vitalvagt.stack import Stack

pytestmark = pytest.mark.stack


def test_same_message_three_times_and_same_reading_in_two_messages_stored_once(
    stack: Stack, registry: psycopg.Connection, ingest: IngestService
) -> None:
    gw, pw, patient = add_home(registry, stack, "dup")
    obs = readings(gw, 10)
    one, two = payloads(gw, obs[:6], 6)[0], payloads(gw, obs[4:], 6)[0]  # 4 and 5 in both
    c = gateway_client(stack, gw, pw)
    try:
        for payload in (one, one, one, two):
            assert not c.publish(f"vv/v1/gw/{gw}/obs", payload).is_failure
    finally:
        c.close()
    wait_for(
        lambda: ingest.metrics.messages_in._value.get() >= 4 and ingest._inbox.empty(),
        10,
        "four messages",
    )
    wait_for(lambda: count_rows(registry, gw)[0] == 10, 10, "10 rows")
    assert count_rows(registry, gw) == (10, 10)
    assert ingest.metrics.duplicates._value.get() >= 6 + 2
    row = registry.execute(
        "SELECT patient_id, kind, unit, device_address FROM observations WHERE id = %s",
        (obs[0].id,),
    ).fetchone()
    assert row == (patient, "spo2", "%", "00:11:22:33:44:55")


MALFORMED = {
    "not_json": b"\x00\x01 definitely not json",
    "unsupported_version": json.dumps({"v": 7}).encode(),
    "missing_field": json.dumps({"v": 1, "gateway_id": "gw-bad"}).encode(),
}


def test_each_malformed_class_is_dead_lettered_with_its_reason_and_ingest_keeps_going(
    stack: Stack, registry: psycopg.Connection, ingest: IngestService
) -> None:
    gw, pw, _ = add_home(registry, stack, "bad")
    good = readings(gw, 1)[0]
    doc = json.loads(payloads(gw, [good], 1)[0])

    def variant(**changes: object) -> bytes:
        d = json.loads(json.dumps(doc))
        d["observations"][0].update(changes)
        return json.dumps(d).encode()

    cases = {
        **MALFORMED,
        "unknown_kind": variant(kind="glucose"),
        "wrong_unit": variant(unit="mmHg"),
        "implausible_value": variant(value=140),
        "future_time": variant(measured_at="2099-01-01T00:00:00Z"),
        "oversize": b"{" + b" " * 300_000 + b"}",
        "gateway_mismatch": json.dumps({**doc, "gateway_id": "gw-someone"}).encode(),
        "id_mismatch": variant(id="00000000-0000-4000-8000-000000000000"),
        # Valid JSON that no PostgreSQL text column can hold: once, it stopped ingest.
        "invalid_field": variant(device={"address": "00:11:22:33:44:55", "model": "PO\u000060"}),
    }
    c = gateway_client(stack, gw, pw)
    try:
        for payload in cases.values():
            c.publish(f"vv/v1/gw/{gw}/obs", payload)
        c.publish(f"vv/v1/gw/{gw}/obs", payloads(gw, [good], 1)[0])
    finally:
        c.close()
    wait_for(lambda: count_rows(registry, gw)[0] == 1, 10, "the good reading after the bad ones")
    rows = registry.execute(
        "SELECT reason_code, reason, payload, payload_size, payload_sha256, payload_truncated"
        " FROM dead_letters WHERE gateway_id = %s ORDER BY id",
        (gw,),
    ).fetchall()
    by_code = {r[0]: r for r in rows}
    assert set(by_code) == set(cases)
    for code, (_, reason, payload, size, digest, truncated) in by_code.items():
        assert reason.startswith(code + ": "), reason
        sent = cases[code]
        assert (size, bytes(digest)) == (len(sent), hashlib.sha256(sent).digest())
        if code == "oversize":  # can never be replayed: its first bytes, length and hash
            assert truncated and bytes(payload) == sent[:PREFIX_BYTES]
        else:
            assert not truncated and bytes(payload) == sent, "the raw payload is kept as it came"


def test_unknown_gateway_is_dead_lettered_then_stored_after_registration_and_replay(
    stack: Stack, registry: psycopg.Connection, ingest: IngestService
) -> None:
    # The gateway has broker credentials but is not registered with a patient yet.
    gw, pw, patient = add_home(registry, stack, "late")
    registry.execute("UPDATE gateways SET patient_id = NULL WHERE id = %s", (gw,))
    obs = readings(gw, 5)
    c = gateway_client(stack, gw, pw)
    try:
        c.publish(f"vv/v1/gw/{gw}/obs", payloads(gw, obs, 5)[0])
    finally:
        c.close()
    wait_for(lambda: registry.execute(
        "SELECT count(*) FROM dead_letters WHERE gateway_id = %s", (gw,)).fetchone()[0] == 1,
        10, "the dead letter")  # fmt: skip
    code = registry.execute(
        "SELECT reason_code FROM dead_letters WHERE gateway_id = %s", (gw,)
    ).fetchone()[0]
    assert code == "gateway_unassigned"
    assert count_rows(registry, gw) == (0, 0)
    registry.execute("UPDATE gateways SET patient_id = %s WHERE id = %s", (patient, gw))
    outcomes = replay(stack.database_url())
    mine = [o for o in outcomes if o.stored]
    assert len(mine) >= 1
    assert count_rows(registry, gw) == (5, 5)
    left = registry.execute(
        "SELECT count(*) FROM dead_letters WHERE gateway_id = %s AND replayed_at IS NULL", (gw,)
    ).fetchone()[0]
    assert left == 0


def test_a_bug_in_decoding_dead_letters_the_message_and_ingest_keeps_going(
    stack: Stack, registry: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A fault injected into the decoder stage (no real input makes the decoder raise): the
    # message must be kept with the reason, and the readings after it still stored.
    import ingest.service as service_module

    real = service_module.decode_message

    def buggy(msg: Message, **kw: object) -> object:
        if b"boom" in msg.payload:
            raise RuntimeError("boom")
        return real(msg, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(service_module, "decode_message", buggy)
    gw, pw, _ = add_home(registry, stack, "bug")
    service = IngestService(ingest_config(stack, "vv-ingest-bug"))
    thread = threading.Thread(target=service.run, name="ingest-bug")
    thread.start()
    try:
        assert service.wait_connected(10)
        time.sleep(0.2)
        c = gateway_client(stack, gw, pw)
        try:
            c.publish(f"vv/v1/gw/{gw}/obs", b'{"boom": 1}')
            for payload in payloads(gw, readings(gw, 3), 1):
                c.publish(f"vv/v1/gw/{gw}/obs", payload)
        finally:
            c.close()
        wait_for(lambda: count_rows(registry, gw)[0] == 3, 10, "the readings after the bad one")
        (code, reason, payload), = registry.execute(
            "SELECT reason_code, reason, payload FROM dead_letters WHERE topic = %s",
            (f"vv/v1/gw/{gw}/obs",),
        ).fetchall()
        assert (code, bytes(payload)) == ("internal_error", b'{"boom": 1}')
        assert reason.startswith("internal_error: ") and "RuntimeError" in reason
    finally:
        service.stop()
        thread.join(15)
        end_session(stack, "vv-ingest", service.config.client_id)
    assert not thread.is_alive()


def test_a_message_the_database_refuses_is_dead_lettered_and_the_rest_of_its_batch_stored(
    stack: Stack, registry: psycopg.Connection, ingest: IngestService
) -> None:
    # A real refusal by PostgreSQL (a CHECK constraint added for the test), for a message
    # that passes every wire and registry check: retrying would refuse it forever.
    gw, pw, _ = add_home(registry, stack, "refused")
    obs = readings(gw, 6)
    doc = json.loads(payloads(gw, [obs[2]], 1)[0])
    doc["observations"][0]["value"] = 71.25  # plausible, and what the constraint refuses
    refused = json.dumps(doc).encode()
    registry.execute("ALTER TABLE observations ADD CONSTRAINT test_refuse CHECK (value <> 71.25)")
    try:
        c = gateway_client(stack, gw, pw)
        try:
            for i, payload in enumerate(payloads(gw, obs, 1)):
                c.publish(f"vv/v1/gw/{gw}/obs", refused if i == 2 else payload)
        finally:
            c.close()
        wait_for(lambda: count_rows(registry, gw)[0] == 5, 15, "the five other readings")
        wait_for(
            lambda: registry.execute(
                "SELECT count(*) FROM dead_letters WHERE gateway_id = %s", (gw,)
            ).fetchone()[0] == 1,
            10,
            "the refused message's dead letter",
        )
        (dl_id,) = registry.execute(
            "SELECT id FROM dead_letters WHERE gateway_id = %s", (gw,)
        ).fetchone()
        (still,) = replay(stack.database_url(), ids=[dl_id])
        assert not still.stored and "storage_refused" in still.detail
    finally:
        registry.execute("ALTER TABLE observations DROP CONSTRAINT test_refuse")
    (after_fix,) = replay(stack.database_url(), ids=[dl_id])
    assert after_fix.stored, after_fix.detail
    assert count_rows(registry, gw)[0] == 6
    code, reason, payload = registry.execute(
        "SELECT reason_code, reason, payload FROM dead_letters WHERE gateway_id = %s", (gw,)
    ).fetchone()
    assert (code, bytes(payload)) == ("storage_refused", refused)
    assert reason.startswith("storage_refused: ") and "test_refuse" in reason
    stored = {r[0] for r in registry.execute(
        "SELECT id FROM observations WHERE gateway_id = %s", (gw,)).fetchall()}  # fmt: skip
    assert stored == {o.id for o in obs}


def test_notify_chunks_stay_under_postgresql_s_payload_limit(registry: psycopg.Connection) -> None:
    # 300 pseudonyms of the longest allowed length would be 20 kB in one NOTIFY.
    patients = [f"p{i:03d}-" + "x" * 58 for i in range(300)]
    chunks = list(notify_chunks(patients))
    assert [p for c in chunks for p in c] == patients and len(chunks) > 1
    for chunk in chunks:  # the real server takes every one of them
        payload = json.dumps({"patients": chunk})
        assert len(payload.encode()) < 8000
        registry.execute("SELECT pg_notify('vv_test', %s)", (payload,))


def test_ingest_exits_when_its_decoder_stops(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A fault injected outside the per-message guard: a stalled ingest that reports itself
    # healthy would be worse than one that exits for its service manager to restart.
    def broken(self: IngestService) -> list[Message]:
        raise RuntimeError("injected")

    monkeypatch.setattr(IngestService, "_collect", broken)
    service = IngestService(ingest_config(stack, "vv-ingest-decoder-dies"))
    with caplog.at_level(logging.ERROR), pytest.raises(IngestError, match="decoder thread"):
        service.run()
    end_session(stack, "vv-ingest", service.config.client_id)
    assert any("the decoder stopped" in r.getMessage() for r in caplog.records)
