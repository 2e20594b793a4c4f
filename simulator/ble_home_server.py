"""Serve an emulated home of five devices over TCP, to a gateway in another process.

Run ``python -m simulator.ble_home_server --port 9000`` and point the gateway at it with
``VV_BLE_TRANSPORT=bumble:tcp-client:127.0.0.1:9000``. It prints ``READY <spec>`` and one
``DEVICE <address> <name>`` line per device, then serves until SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from collections.abc import Sequence

from simulator.ble_devices import standard_devices
from simulator.ble_home import EmulatedHome


async def serve(host: str, port: int, *, requires_bonding: bool = False) -> None:
    """Serve a standard home to one central over TCP until interrupted."""
    async with EmulatedHome(standard_devices(requires_bonding=requires_bonding)) as home:
        spec = await home.link.serve_hci_tcp(host, port)
        print(f"READY {spec}", flush=True)
        for device in home.devices:
            print(f"DEVICE {device.address} {device.name}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve five emulated BLE health devices")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000, help="0 picks a free port")
    parser.add_argument("--bonding", action="store_true", help="blood pressure cuff needs bonding")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(serve(args.host, args.port, requires_bonding=args.bonding))


if __name__ == "__main__":
    main()
