"""Ingest's counters for Prometheus, and the health and metrics HTTP endpoint."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

if TYPE_CHECKING:
    from ingest.messages import Rejected
    from ingest.store import WriteResult


class Metrics:
    """One registry per service instance (tests run several in one process)."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.messages_in = Counter("vv_ingest_messages", "MQTT messages received", registry=r)
        self.rows_written = Counter("vv_ingest_rows_written", "readings stored", registry=r)
        self.duplicates = Counter(
            "vv_ingest_duplicates_skipped", "readings already stored (redelivered)", registry=r
        )
        self.dead_letters = Counter(
            "vv_ingest_dead_letters", "messages kept as dead letters", ["code"], registry=r
        )
        self.dead_letters_capped = Counter(
            "vv_ingest_dead_letters_capped",
            "dead letters over a gateway's or the total cap: counted, not kept",
            ["code"], registry=r,
        )  # fmt: skip
        self.retained_ignored = Counter(
            "vv_ingest_retained_ignored", "retained messages on obs topics, ignored", registry=r
        )
        self.receipts_sent = Counter(
            "vv_ingest_receipts", "receipts sent to gateways after a commit", registry=r
        )
        self.db_retries = Counter("vv_ingest_db_retries", "batch writes retried", registry=r)
        self.batch_seconds = Histogram(
            "vv_ingest_batch_seconds", "validate+write+commit time of a batch", registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )  # fmt: skip
        self.oldest_unacked_s = Gauge(
            "vv_ingest_oldest_unacked_seconds", "age of the oldest unacknowledged message",
            registry=r,
        )  # fmt: skip

    def record_batch(
        self, result: WriteResult, seconds: float, rejected: Sequence[Rejected]
    ) -> None:
        self.rows_written.inc(result.inserted)
        self.duplicates.inc(result.duplicates)
        for r in rejected:
            self.dead_letters.labels(r.code).inc()
        self.batch_seconds.observe(seconds)


def serve_health(
    host: str, port: int, metrics: Metrics, health: Callable[[], dict[str, object]]
) -> ThreadingHTTPServer:
    """/healthz (JSON, 503 when unhealthy) and /metrics (Prometheus text) in a daemon thread."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                body, ctype, code = (
                    generate_latest(metrics.registry),
                    "text/plain; version=0.0.4",
                    200,
                )
            elif self.path == "/healthz":
                state = health()
                body = json.dumps(state).encode()
                ctype, code = "application/json", 200 if state.get("healthy") else 503
            else:
                body, ctype, code = b'{"detail": "not found"}', "application/json", 404
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass  # no access log: the endpoint is polled

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="ingest-health", daemon=True).start()
    return server
