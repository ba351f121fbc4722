"""Queue a grid of DVC experiments, one per grid point, each pinned to a device in turn.

    ferbench-sweep --devices cuda:0,cuda:1 -S train.lr=0.001,0.0003 -S train.epochs=20,40 --start

queues 4 experiments (`dvc exp run --queue -S device=cuda:K -S ...`) and starts them 2 at a time
(`dvc queue start -j 2`, one worker per device). This only calls DVC: compare the results with
`dvc exp show`, bring one back with `dvc exp apply <name>`. Each queued experiment runs in its own
temporary copy of the workspace and reruns only the stages its params change.
"""

from __future__ import annotations

import argparse
import math
import re
import shlex
import subprocess
import sys
from collections.abc import Sequence

from ferbench.errors import FerbenchError

MAX_EXPERIMENTS = 1000  # a grid is a handful of runs; more is a typo, and DVC keeps a git ref for each
PARAM_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*")  # dotted params.yaml path


def check_setting(text: str) -> str:
    """`key=v1,v2,...` checked for what DVC would misread or we assign ourselves; returns the key."""
    key, sep, values = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise FerbenchError(f"-S {text!r}: write KEY=VALUE[,VALUE...], e.g. -S train.lr=0.001,0.0003")
    if not PARAM_KEY.fullmatch(key):
        raise FerbenchError(f"-S {text!r}: {key!r} is not a params.yaml key (dotted names, e.g. train.lr)")
    if not all(value.strip() for value in values.split(",")):
        raise FerbenchError(f"-S {text!r}: an empty value; give each value, e.g. -S {key}=0.001,0.0003")
    if key == "device":
        raise FerbenchError("-S device=...: use --devices; the sweep assigns them in turn")
    return key


def grid(settings: Sequence[str]) -> list[list[str]]:
    """Every combination of the settings' values, each as its KEY=VALUE list, expanded by DVC's own code for
    `dvc exp run --queue -S` (Hydra's sweep syntax: `a=1,2`, `range(1,5)`, `choice(...)`, quoted values)."""
    from dvc.utils.cli_parse import to_path_overrides
    from dvc.utils.hydra import get_hydra_sweeps, to_hydra_overrides
    from hydra.errors import HydraException

    keys = [check_setting(text) for text in settings]
    if len(set(keys)) != len(keys):
        raise FerbenchError("-S: each key once (give all its values comma-separated)")
    settings = [text.strip() for text in settings]
    try:
        parsed = to_hydra_overrides(settings)
    except HydraException as exc:
        raise FerbenchError(f"-S: DVC cannot read {' '.join(settings)!r} ({str(exc).splitlines()[0]})") from None
    size = math.prod(len(list(item.sweep_iterator())) if item.is_sweep_override() else 1 for item in parsed)
    if size > MAX_EXPERIMENTS:
        raise FerbenchError(f"-S: the grid has {size:,} points; at most {MAX_EXPERIMENTS:,} experiments a sweep")
    return [sweep["params.yaml"] for sweep in get_hydra_sweeps(to_path_overrides(settings))]


def queue_commands(points: Sequence[Sequence[str]], devices: Sequence[str], name: str | None) -> list[list[str]]:
    """One `dvc exp run --queue` per grid point, devices assigned round-robin (the one part that is ours)."""
    commands = []
    for number, point in enumerate(points, start=1):
        command = ["dvc", "exp", "run", "--queue"]
        if name:
            command += ["--name", f"{name}-{number}"]
        if devices:
            command += ["-S", f"device={devices[(number - 1) % len(devices)]}"]
        for setting in point:
            command += ["-S", setting]
        commands.append(command)
    return commands


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ferbench-sweep",
        description=__doc__.split("\n\n")[0],
        epilog="Run it in the project (or a workspace) whose params.yaml the experiments change.",
    )
    parser.add_argument(
        "-S",
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="a params.yaml key and the values to sweep (repeat for a grid)",
    )
    parser.add_argument(
        "--devices",
        default="",
        help="comma-separated devices (cuda:0,cuda:1), assigned to the experiments in turn; "
        "empty: each experiment keeps params.yaml's device",
    )
    parser.add_argument("--name", help="experiment names NAME-1, NAME-2, ... (default: DVC's random names)")
    parser.add_argument("--start", action="store_true", help="then run `dvc queue start -j <number of devices, or 1>`")
    parser.add_argument("--dry-run", action="store_true", help="print the DVC commands without running them")
    args = parser.parse_args(argv)
    try:
        if not args.settings:
            raise FerbenchError("nothing to sweep: give at least one -S KEY=V1,V2")
        devices = [device.strip() for device in args.devices.split(",") if device.strip()]
        commands = queue_commands(grid(args.settings), devices, args.name)
        workers = max(1, len(devices))
        if args.start:
            commands.append(["dvc", "queue", "start", "-j", str(workers)])
        for command in commands:
            print(shlex.join(command), flush=True)
            if not args.dry_run:
                done = subprocess.run([sys.executable, "-m", *command])  # this environment's DVC
                if done.returncode != 0:
                    raise FerbenchError(
                        f"`{shlex.join(command)}` failed (exit {done.returncode}); see its output above"
                    )
    except FerbenchError as exc:
        print(f"sweep: error: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        print("sweep: dry run, nothing queued")
    elif not args.start:
        print(f"sweep: queued {len(commands)}; run them with `dvc queue start -j {workers}`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
