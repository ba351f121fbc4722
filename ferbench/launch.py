"""Start a stage in one process, or in several data-parallel ones (`distributed` in params.yaml).

`dvc.yaml` runs the training stages through this launcher with the process counts from
params.yaml, so the launch stays visible there and `dvc repro` stays the one command:

    python -m ferbench.launch --nproc-per-node 2 --nnodes 1 --rdzv-endpoint localhost:29400 --timeout 600 \
        stages.finetune resnet18

One process in all (the default) runs the stage module right here, exactly as
`python -m stages.finetune resnet18` would. More start the stage once per process through
PyTorch's elastic launcher (the engine behind `torchrun`; c10d rendezvous, no restarts): on one
machine on a free local port, on several at `--rdzv-endpoint`, where this machine prints the
command each other machine runs to join. A process that dies stops the others and fails the
stage with one line naming it.
"""

from __future__ import annotations

import argparse
import logging
import os
import runpy
import shlex
import signal
import sys
from typing import Any

from ferbench.errors import FerbenchError

LAUNCHER_LOGGERS = ("torch.distributed.elastic", "torch.distributed.launcher")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m ferbench.launch",
        description=__doc__.split("\n\n")[0],
        epilog="The stage module's own arguments follow its name.",
    )
    parser.add_argument("--nproc-per-node", type=int, default=1, help="processes on this machine (one per GPU)")
    parser.add_argument("--nnodes", type=int, default=1, help="machines taking part (each runs this command)")
    parser.add_argument(
        "--rdzv-endpoint",
        default="localhost:29400",
        help="HOST:PORT where the machines meet (the machine running `dvc repro`); unused on one machine",
    )
    parser.add_argument(
        "--timeout", type=int, default=600, help="seconds to wait for every machine to join (distributed.timeout_s)"
    )
    parser.add_argument("module", help="the stage module, e.g. stages.finetune")
    parser.add_argument("arguments", nargs=argparse.REMAINDER, help="the stage's arguments, e.g. the backbone")
    args = parser.parse_args(argv)
    if args.nproc_per_node < 1 or args.nnodes < 1:
        parser.error("--nproc-per-node and --nnodes must be at least 1 (params.yaml: distributed)")
    return args


def join_command(args: argparse.Namespace) -> str:
    """What every other machine runs (in its clone of the project, same commit, data pulled)."""
    return shlex.join(
        [
            "python",
            "-m",
            "ferbench.launch",
            "--nproc-per-node",
            str(args.nproc_per_node),
            "--nnodes",
            str(args.nnodes),
            "--rdzv-endpoint",
            args.rdzv_endpoint,
            "--timeout",
            str(args.timeout),
            args.module,
            *args.arguments,
        ]
    )


def run_in_process(module: str, arguments: list[str]) -> None:
    """The single-process path: the stage module as `python -m module arguments` would run it."""
    sys.argv = [module, *arguments]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


def root_failure(failures: dict[int, Any]) -> tuple[int, Any]:
    """The process that failed first: not one the launcher itself stopped (SIGTERM) after it."""
    causes = {rank: failure for rank, failure in failures.items() if failure.exitcode != -signal.SIGTERM}
    causes = causes or failures
    rank = min(causes, key=lambda rank: (causes[rank].timestamp, rank))
    return rank, causes[rank]


def launch(args: argparse.Namespace) -> int:
    """Start the stage in every process of this machine and wait; the exit code of the whole."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    for name in LAUNCHER_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    if "OMP_NUM_THREADS" not in os.environ:  # share this machine's cores between its processes
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // args.nproc_per_node))
    single_machine = args.nnodes == 1
    stage = " ".join([args.module.removeprefix("stages."), *args.arguments])
    if not single_machine:
        print(
            f"{stage}: waiting for {args.nnodes - 1} more machine(s) at {args.rdzv_endpoint}; on each, in its clone "
            f"of this project (same commit, data pulled), run:\n  {join_command(args)}",
            file=sys.stderr,
            flush=True,
        )
    config = LaunchConfig(
        min_nodes=args.nnodes,
        max_nodes=args.nnodes,
        nproc_per_node=args.nproc_per_node,
        run_id="ferbench-" + "-".join([args.module, *args.arguments]),
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0" if single_machine else args.rdzv_endpoint,
        rdzv_timeout=args.timeout,
        max_restarts=0,
        monitor_interval=0.5,
    )
    try:
        elastic_launch(config, entrypoint=sys.executable)("-m", args.module, *args.arguments)
    except ChildFailedError as exc:
        rank, failure = root_failure(exc.failures)
        code = failure.exitcode
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        print(
            f"{stage}: error: process rank {rank} {how} (its output is above); the other processes were stopped",
            file=sys.stderr,
        )
        return 2 if code == 2 else 1
    except Exception as exc:  # rendezvous: a machine did not join, the endpoint is unreachable or taken
        raise FerbenchError(
            f"cannot start {args.nnodes} machine(s) x {args.nproc_per_node} process(es) "
            f"at {args.rdzv_endpoint}: {type(exc).__name__}: {exc}"
        ) from exc
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.nproc_per_node * args.nnodes == 1:
        run_in_process(args.module, args.arguments)
        return 0
    try:
        return launch(args)
    except FerbenchError as exc:
        print(f"launch: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
