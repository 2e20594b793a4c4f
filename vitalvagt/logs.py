"""Logging: one event a line, UTC timestamps, never personal data (ids are pseudonyms)."""

from __future__ import annotations

import logging
import sys
import time

from vitalvagt.errors import ConfigError

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class _UTCFormatter(logging.Formatter):
    converter = time.gmtime


def setup_logging(level: str = "INFO") -> None:
    name = level.strip().upper()
    if name not in LEVELS:
        raise ConfigError(f"VV_LOG_LEVEL={level!r} is not a log level (one of {', '.join(LEVELS)})")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        _UTCFormatter(
            "%(asctime)s.%(msecs)03dZ %(levelname)s %(name)s %(message)s", "%Y-%m-%dT%H:%M:%S"
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(name)
    # apscheduler logs every run of every job at INFO (each second for the engine's sweeps):
    # only its warnings and errors are events.
    logging.getLogger("apscheduler").setLevel(max(logging.WARNING, root.level))


class Throttle:
    """At most ``per_interval`` log lines per key and interval; counts what it held back.

    For lines a sender can provoke at will (a gateway flooding bad messages): the log shows
    that it happens and how often, without growing at the sender's pace.
    """

    def __init__(self, *, per_interval: int = 5, interval_s: float = 60.0) -> None:
        self.per_interval = per_interval
        self.interval_s = interval_s
        self._windows: dict[object, tuple[float, int, int]] = {}  # key -> (start, shown, held)

    def allow(self, key: object, *, now: float | None = None) -> tuple[bool, int]:
        """(log this line?, lines held back for this key since the last one shown)."""
        now = time.monotonic() if now is None else now
        start, shown, held = self._windows.get(key, (now, 0, 0))
        if now - start >= self.interval_s:
            start, shown = now, 0
        if shown < self.per_interval:
            self._windows[key] = (start, shown + 1, 0)
            return True, held
        self._windows[key] = (start, shown, held + 1)
        if len(self._windows) > 10_000:  # many senders: forget the oldest windows
            for k in list(self._windows)[:5_000]:
                del self._windows[k]
        return False, 0
