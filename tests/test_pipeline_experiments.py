"""End to end, DVC experiments on the first run: one in a temporary workspace, and a sweep queued on devices in
turn and run in parallel, each in a copy of its own (`own_workspace`, tests/conftest.py) of the first run."""

import json
import re
import subprocess
import sys
import time

import pytest

from tests.support import dvc, dvc_env, ran_stages, run_dvc

pytestmark = pytest.mark.slow  # make test-fast leaves these out; make test runs them


def test_a_criterion_experiment_in_a_temporary_workspace_trains_nothing(own_workspace):
    out = dvc(own_workspace, "exp", "run", "--temp", "--name", "penalty-2", "-S", "select.gap_penalty=2.0")
    assert ran_stages(out) and ran_stages(out) <= {"select", "report"}, out  # nothing trained, exported or embedded
    assert "penalty-2" in dvc(own_workspace, "exp", "show", "--json")
    table = dvc(own_workspace, "exp", "show", "--only-changed", "--csv")
    header = table.splitlines()[0].split(",")
    assert "select.gap_penalty" in header and len(header) <= 40, header  # readable in a terminal


def run_sweep(workspace, log, name: str, penalties: str) -> subprocess.CompletedProcess:
    """`ferbench.workflow.sweep --start` with its output in a file: DVC's queue workers, forked from it, inherit its
    output, so a pipe would stay open (and the call wait) as long as they run."""
    with open(log, "w") as out:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "ferbench.workflow.sweep",
                "--devices",
                "cpu,cpu",
                "-S",
                f"select.gap_penalty={penalties}",
                "--name",
                name,
                "--start",
            ],
            cwd=workspace,
            env=dvc_env(),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=300,
        )


def wait_for_queue(workspace, names, seconds: float) -> str:
    """`dvc queue status` once every experiment named has ended (or the time is up). A status call that fails
    is asked again: while experiments run, DVC's status fails now and then with "unexpected error - Expecting
    value: line 1 column 1 (char 0)", a JSON file read before it is written (treeverse/dvc#8014 is alike)."""
    deadline = time.monotonic() + seconds
    status = ""
    while time.monotonic() < deadline:
        answer = run_dvc(workspace, "queue", "status", timeout=120)
        status = answer.stdout + answer.stderr
        if answer.returncode == 0 and all(re.search(rf"{name}\s.*(Success|Failed)", status) for name in names):
            break
        time.sleep(5)  # each status call is a DVC process of a second or two: fewer calls leave the CPU to the queue
    return status


def stop_queue(workspace) -> None:
    run_dvc(workspace, "queue", "stop", "--kill", timeout=120)


def test_a_sweep_queues_experiments_on_devices_in_turn_and_runs_them_in_parallel(own_workspace, tmp_path):
    log = tmp_path / "sweep.log"
    names = {"sweep-1": "0.5", "sweep-2": "3.0"}
    try:
        sweep = run_sweep(own_workspace, log, "sweep", ",".join(names.values()))
        assert sweep.returncode == 0, log.read_text()
        status = wait_for_queue(own_workspace, names, 240)
        if "Queued" in status:  # DVC's workers sometimes stop before the queue is empty: start them again,
            dvc(own_workspace, "queue", "start", "-j", "2", timeout=120)  # as its docs tell users to
            status = wait_for_queue(own_workspace, names, 240)
    finally:  # no worker outlives the test, whatever happened
        stop_queue(own_workspace)
    output = log.read_text()
    assert "dvc exp run --queue --name sweep-2 -S device=cpu -S select.gap_penalty=3.0" in output
    assert "dvc queue start -j 2" in output
    assert all(re.search(rf"{name}\s.*Success", status) for name in names), status
    for name in names:
        ran = ran_stages(dvc(own_workspace, "queue", "logs", name, timeout=120))
        assert ran and ran <= {"select", "report"}, (name, ran)
    shown = json.dumps(json.loads(dvc(own_workspace, "exp", "show", "--json")))
    assert all(name in shown for name in names) and '"gap_penalty": 3.0' in shown
