"""``vitalvagt simulate``: virtual patients with known deteriorations (docs/simulation.md).

Each subcommand adds itself to the ``simulate`` group in ``register_cli``; ``cohort`` writes a
cohort directory; ``fleet`` publishes one over MQTT, ``--ble-homes`` of its homes through
emulated BLE devices and the real gateway code (simulator/ble_fleet.py).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import date
from pathlib import Path

from vitalvagt.settings import Settings

# Equal to simulator.cohort.DEFAULT_START (a test checks): written out so that building the
# parser does not import numpy, which a gateway install may not have.
DEFAULT_START = date(2025, 1, 6)


def _whole(text: str, low: int, high: int | None = None, *, what: str) -> int:
    """A whole number from the command line between ``low`` and ``high``, or a clear error."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < low or (high is not None and value > high):
        raise argparse.ArgumentTypeError(f"{value} must be {what}")
    return value


def _positive(text: str) -> int:
    return _whole(text, 1, what="at least 1")


def _non_negative(text: str) -> int:
    return _whole(text, 0, what="0 or more")


def _seed(text: str) -> int:
    return _whole(text, 0, 2**63 - 1, what="between 0 and 2**63-1")


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date like 2025-01-06") from None


def _cohort(args: argparse.Namespace, settings: Settings) -> int:
    # Imported here: numpy loads only when a simulate command runs, not for every `vitalvagt`.
    from simulator.cohort import CohortSpec, write_cohort
    from simulator.cohort_format import GroupChoice
    from simulator.parameters import VARIANTS

    spec = CohortSpec(args.patients, args.days, args.seed, args.start, GroupChoice(args.group))
    summary = write_cohort(args.out, spec, params=VARIANTS[args.variant], overwrite=args.force)
    print(
        f"wrote cohort to {summary.path}: {spec.patients} patients x {spec.days} days from "
        f"{spec.start} (seed {spec.seed}, group {spec.group.value}, variant {args.variant}): "
        f"{summary.observations} observations, {summary.clinical_events} clinical events, "
        f"{summary.events - summary.clinical_events} artefacts, in {summary.seconds:.1f} s "
        f"({summary.patient_days_per_s:,.0f} patient-days/s)"
    )
    return 0


def _add_cohort(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "cohort",
        help="write a cohort of virtual patients to a directory",
        description="Generate N virtual patients over D days and write a versioned cohort "
        "directory: cohort.json (seed, parameters, checksums), patients.jsonl, "
        "observations.csv.gz (wire-format fields) and events.csv (ground truth: "
        "deteriorations and artefacts). The same arguments give byte-identical files. Needs "
        "nothing running (no database, no broker); docs/simulation.md describes the model "
        "and the format.",
    )
    p.add_argument("--patients", type=_positive, required=True, metavar="N",
                   help="number of patients (ids sim-p00001..., gateways sim-gw-00001...)")
    p.add_argument("--days", type=_positive, required=True, metavar="D",
                   help="number of days to simulate")
    p.add_argument("--seed", type=_seed, required=True, metavar="S",
                   help="random seed; patient i depends only on the seed and i")
    p.add_argument("--out", type=Path, required=True, metavar="DIR",
                   help="directory to write (created if missing)")
    p.add_argument("--start", type=_date, default=DEFAULT_START, metavar="YYYY-MM-DD",
                   help=f"first local day, Europe/Copenhagen (default {DEFAULT_START}); pick "
                   "recent dates for publishing, as the hub refuses readings from the future")
    p.add_argument("--group", choices=["copd", "heart_failure", "both", "mixed"],
                   default="mixed",
                   help="patient group for everyone, or mixed (default: 50%% COPD, 40%% heart "
                   "failure, 10%% both)")
    p.add_argument("--variant", choices=["standard", "hard"], default="standard",
                   help="standard (default) or hard: noisier patients, subtler and more varied "
                   "events, benign look-alikes (docs/simulation.md, \"The hard variant\")")
    p.add_argument("--force", action="store_true",
                   help="overwrite a cohort already in DIR")
    p.set_defaults(handler=_cohort)


