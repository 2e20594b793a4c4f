"""Closing what paho leaves open when a connection to the broker never completed.

Two leftovers, both of them one of the broker's open files until the garbage collector finds
them: a fleet of homes retrying against a slow or restarting broker piles them up until the
broker accepts nobody (docs/operations.md, "Broker capacity").

- After ``disconnect()`` and ``loop_stop()`` paho still holds the socket of a connection that
  never got its CONNACK (a broker too busy to answer): ``close_leftover_socket``.
- When the TLS handshake itself fails (the broker restarted or closed the connection in the
  middle of it), paho 2.2 drops the half-made TLS socket without closing it; it is closed
  only when it is freed, with a ResourceWarning. ``client_tls_context`` gives paho a context
  whose sockets close themselves when their handshake fails.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any


def close_leftover_socket(client: Any) -> None:
    """Close the socket a stopped paho client still holds, if any (call after loop_stop)."""
    sock = client.socket()
    if sock is not None:
        sock.close()


class _ClosedOnFailedHandshake(ssl.SSLSocket):
    """A TLS socket that closes itself when its handshake fails, whoever holds it."""

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except BaseException:
            self.close()
            raise


def client_tls_context(ca_file: str | Path) -> ssl.SSLContext:
    """What ``client.tls_set(ca_certs=ca_file, tls_version=PROTOCOL_TLS_CLIENT)`` builds
    (the broker's certificate and host name verified against ``ca_file``), for
    ``client.tls_set_context``, with sockets that close themselves on a failed handshake."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED and check_hostname
    context.load_verify_locations(str(ca_file))
    context.sslsocket_class = _ClosedOnFailedHandshake
    return context
