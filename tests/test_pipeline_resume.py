"""End to end: a data-parallel `train` stage killed mid-run resumes from its last epoch on the next `dvc repro`.

Its own workspace runs only what `train@resnet18` needs (download, prepare, train), not the whole first run of
the other end-to-end tests (`first_run`, tests/conftest.py)."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch

from ferbench.params import merge_overrides
from ferbench.workflow.workspace import create_workspace
from tests.support import dvc, dvc_env, e2e_overrides

pytestmark = pytest.mark.slow  # make test-fast leaves these out; make test runs them

EPOCHS = 5


def test_a_killed_two_process_training_run_resumes_on_the_next_repro(tmp_path):
    data_parallel = {"train": {"epochs": EPOCHS}, "distributed": {"nproc_per_node": 2}}  # two processes, gloo
    workspace = create_workspace(tmp_path / "project", merge_overrides(e2e_overrides(), data_parallel))
    resume = workspace / ".resume/train/resnet18.pt"
    run = subprocess.Popen(
        [sys.executable, "-m", "dvc", "repro", "train@resnet18"],
        cwd=workspace,
        env=dict(dvc_env(), TMPDIR=str(tmp_path)),  # what a killed launcher cannot clean up stays in the test's folder
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 600
    read = None  # the state file last read: it is replaced once an epoch, and read again only then
    try:
        while time.monotonic() < deadline and run.poll() is None:
            if resume.is_file() and (written := resume.stat().st_mtime_ns) != read:
                read = written
                if torch.load(resume, weights_only=True)["epoch"] >= 2:
                    break
            time.sleep(0.2)
        assert run.poll() is None, "training finished before it could be interrupted"
    finally:
        with contextlib.suppress(ProcessLookupError):  # it may have died already: let its assertion speak
            os.killpg(run.pid, signal.SIGKILL)
        run.wait()
    assert torch.load(resume, weights_only=True)["epoch"] < EPOCHS
    out = dvc(workspace, "repro", "train@resnet18")
    assert "resuming after epoch" in out and "Stage 'prepare' didn't change, skipping" in out
    metrics = json.loads((workspace / "reports/details/train/resnet18.json").read_text())
    assert metrics["epochs"] == EPOCHS and 1 <= metrics["best_epoch"] <= EPOCHS
    assert metrics["processes"] == 2 and metrics["identical_weights_across_processes"] is True
    curve = pd.read_csv(workspace / "dvclive/train/resnet18/plots/metrics/val/accuracy.tsv", sep="\t")
    assert len(curve) == EPOCHS
    assert "train@resnet18" not in dvc(workspace, "status") and not resume.exists()  # finished: its state removed
