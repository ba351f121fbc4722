"""End to end: `dvc repro` in a temporary copy of the project, on synthetic data."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from ferbench.data.prepared import load_split
from ferbench.workspace import commit_all, create_workspace, load_overrides, merge_overrides, python_env
from tests.conftest import PROJECT_ROOT, SMALL_COUNTS


def dvc(workspace, *args):
    result = subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=workspace, env=python_env(), capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    overrides = merge_overrides(
        load_overrides(PROJECT_ROOT / "params-demo.yaml"), {"data": {"synthetic": SMALL_COUNTS}}
    )
    path = create_workspace(tmp_path_factory.mktemp("e2e") / "project", overrides)
    dvc(path, "repro")
    commit_all(path, "first run")
    return path


def test_prepare_writes_the_contracted_outputs(workspace):
    for split, expected in (("train", 7 * 35), ("val", 7 * 5), ("test", 7 * 12)):
        data = load_split(workspace / "data" / "prepared" / f"{split}.npz")
        assert data.images.shape == (expected, 48, 48) and data.images.dtype == np.uint8
        assert data.labels.dtype == np.int64 and set(data.labels) == set(range(7))
    metrics = json.loads((workspace / "metrics" / "data.json").read_text())
    assert metrics["counts"]["test"]["total"] == 84
    assert metrics["archive_files"] == {"train": 280, "test": 84}
    manifest = pd.read_csv(workspace / "data" / "prepared" / "manifest.csv")
    assert len(manifest) == 364
    plot = pd.read_csv(workspace / "plots" / "data" / "class_distribution.csv")
    assert list(plot.columns) == ["class", "split", "count"] and plot["count"].sum() == 364
    assert (workspace / "plots" / "data" / "class_distribution.png").stat().st_size > 10_000


def test_benchmark_stages_write_metrics_and_curves(workspace):
    for stage in ("feature_extract", "finetune"):
        metrics = json.loads((workspace / "metrics" / stage / "resnet18.json").read_text())
        for split in ("train", "val", "test"):
            assert 0 < metrics[split]["accuracy"] <= 1
        assert "macro_f1" in metrics["test"]
    assert (workspace / "data" / "features" / "resnet18.npz").is_file()


def test_head_only_change_keeps_embed_up_to_date(workspace):
    params = (workspace / "params.yaml").read_text()
    (workspace / "params.yaml").write_text(
        params.replace("lr: 0.001  # learning rate\n", "lr: 0.002  # learning rate\n", 1)
    )
    status = dvc(workspace, "status")
    assert "feature_extract@resnet18:" in status
    assert "embed@resnet18" not in status and "finetune@resnet18" not in status
    (workspace / "params.yaml").write_text(params)


def test_plots_render(workspace):
    out = dvc(workspace, "plots", "show", "--json")
    for expected in ("class_distribution", "feature_extract/resnet18/predictions.csv", "val/accuracy.tsv"):
        assert expected in out


def test_last_nothing_reruns_and_a_param_change_reruns_only_prepare(workspace):
    assert "Data and pipelines are up to date" in dvc(workspace, "status")
    params = (workspace / "params.yaml").read_text()
    assert "val_fraction: 0.125" in params
    (workspace / "params.yaml").write_text(params.replace("val_fraction: 0.125", "val_fraction: 0.2"))
    status = dvc(workspace, "status")
    assert "prepare:" in status and "download:" not in status
    assert "data.val_fraction" in dvc(workspace, "params", "diff")
    out = dvc(workspace, "repro", "prepare")
    assert "Stage 'download' didn't change, skipping" in out
    diff = json.loads(dvc(workspace, "metrics", "diff", "--json"))
    assert diff["metrics/data.json"]["counts.val.total"]["new"] == 7 * 8
