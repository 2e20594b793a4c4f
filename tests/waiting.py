"""Waiting in tests for something another thread or process does (a broker, a service)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(cond: Callable[[], T], timeout_s: float, what: str, *, every_s: float = 0.1) -> T:
    """Wait until ``cond()`` is truthy; returns that value. Fails naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while not (value := cond()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(every_s)
    return value