def broker_sync(settings: Settings, broker_config_dir: Path | None) -> Callable[[], object] | None:
    """What the fleet calls once its gateways are provisioned, so that the broker lets them
    in: the embedded stack rewrites its password files and reloads its broker; with
    VV_DATABASE_URL set (a container deployment), the gateway password file in
    ``broker_config_dir`` (the broker's configuration volume) is rewritten from the database,
    and that broker reloads it itself (docker-compose.yml). None: the operator must."""
    if settings.database_url is None:
        from vitalvagt.stack import Stack

        return Stack(settings).sync_broker_users
    if broker_config_dir is None:
        return None
    url = settings.database_url.get_secret_value()

    def write() -> None:
        from simulator.fleet import write_gateway_passwords

        write_gateway_passwords(url, broker_config_dir)

    return write


def _fleet(args: argparse.Namespace, settings: Settings) -> int:
    import tempfile
    from datetime import timedelta

    from simulator.cohort import CohortSpec, write_cohort
    from simulator.cohort_format import GroupChoice
    from simulator.fleet_run import run_fleet
    from simulator.fleet_stats import FleetStats
    from vitalvagt.endpoints import database_url, gateway_broker

    homes = args.homes
    if args.cohort is not None:
        from simulator.cohort_format import read_info

        homes = read_info(args.cohort).patients
    if not 0 <= args.ble_homes <= homes:
        print(f"vitalvagt simulate fleet: --ble-homes {args.ble_homes} must be between 0 and "
              f"the fleet's {homes} homes", file=sys.stderr)
        return 2
    url = database_url(settings)
    ep = gateway_broker(settings)  # the TLS gateway listener; homes log in as their gateways
    with tempfile.TemporaryDirectory(prefix="vv-fleet-") as tmp:
        cohort_dir = args.cohort
        if cohort_dir is None:
            start = args.start or date.today() - timedelta(days=args.days)
            days = args.days + args.live_days
            spec = CohortSpec(args.homes, days, args.seed, start, GroupChoice.MIXED)
            cohort_dir = write_cohort(tmp, spec, overwrite=True).path
            live = f", the last {args.live_days} live" if args.live_days else ""
            print(f"generated {args.homes} homes x {days} days from {start}{live},"
                  f" seed {args.seed}")

        last: list[tuple[int, int]] = [(-1, -1)]

        def progress(st: FleetStats) -> None:
            now = (st.messages_acked, st.ble.readings_sent if st.ble else 0)
            if now == last[0]:
                return
            last[0] = now
            ble = "" if st.ble is None else (f"; BLE homes: {st.ble.readings_sent}/"
                                             f"{st.ble.readings} readings measured")
            print(f"fleet: {st.messages_acked}/{st.messages_published} messages acknowledged,"
                  f" {st.readings_acked} readings{ble}", flush=True)

        stats = run_fleet(
            database_url=url, host=ep.host, port=ep.port, tls_ca=ep.tls_ca,
            cohort_dir=str(cohort_dir),
            speed=args.speed, max_connections=args.max_connections, progress=progress,
            on_provisioned=broker_sync(settings, args.broker_config_dir),
            ble_homes=args.ble_homes, settings=settings, continuous=args.continuous,
        )  # fmt: skip
    print(f"fleet done: {stats.homes} direct homes, {stats.readings_acked} readings in"
          f" {stats.messages_acked} messages acknowledged by the broker")
    if stats.ble is not None:
        from simulator.ble_fleet import inexact_summary

        b = stats.ble
        print(f"BLE homes done: {b.homes} homes, {b.readings_sent} of {b.readings} readings "
              f"measured by emulated devices and stored by their gateways, "
              f"{b.observations_acked} of {b.observations} observations acknowledged by the "
              f"broker; {b.unsendable} not sendable; not exact over BLE: {inexact_summary(b)}")
    return 0


