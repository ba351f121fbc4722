"""Start a stage in one process, or in several data-parallel ones (`distributed` in params.yaml).

`dvc.yaml` runs the training stages through this launcher with the process counts from
params.yaml, so the launch stays visible there and `dvc repro` stays the one command:

    python -m ferbench.training.launch --nproc-per-node 2 --nnodes 1 --rdzv-endpoint localhost:29400 --timeout 600 \
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
import socket
import sys
import tempfile
import threading
from datetime import timedelta
from typing import Any

from ferbench.errors import FerbenchError

LAUNCHER_LOGGERS = ("torch.distributed.elastic", "torch.distributed.launcher")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m ferbench.training.launch",
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
            "ferbench.training.launch",
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


def rendezvous_timeouts(seconds: int) -> dict[str, int]:
    """The c10d rendezvous settings that bound each wait by `seconds`: joining (torch reads `join_timeout`,
    not the launcher's legacy `rdzv_timeout`) and reaching the store (`read_timeout`, also the bound on
    each store operation)."""
    connect = max(1, seconds // 2)  # the store client tries twice before it gives up
    return {"join_timeout": seconds, "read_timeout": connect, "last_call_timeout": min(seconds, 30)}


def port_is_free(host: str, port: int) -> bool:
    """Whether this machine could host the rendezvous store at host:port (nothing listens there yet)."""
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def check_store_reachable(endpoint: str, seconds: int) -> None:
    """Connect to the rendezvous store that another machine hosts at `endpoint`, within `seconds`.

    torch's store client honours its timeout while connecting, but not while validating: an endpoint that
    accepts connections and never answers (a deaf service, a firewall) would hold the launcher for ever.
    The probe runs in a daemon thread so the launcher can give up on it."""
    from torch.distributed import TCPStore
    from torch.distributed.elastic.rendezvous.utils import _matches_machine_hostname, parse_rendezvous_endpoint

    host, port = parse_rendezvous_endpoint(endpoint, default_port=29400)
    if _matches_machine_hostname(host) and port_is_free("", port):
        return  # this machine hosts the store: nothing to reach yet
    failure: list[BaseException] = []

    def connect() -> None:
        try:
            TCPStore(host, port, is_master=False, timeout=timedelta(seconds=max(1, seconds // 2)))
        except BaseException as exc:  # reported by the caller
            failure.append(exc)

    probe = threading.Thread(target=connect, name="rendezvous-probe", daemon=True)
    probe.start()
    probe.join(seconds)
    if probe.is_alive() or failure:
        raise RendezvousUnreachable(endpoint)


class RendezvousUnreachable(Exception):
    """No rendezvous store answered at the endpoint."""


def launch(args: argparse.Namespace) -> int:
    """Start the stage in every process of this machine and wait; the exit code of the whole."""
    for name in LAUNCHER_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    # The store client logs each failed connection attempt with a C++ stack (hundreds of lines at an endpoint
    # nobody answers); the one line below says what happened instead. torch reads the level once, when it
    # loads: the launcher's own is quiet, the stage processes it starts keep the user's setting.
    user_level = os.environ.get("TORCH_CPP_LOG_LEVEL")
    os.environ["TORCH_CPP_LOG_LEVEL"] = "FATAL"
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.elastic.rendezvous.api import RendezvousConnectionError, RendezvousTimeoutError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if user_level is None:
        del os.environ["TORCH_CPP_LOG_LEVEL"]
    else:
        os.environ["TORCH_CPP_LOG_LEVEL"] = user_level

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
    # The ranks' error files go to a folder removed afterwards: by default torch leaves a torchelastic_* folder in
    # the temporary folder at every launch.
    with tempfile.TemporaryDirectory(prefix="ferbench-launch-") as scratch:
        config = LaunchConfig(
            min_nodes=args.nnodes,
            max_nodes=args.nnodes,
            nproc_per_node=args.nproc_per_node,
            run_id="ferbench-" + "-".join([args.module, *args.arguments]),
            rdzv_backend="c10d",
            rdzv_endpoint="localhost:0" if single_machine else args.rdzv_endpoint,
            rdzv_configs=rendezvous_timeouts(args.timeout),
            max_restarts=0,
            monitor_interval=0.5,
            logs_specs=DefaultLogsSpecs(log_dir=scratch),
        )
        try:
            if not single_machine:
                check_store_reachable(args.rdzv_endpoint, args.timeout)
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
        except RendezvousTimeoutError as exc:
            raise FerbenchError(
                f"{stage}: not all {args.nnodes} machines joined at {args.rdzv_endpoint} within {args.timeout} s; "
                "start the join command on each (or raise distributed.timeout_s)"
            ) from exc
        except (RendezvousConnectionError, RendezvousUnreachable) as exc:
            raise FerbenchError(
                f"{stage}: cannot reach the rendezvous at {args.rdzv_endpoint} within {args.timeout} s; check "
                "distributed.rdzv_endpoint (the host and a free port of the machine running `dvc repro`)"
            ) from exc
        except Exception as exc:  # the endpoint is taken, the store refused us, ...
            raise FerbenchError(
                f"{stage}: cannot start {args.nnodes} machine(s) x {args.nproc_per_node} process(es) "
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
