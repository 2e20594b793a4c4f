"""Decode throughput of the six characteristic decoders against a bare struct.unpack baseline.

Run: .venv/bin/python bench/decode_bench.py [--seconds 0.3]

For each characteristic, the same payload is decoded in a loop for about --seconds, then
unpacked with one precompiled struct.Struct covering the same fields (no validation, no
units, no flags: the floor any Python decoder stands on). Both are measured in this run, on
this machine; the ratio is what the checks and conversions cost. No assertions on time.
"""

from __future__ import annotations

import argparse
import platform
import struct
import sys
import time
from collections.abc import Callable

from gateway.decoders import DECODERS
from gateway.sig import CHARACTERISTIC_NAMES

# (characteristic, payload, struct format covering the payload's fields)
CASES: list[tuple[str, str, str]] = [
    ("2A35", "1E 8A00 5800 7800 0000 04 11 14 29 3B 3C00 01 2700", "<BHHHHBBBBBHBH"),
    ("2A37", "1E 55 3200 2100", "<BBHH"),
    ("2A1C", "06 B00E00FE DC07 0C 05 0B 32 1B 04", "<BIHBBBBBB"),
    ("2A9D", "0E E336 E807 02 1D 08 00 00 03 F400 F506", "<BHHBBBBBBHH"),
    ("2A5E", "0F 6100 4800 E807 03 0A 07 1E 0F 8040 200800 0FF0", "<BHHHBBBBBH3sH"),
    ("2A5F", "1C 5F00 5A00 2000 000000 57F0", "<BHHH3sH"),
]


def rate(fn: Callable[[bytes], object], data: bytes, seconds: float) -> tuple[int, float]:
    """(calls, elapsed s): batches of 1,000 calls until ``seconds`` have passed."""
    fn(data)  # warm up (imports, caches)
    count = 0
    start = time.perf_counter()
    while True:
        for _ in range(1000):
            fn(data)
        count += 1000
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return count, elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.3, help="time per measurement")
    args = parser.parse_args(argv)

    print(f"decode throughput; Python {platform.python_version()} on {platform.machine()}, "
          f"{args.seconds:g} s per measurement, one thread")
    head = (f"{'char':<5} {'name':<27} {'bytes':>5} {'count':>8} {'secs':>5} "
            f"{'decode/s':>10} {'struct/s':>11} {'ratio':>6}")
    print(head)
    print("-" * len(head))
    for char, text, fmt in CASES:
        data = bytes.fromhex(text)
        layout = struct.Struct(fmt)
        assert layout.size == len(data), (char, layout.size, len(data))  # same bytes, all read
        decoder = DECODERS[char]
        n_dec, t_dec = rate(decoder, data, args.seconds)
        n_raw, t_raw = rate(layout.unpack, data, args.seconds)
        dec_per_s = n_dec / t_dec
        raw_per_s = n_raw / t_raw
        print(f"{char:<5} {CHARACTERISTIC_NAMES[char]:<27} {len(data):>5} {n_dec:>8} "
              f"{t_dec:>5.2f} {dec_per_s:>10,.0f} {raw_per_s:>11,.0f} "
              f"{raw_per_s / dec_per_s:>5.0f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
