"""Ingest end to end: publishers -> mosquitto -> ingest -> committed rows, against raw baselines.

Run: .venv/bin/python bench/ingest_bench.py [--quick]

Measured in one run, on a private embedded stack (temporary directory, free ports):
  baseline 1  the same paho publisher -> mosquitto_sub, QoS 1, no database (messages/s)
  baseline 2  bare binary COPY into the observations hypertable (rows/s)
  case (a)    one reading per message, end to end (readings/s), against baseline 1
  case (b)    50 readings per message, end to end (readings/s), target >= 100,000, with the
              CPU that ingest, PostgreSQL, mosquitto and the publisher spent per reading
  case (b+r)  case (b) with receipts: each message carries a batch_id, ingest answers on the
              gateway's receipt topic after the commit and the publisher receives them;
              alternated with (b) in the same run, target >= 90 % of (b)
  case (b2)   the same with two ingest processes on the shared subscription
  latency     steady 1,000 readings/s for a while: publish-to-commit p50/p99 (target p99 <= 200 ms)
Ingest runs as its own process (`vitalvagt ingest run`), as in production.
"""

from __future__ import annotations

import argparse
import os
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vitalvagt.db.gateways import provision_gateway  # noqa: E402
from vitalvagt.kinds import Kind  # noqa: E402
from vitalvagt.mqtt_cleanup import client_tls_context  # noqa: E402
from vitalvagt.observation import DeviceRef, Observation  # noqa: E402
from vitalvagt.settings import Settings  # noqa: E402
from vitalvagt.stack import Stack  # noqa: E402
from vitalvagt.wire import ObservationBatch, Receipt, encode, make_batch  # noqa: E402

# Within the hub's window (it refuses readings over a year old and from the future).
T0 = (datetime.now(UTC) - timedelta(days=30)).replace(microsecond=0)
WINDOW = 1000  # QoS 1 messages in flight per publisher


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_payloads(
    gw: str, readings: int, per_message: int, *, offset_s: int = 0, receipts: bool = False
) -> list[bytes]:
    dev = DeviceRef(address="AA:00:00:00:00:01", model="bench")
    obs = [
        Observation.create(
            gateway_id=gw, kind=Kind.SPO2, value=90 + i % 10, unit="%",
            measured_at=T0 + timedelta(seconds=offset_s + i), received_at=T0, device=dev,
        )
        for i in range(readings)
    ]  # fmt: skip
    return [
        encode(make_batch(gw, obs[i : i + per_message],
                          batch_id=f"bench:{offset_s + i}" if receipts else None))
        for i in range(0, readings, per_message)
    ]  # fmt: skip


def client(stack: Stack, user: str, password: str, cid: str) -> mqtt.Client:
    """A gateway publisher on the stack's TLS gateway listener (as tablets connect)."""
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv5)
    c.username_pw_set(user, password)
    c.tls_set_context(client_tls_context(stack.paths.ca_cert))
    c.max_inflight_messages_set(WINDOW)
    c.connect("127.0.0.1", stack.settings.mqtt_tls_port)
    c.loop_start()
    return c


def publish_all(c: mqtt.Client, topic: str, payloads: list[bytes]) -> None:
    """Publish with at most WINDOW unacknowledged, and wait for every PUBACK."""
    infos: list[mqtt.MQTTMessageInfo] = []
    for i, p in enumerate(payloads):
        infos.append(c.publish(topic, p, qos=1))
        if i >= WINDOW:
            infos[i - WINDOW].wait_for_publish(60)
    for info in infos[-WINDOW:]:
        info.wait_for_publish(60)


