"""Closing what paho leaves open when a connection to the broker never completed.

After ``disconnect()`` and ``loop_stop()`` paho still holds the socket of a connection that
never got its CONNACK (a TLS handshake cut short, a broker too busy to answer). It stays open
until the garbage collector finds it, and on the broker's side it is one of the broker's open
files: a fleet of homes retrying against a slow broker piles them up until the broker accepts
nobody (docs/operations.md, "Broker capacity").
"""

from __future__ import annotations

from typing import Any


def close_leftover_socket(client: Any) -> None:
    """Close the socket a stopped paho client still holds, if any (call after loop_stop)."""
    sock = client.socket()
    if sock is not None:
        sock.close()
