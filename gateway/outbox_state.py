"""The outbox's ``state.json``: the watermark and what the outbox lost.

``acked``: every seq up to it is acknowledged by the broker. ``acknowledge`` writes it
without fsync: should a power cut undo it, the readings are sent again and the hub stores
them once, by their stable id (and ``open`` takes it from the oldest file left if it lags).
``dropped_total``: readings dropped because the outbox or the disk was full.
``damaged_total``: readings found damaged on disk and skipped; ``damaged``: the seqs of the
damaged readings not yet passed by the watermark, so that a restart does not count them
again. The counts are written with fsync: they must not be lost.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from gateway.outbox_segments import STATE_FILE, TMP_SUFFIX, log


def read_state(directory: Path) -> dict[str, Any]:
    """The state of the outbox in ``directory``: acked, dropped_total, damaged_total (ints)
    and damaged (a set of seqs); all zero and empty if there is none or it is unreadable."""
    state: dict[str, Any] = {"acked": 0, "dropped_total": 0, "damaged_total": 0}
    try:
        raw = json.loads((directory / STATE_FILE).read_text())
        for key in state:
            state[key] = int(raw.get(key, 0))
        state["damaged"] = {int(s) for s in raw.get("damaged", ())}
    except FileNotFoundError:
        state["damaged"] = set()
    except (ValueError, TypeError, AttributeError, OSError) as exc:
        # Losing the watermark only means acknowledged readings are sent again.
        log.error("outbox %s: unreadable %s (%s); resending what is on disk", directory,
                  STATE_FILE, exc)  # fmt: skip
        state = {"acked": 0, "dropped_total": 0, "damaged_total": 0, "damaged": set()}
    return state


def write_state(
    directory: Path,
    *,
    acked: int,
    dropped_total: int,
    damaged_total: int,
    damaged: set[int],
    fsync: bool,
) -> None:
    """Replace the state file (a temporary file, renamed; fsync'd first if ``fsync``)."""
    tmp = directory / f"{STATE_FILE}{TMP_SUFFIX}"
    with open(tmp, "w") as f:
        json.dump(
            {
                "acked": acked,
                "dropped_total": dropped_total,
                "damaged_total": damaged_total,
                "damaged": sorted(damaged),
            },
            f,
        )
        if fsync:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, directory / STATE_FILE)


def recorded_losses(path: Path) -> tuple[int, int]:
    """(dropped when full, found damaged) as the outbox in ``path`` last recorded them, read
    without opening it (no lock: the gateway may be running)."""
    try:
        raw = json.loads((path / STATE_FILE).read_text())
        return int(raw.get("dropped_total", 0)), int(raw.get("damaged_total", 0))
    except (OSError, ValueError, TypeError, AttributeError):
        return 0, 0