def _add_fleet(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "fleet",
        help="publish simulated homes over MQTT to a running hub",
        description="Provision a patient and a gateway per simulated home, then publish each "
        "home's readings over MQTT with its own credentials, accelerated by --speed and never "
        "ahead of the real clock. Needs the database and broker (the embedded stack, or "
        "VV_DATABASE_URL and VV_MQTT_HOST/PORT); after provisioning, the embedded broker is "
        "restarted to load them; for a container broker, --broker-config-dir rewrites its "
        "gateway password file (docker-compose.yml's broker restarts on it), else run "
        "`broker config` and restart the broker.",
    )
    p.add_argument("--homes", type=_positive, default=20, metavar="N", help="number of homes")
    p.add_argument("--days", type=_positive, default=14, metavar="D", help="days of readings")
    p.add_argument("--live-days", type=_non_negative, default=0, metavar="L",
                   help="the cohort goes on L days past today: once the history is replayed, "
                   "those readings are published in real time as they fall due (the fleet's "
                   "clock never passes the real one), so the fleet runs on (default 0)")
    p.add_argument("--seed", type=_seed, default=1, metavar="S", help="cohort seed")
    p.add_argument("--start", type=_date, default=None, metavar="YYYY-MM-DD",
                   help="first day (default: D days before today, so the replay ends now)")
    p.add_argument("--speed", type=float, default=1440.0,
                   help="simulated seconds per real second (default 1440: a day a minute)")
    p.add_argument("--cohort", type=Path, default=None, metavar="DIR",
                   help="publish this cohort directory instead of generating one")
    p.add_argument("--max-connections", type=_positive, default=200,
                   help="homes connected at once (each home connects when readings are due)")
    p.add_argument("--ble-homes", type=int, default=0, metavar="K",
                   help="the first K homes publish through emulated BLE devices and the real "
                   "gateway code (own outbox, id and password each) instead of directly; "
                   "meant for a few tens of homes (default 0)")
    p.add_argument("--continuous", type=_non_negative, default=0, metavar="C",
                   help="C homes with an oximeter (COPD patients with the best saturation first) "
                   "also stream continuous oximetry, about a reading a second, once the fleet "
                   "runs in real time, as an oximeter worn at night does (default 0)")
    p.add_argument("--broker-config-dir", type=Path, default=None, metavar="DIR",
                   help="with VV_DATABASE_URL (a container broker): after provisioning, rewrite "
                   "the gateway password file in DIR, the broker's configuration written by "
                   "`vitalvagt broker config`, from the database; docker-compose.yml's broker "
                   "reloads it when it changes")
    p.set_defaults(handler=_fleet)


def _home(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio

    from simulator.emulated_home import run_emulated_home

    if args.measure_every_s < 1:
        print("vitalvagt simulate home: --measure-every-s must be at least 1 (device clocks "
              "tick in seconds)", file=sys.stderr)
        return 2
    asyncio.run(run_emulated_home(settings, measure_every_s=args.measure_every_s,
                                  duration_s=args.duration_s,
                                  say=lambda line: print(line, flush=True)))
    return 0


def _add_home(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "home",
        help="run the real gateway against five emulated BLE devices in this process",
        description="Run an emulated home until Ctrl-C or SIGTERM: five emulated Bluetooth "
        "health devices (blood pressure with user slot 1, pulse oximeter, heart rate, scale "
        "with user slot 1, thermometer) in this process, paired automatically and measuring "
        "plausible values periodically, read by the unchanged gateway, which publishes to the "
        "broker. Gateway id gw-emulated-1 unless VV_GATEWAY_ID is set, data in "
        "<VV_STATE_DIR>/gateway-emulated unless VV_GATEWAY_DIR is set. Needs the broker: on "
        "the embedded stack (`vitalvagt stack up`, no VV_MQTT_HOST / VV_MQTT_PASSWORD) the "
        "gateway is provisioned automatically (new MQTT password, broker reloaded).",
    )
    p.add_argument("--measure-every-s", type=float, default=30.0, metavar="N",
                   help="seconds between measurements of every device (default 30)")
    p.add_argument("--duration-s", type=float, default=None, metavar="N",
                   help="stop after N seconds (default: run until Ctrl-C)")
    p.set_defaults(handler=_home)


def register_cli(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``vitalvagt simulate`` and its subcommands to the top-level parser."""
    simulate = subparsers.add_parser(
        "simulate",
        help="virtual patients with known deteriorations",
        description="Virtual COPD and heart-failure patients with ground truth, for tests, "
        "rule evaluation and load. `cohort` writes a cohort directory and needs nothing "
        "running.",
    )
    sub = simulate.add_subparsers(dest="simulate_command", required=True, metavar="SUBCOMMAND")
    _add_cohort(sub)
    _add_fleet(sub)
    _add_home(sub)