def baseline_mqtt(stack: Stack, gw: str, pw: str, payloads: list[bytes]) -> float:
    """The same publisher to mosquitto_sub (C, its own process, QoS 1): no Python receiver,
    no database."""
    sub = subprocess.Popen(
        ["mosquitto_sub", "-V", "mqttv5", "-h", "127.0.0.1", "-p", str(stack.settings.mqtt_port),
         "-u", "vv-ingest", "-P", stack.secrets()["vv-ingest"], "-q", "1",
         "-t", f"vv/v1/gw/{gw}/obs", "-C", str(len(payloads))],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(1.0)  # subscribed
    pub = client(stack, gw, pw, "bench-pub-raw")
    t = time.perf_counter()
    publish_all(pub, f"vv/v1/gw/{gw}/obs", payloads)
    sub.wait(120)
    dt = time.perf_counter() - t
    pub.disconnect()
    pub.loop_stop()
    return len(payloads) / dt


def baseline_copy(database_url: str, rows: int) -> float:
    cols = ("id, measured_at, received_at, patient_id, gateway_id, device_address, kind, value,"
            " unit, time_source, flags")
    data = [
        (uuid.uuid4(), T0 + timedelta(seconds=i), T0, "bench-copy", "gw-bench-copy", "AA", "spo2",
         95.0, "%", "device", [])
        for i in range(rows)
    ]  # fmt: skip
    with psycopg.connect(database_url) as conn:
        t = time.perf_counter()
        with conn.cursor() as cur, cur.copy(
            f"COPY observations ({cols}) FROM STDIN (FORMAT BINARY)"
        ) as copy:
            copy.set_types(["uuid", "timestamptz", "timestamptz", "text", "text", "text", "text",
                            "float8", "text", "text", "text[]"])
            for row in data:
                copy.write_row(row)
        conn.commit()
        dt = time.perf_counter() - t
        conn.execute("DELETE FROM observations WHERE gateway_id = 'gw-bench-copy'")
        conn.commit()
    return rows / dt


def count(conn: psycopg.Connection, gw: str) -> int:
    sql = "SELECT count(*) FROM observations WHERE gateway_id = %s"
    return conn.execute(sql, (gw,)).fetchone()[0]


def cpu_seconds(ingest_pids: set[int]) -> dict[str, float]:
    """CPU time (user + system) so far of ingest, PostgreSQL, mosquitto and this process (the
    publisher), from /proc: where the machine's two cores go."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {"ingest": 0.0, "postgres": 0.0, "mosquitto": 0.0, "publisher (bench)": 0.0}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        used = (int(fields[11]) + int(fields[12])) / tick
        if int(pid) in ingest_pids:
            out["ingest"] += used
        elif int(pid) == os.getpid():
            out["publisher (bench)"] += used
        elif comm in ("postgres", "mosquitto"):
            out[comm] += used
    return out


def last_reading(payload: bytes) -> tuple[uuid.UUID, datetime]:
    batch = ObservationBatch.model_validate_json(payload)
    return batch.observations[-1].id, batch.observations[-1].measured_at


def end_to_end(
    stack: Stack, gw: str, pw: str, payloads: list[bytes], readings: int, *,
    receipts: bool = False,
) -> float:  # fmt: skip
    """Readings/s from the first publish until every reading is committed.

    Progress is polled by the last reading's primary key (an index lookup): a count(*) over
    the hypertable every 20 ms would cost PostgreSQL more than the writes being measured.
    When the last reading is there, one count confirms that all are."""
    last_id, last_at = last_reading(payloads[-1])
    with psycopg.connect(stack.database_url(), autocommit=True) as conn:
        already = count(conn, gw)  # an earlier round's readings of this gateway
        readings += already
        pub = client(stack, gw, pw, f"bench-pub-{gw}")
        named = [0]  # batches named in the receipts received
        all_named = threading.Event()

        def on_receipt(_c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
            named[0] += len(Receipt.model_validate_json(msg.payload).batches)
            if named[0] >= len(payloads):
                all_named.set()

        if receipts:  # the publisher takes its receipts, as a gateway does
            pub.on_message = on_receipt
            pub.subscribe(f"vv/v1/gw/{gw}/receipt", qos=1)
        t = time.perf_counter()
        sender = threading.Thread(target=publish_all, args=(pub, f"vv/v1/gw/{gw}/obs", payloads))
        sender.start()
        probe = "SELECT 1 FROM observations WHERE id = %s AND measured_at = %s"
        while True:
            if conn.execute(probe, (last_id, last_at)).fetchone() and count(conn, gw) >= readings:
                break
            if time.perf_counter() - t > 300:
                raise RuntimeError(f"{gw}: only {count(conn, gw)} of {readings} stored in 300 s")
            time.sleep(0.02)
        if receipts and not all_named.wait(60):
            raise RuntimeError(f"{gw}: receipts named {named[0]} of {len(payloads)} batches")
        dt = time.perf_counter() - t
        sender.join()
        pub.disconnect()
        pub.loop_stop()
        stored = count(conn, gw)
        if stored != readings:
            raise RuntimeError(f"{gw}: {stored} rows for {readings} readings")
    return (readings - already) / dt


def latency(stack: Stack, gw: str, pw: str, rate: int, seconds: int) -> list[float]:
    """Publish one reading per message at `rate`/s; commit time from LISTEN (NOTIFY at commit)."""
    payloads = make_payloads(gw, rate * seconds, 1, offset_s=10**6)
    ids = [Observation.model_validate_json(p[p.index(b"[") + 1 : -2]).id for p in payloads]
    sent: dict[uuid.UUID, float] = {}
    committed: dict[uuid.UUID, float] = {}
    listen = psycopg.connect(stack.database_url(), autocommit=True)
    listen.execute("LISTEN vv_observations")
    query = psycopg.connect(stack.database_url(), autocommit=True)
    stop = threading.Event()

    def watch() -> None:
        since = datetime(2000, 1, 1, tzinfo=UTC)
        while not stop.is_set():
            if select.select([listen.fileno()], [], [], 0.1)[0]:
                now = time.perf_counter()
                for _ in listen.notifies(timeout=0):
                    pass
                rows = query.execute(
                    "SELECT id, ingested_at FROM observations WHERE gateway_id = %s"
                    " AND ingested_at >= %s", (gw, since - timedelta(seconds=5))).fetchall()
                for oid, at in rows:
                    committed.setdefault(oid, now)
                    since = max(since, at)

    watcher = threading.Thread(target=watch)
    watcher.start()
    pub = client(stack, gw, pw, f"bench-pub-{gw}")
    start = time.perf_counter()
    for i, (p, oid) in enumerate(zip(payloads, ids, strict=True)):
        due = start + i / rate
        while (wait := due - time.perf_counter()) > 0:
            time.sleep(wait)
        sent[oid] = time.perf_counter()
        pub.publish(f"vv/v1/gw/{gw}/obs", p, qos=1)
    deadline = time.perf_counter() + 30
    while len(committed) < len(ids) and time.perf_counter() < deadline:
        time.sleep(0.05)
    stop.set()
    watcher.join()
    pub.disconnect()
    pub.loop_stop()
    listen.close()
    query.close()
    return sorted((committed[i] - sent[i]) * 1000 for i in ids if i in committed)


def start_ingest(stack: Stack, instance: str = "bench") -> subprocess.Popen[str]:
    """`vitalvagt ingest run` on the bench's stack, as its own process; returns once subscribed."""
    env = {**os.environ, "VV_STATE_DIR": str(stack.paths.root),
           "VV_PG_PORT": str(stack.settings.pg_port),
           "VV_MQTT_PORT": str(stack.settings.mqtt_port),
           "VV_MQTT_TLS_PORT": str(stack.settings.mqtt_tls_port),
           "PYTHONPATH": str(ROOT)}  # fmt: skip
    ingest = subprocess.Popen(
        [sys.executable, "-m", "vitalvagt.cli", "ingest", "run", "--instance", instance,
         "--health-port", "0", "--no-jobs", "--end-session-on-exit"],
        env=env, stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert ingest.stderr is not None
    for line in ingest.stderr:
        if "subscribed" in line:
            break
    threading.Thread(target=ingest.stderr.read, daemon=True).start()
    return ingest


def case_b(
    stack: Stack, creds: dict[str, str], ingests: list[subprocess.Popen[str]], n: int, gw: str,
    raw_copy: float, *, receipts: bool = False, offset_s: int = 0,
) -> float:  # fmt: skip
    """50 readings a message end to end, and where the CPU went (per process, per reading)."""
    payloads = make_payloads(gw, n, 50, receipts=receipts, offset_s=offset_s)
    pids = {p.pid for p in ingests}
    before = cpu_seconds(pids)
    rate = end_to_end(stack, gw, creds[gw], payloads, n, receipts=receipts)
    used = {k: v - before[k] for k, v in cpu_seconds(pids).items()}
    label = "with receipts" if receipts else "no receipts"
    print(f"            {len(ingests)} ingest process(es), {label}: {rate:,.0f} readings/s;"
          f" CPU per reading, {sum(used.values()) * rate / n:.2f} of {os.cpu_count()} cores busy: "
          + ", ".join(f"{k} {v / n * 1e6:.1f} us" for k, v in used.items()))
    return rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller runs (a smoke test)")
    args = ap.parse_args()
    n_a = 4_000 if args.quick else 20_000
    n_b = 50_000 if args.quick else 200_000
    lat_s = 5 if args.quick else 20

    state = Path(tempfile.mkdtemp(prefix="vv-bench-", dir="/tmp"))
    os.chmod(state, 0o755)
    stack = Stack(Settings(state_dir=state, pg_port=free_port(), mqtt_port=free_port(),
                           mqtt_tls_port=free_port()))
    stack.up()
    ingest = None
    try:
        with psycopg.connect(stack.database_url(), autocommit=True) as conn:
            conn.execute("INSERT INTO municipalities VALUES ('0000', 'Bench')")
            conn.execute("INSERT INTO acute_teams (id, municipality_id, name)"
                         " VALUES ('bench', '0000', 'Bench')")
            creds = {}
            for gw in ("gw-bench-raw", "gw-bench-a", "gw-bench-b", "gw-bench-br", "gw-bench-b2",
                       "gw-bench-lat"):
                conn.execute("INSERT INTO patients (id, municipality_id, team_id, patient_group)"
                             " VALUES (%s, '0000', 'bench', 'copd')", (f"p-{gw}",))
                creds[gw] = provision_gateway(conn, gw, patient_id=f"p-{gw}")
        stack.sync_broker_users()
        print(f"conditions: {os.cpu_count()} cores; QoS 1, {WINDOW} messages in flight; "
              f"mosquitto, PostgreSQL 15 + TimescaleDB and ingest on this machine")

        single = make_payloads("gw-bench-raw", n_a, 1)
        raw_mqtt = baseline_mqtt(stack, "gw-bench-raw", creds["gw-bench-raw"], single)
        print(f"baseline 1  bare MQTT publisher->subscriber: {raw_mqtt:,.0f} msg/s"
              f" ({n_a:,} messages)")
        raw_copy = baseline_copy(stack.database_url(), n_b)
        print(f"baseline 2  bare COPY into observations:     {raw_copy:,.0f} rows/s ({n_b:,} rows)")

        ingest = start_ingest(stack)

        a = end_to_end(stack, "gw-bench-a", creds["gw-bench-a"],
                       make_payloads("gw-bench-a", n_a, 1), n_a)
        print(f"case (a)    1 reading/message end to end:    {a:,.0f} readings/s "
              f"= {100 * a / raw_mqtt:.0f} % of bare MQTT (target >= 60 %)")
        # (b) and (b+r) alternated, twice each, so that a slow moment hits both alike.
        b_runs, br_runs = [], []
        for r in range(2):
            b_runs.append(case_b(stack, creds, [ingest], n_b, "gw-bench-b", raw_copy,
                                 offset_s=r * n_b))
            br_runs.append(case_b(stack, creds, [ingest], n_b, "gw-bench-br", raw_copy,
                                  receipts=True, offset_s=r * n_b))  # fmt: skip
        b, br = statistics.mean(b_runs), statistics.mean(br_runs)
        print(f"case (b)    50 readings/message end to end:  {b:,.0f} readings/s "
              f"= {100 * b / raw_copy:.0f} % of bare COPY (target >= 100,000/s)")
        print(f"case (b+r)  the same with receipts:          {br:,.0f} readings/s "
              f"= {100 * br / b:.0f} % of (b) (target >= 90 %)")
        second = start_ingest(stack, "bench-2")
        try:
            b2 = case_b(stack, creds, [ingest, second], n_b, "gw-bench-b2", raw_copy)
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(30)
        print(f"case (b2)   the same, two ingest processes on the shared subscription: "
              f"{b2:,.0f} readings/s")
        lat = latency(stack, "gw-bench-lat", creds["gw-bench-lat"], 1000, lat_s)
        if lat:
            p50, p99 = statistics.median(lat), lat[min(len(lat) - 1, int(0.99 * len(lat)))]
            print(f"latency     1,000 readings/s for {lat_s} s: publish->commit p50 {p50:.0f} ms,"
                  f" p99 {p99:.0f} ms, max {lat[-1]:.0f} ms ({len(lat):,} readings;"
                  " target p99 <= 200 ms)")
    finally:
        if ingest and ingest.poll() is None:
            ingest.send_signal(signal.SIGTERM)
            ingest.wait(30)
        stack.down()
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
