"""End to end, what the first run wrote: `dvc repro` of the demo pipeline on synthetic data (the `first_run`
fixture in tests/conftest.py, made once per run of the tests), read in a copy of this module's own, where the
DVC commands run. The tests that change a workspace are in test_pipeline_changes.py and
test_pipeline_experiments.py."""

import hashlib
import json
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from ferbench.data.prepared import load_split
from ferbench.models.card import CARD_SECTIONS
from tests.support import PROJECT_ROOT, copy_workspace, dvc, dvc_env

pytestmark = pytest.mark.slow  # make test-fast leaves these out; make test runs them


@pytest.fixture(scope="module")
def workspace(first_run, tmp_path_factory):
    """The first run, to read: never change it (take `own_workspace` for that)."""
    return copy_workspace(first_run, tmp_path_factory.mktemp("e2e-read") / "project")


def test_prepare_writes_the_contracted_outputs(workspace):
    for split, expected in (("train", 7 * 35), ("val", 7 * 5), ("test", 7 * 12)):
        data = load_split(workspace / "data" / "prepared" / f"{split}.npz")
        assert data.images.shape == (expected, 48, 48) and data.images.dtype == np.uint8
        assert data.labels.dtype == np.int64 and set(data.labels) == set(range(7))
    metrics = json.loads((workspace / "metrics" / "data.json").read_text())
    assert metrics["images"]["test"] == 84 and metrics["quality"]["dropped"] == 0
    details = json.loads((workspace / "reports/details/data.json").read_text())
    assert details["counts"]["test"]["total"] == 84 and details["counts"]["test"]["happy"] == 12
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


def test_every_declared_output_exists(workspace):
    lock = yaml.safe_load((workspace / "dvc.lock").read_text())
    stages = set(lock["stages"])
    for backbone in ("resnet18", "resnet34"):
        assert {f"embed@{backbone}", f"finetune@{backbone}", f"latency@{backbone}", f"train@{backbone}"} <= stages
    assert {"deploy@resnet18", "deploy@resnet34", "select", "report"} <= stages
    assert {"teach@resnet18", "teach@resnet34", "distill@resnet18"} <= stages and "distill@resnet34" not in stages
    declared = [out["path"] for stage in lock["stages"].values() for out in stage.get("outs", [])]
    missing = [path for path in declared if not (workspace / path).exists()]
    assert not missing and len(declared) > 40


def test_train_select_latency_and_report_outputs(workspace):
    trained = json.loads((workspace / "reports/details/train/resnet18.json").read_text())
    gaps = trained["overfitting"]
    assert set(gaps) >= {"accuracy_gap", "loss_gap", "best_epoch", "at_best_epoch", "at_last_epoch"}
    assert gaps["accuracy_gap"] == pytest.approx(trained["train"]["accuracy"] - trained["val"]["accuracy"])
    headline = json.loads((workspace / "metrics/train/resnet18.json").read_text())
    assert headline["overfitting"] == {key: gaps[key] for key in ("accuracy_gap", "loss_gap")}
    assert len(pd.read_csv(workspace / "dvclive/train/resnet18/plots/metrics/val/accuracy.tsv", sep="\t")) == 2
    latency = json.loads((workspace / "metrics/latency/resnet34.json").read_text())
    for variant in ("torch_fp32", "onnx_fp32", "onnx_int8", "onnx_int8_static"):
        result = latency["variants"][variant]
        assert 0 < result["p50_ms"] <= result["p90_ms"] <= result["p99_ms"]
    train_images = len(np.load(workspace / "data/prepared/train.npz")["labels"])
    wanted = yaml.safe_load((workspace / "params.yaml").read_text())["latency"]["int8_range_images"]
    details = json.loads((workspace / "reports/details/latency/resnet34.json").read_text())
    assert details["int8_ranges"] == {"images": min(wanted, train_images), "split": "train", "method": "percentile"}
    selection = json.loads((workspace / "reports/details/selection.json").read_text())
    assert selection["selected"] in ("resnet18", "resnet34") and selection["reason"]
    assert [entry["rank"] for entry in selection["ranking"]] == [1, 2]
    card = json.loads((workspace / "models/selected/model_card.json").read_text())
    assert card["backbone"] == selection["selected"] and card["classes"][0] == "angry"
    assert (workspace / "models/selected" / card["files"]["model"]).is_file()
    assert card["agreement_with_fp32_on_val"][card["variant"]] >= 0.99
    deployed = json.loads((workspace / f"metrics/deploy/{selection['selected']}.json").read_text())
    assert deployed["variant"] == card["variant"] == selection["deployment"]["variant"]
    assert deployed["latency_p50_ms"] == card["latency"]["p50_ms"] == selection["deployment"]["latency_p50_ms"]
    provenance = card["provenance"]
    archive = (workspace / "data/raw/fer2013.zip").read_bytes()
    assert provenance["data"] == {
        "source": "synthetic",
        "archive_sha256": hashlib.sha256(archive).hexdigest(),
        "archive_bytes": len(archive),
        "images": {
            name: len(np.load(workspace / f"data/prepared/{name}.npz")["labels"]) for name in ("train", "val", "test")
        },
    }
    source_revision = (workspace / "ferbench/SOURCE_REVISION").read_text().strip()
    assert provenance["git_revision"] == source_revision != "unknown"  # this project's commit, not the copy's
    assert provenance["training"]["code_revision"] == source_revision
    assert provenance["created"].startswith("20")
    assert provenance["training"]["training"]["epochs"] == 2 and provenance["training"]["seed"] == 42
    assert "synthetic" in card["limitations"][0]
    metrics = card["metrics"]
    low, high = metrics["test_accuracy_ci95"]
    assert (
        low <= metrics["test_accuracy"] <= high
        and sum(row["images"] for row in metrics["test_per_class"].values()) == 84
    )
    assert card["latency"]["machine"] and card["sha256"][card["files"]["model"]]
    markdown = (workspace / "models/selected/MODEL_CARD.md").read_text()
    for section in CARD_SECTIONS:
        assert f"## {section}" in markdown, section
    assert "synthetic drawn faces" in markdown and "95% CI" in markdown
    ranked = {entry["name"]: entry["latency_ms"] for entry in selection["ranking"]}
    assert ranked[selection["selected"]] == deployed["latency_p50_ms"]  # ranked on what ships
    assert card["temperature"] > 0 and card["tta"]["views"] in (1, 2)  # the demo's tta: the mirror view
    assert card["metrics"]["test_leakage_free_images"] == 7 * 12  # synthetic faces are all distinct
    assert {"test_leakage_free", "tta", "calibration"} <= set(trained)
    reliability = pd.read_csv(workspace / "plots/selected/reliability.csv")
    assert len(reliability) == 15 and reliability["count_before"].sum() == 7 * 12
    summary = json.loads((workspace / "metrics/summary.json").read_text())
    assert set(summary["best_on_val"]) == {"feature_extract", "finetune"}
    assert summary["chance_test_accuracy"] == pytest.approx(1 / 7)  # balanced synthetic classes


def test_the_report_has_what_a_researcher_looks_for(workspace):
    selection = json.loads((workspace / "reports/details/selection.json").read_text())
    table = (workspace / "reports/results.md").read_text()
    assert f"**Selected: {selection['selected']}**" in table and re.search(r"^\| resnet34 +\|", table, re.M)
    for section in ("## Data", "archive SHA-256", "Leakage:", "Chance:", "## Accuracy against latency", "Pareto front"):
        assert section in table, section
    assert "### Per class" in table and re.search(r"^\| happy +\| +12 +\|", table, re.M)  # test images, recall, F1
    assert "### Most confident mistakes" in table
    for name in (
        "benchmark_accuracy",
        "learning_curves",
        "accuracy_latency",
        "selected_confusion",
        "per_class",
        "confident_mistakes",
    ):
        assert (workspace / f"plots/report/{name}.png").stat().st_size > 10_000
    bars = pd.read_csv(workspace / "plots/report/benchmark_accuracy.csv")
    assert sorted(bars["mode"].value_counts().items()) == [  # 2 backbones x 2 benchmarks, 2 + 1 trained, 1 shipped
        ("distilled", 1),
        ("feature_extract", 2),
        ("final", 2),
        ("finetune", 2),
        ("shipped", 1),
    ]
    curves = pd.read_csv(workspace / "plots/report/learning_curves.csv")
    runs = {
        f"{stage}@{name}" for stage in ("feature_extract", "finetune", "train") for name in ("resnet18", "resnet34")
    }
    runs.add("distill@resnet18")
    assert set(curves["run"]) == runs  # every benchmarked backbone, both benchmarks, every candidate and student
    kept = curves[curves["best"] & (curves["split"] == "val")]
    assert len(kept) == len(runs)  # one kept epoch marked per run
    details = json.loads((workspace / "reports/details/train/resnet18.json").read_text())
    assert kept.set_index("run").loc["train@resnet18", "epoch"] == details["best_epoch"]
    points = pd.read_csv(workspace / "plots/report/accuracy_latency.csv")
    shipped_points = points[points["kind"] == "shipped"]
    assert len(shipped_points) == 2 and shipped_points["selected"].sum() == 1  # what each candidate ships
    selection = json.loads((workspace / "reports/details/selection.json").read_text())
    chosen = shipped_points[shipped_points["selected"].astype(bool)].iloc[0]
    assert chosen["val_accuracy"] == pytest.approx(selection["deployment"]["val_accuracy"])  # final, not benchmark
    points = points[points["kind"] == "benchmark"]
    measured = [
        json.loads((workspace / f"reports/details/latency/{name}.json").read_text())["variants"]
        for name in ("resnet18", "resnet34")
    ]
    assert len(points) == sum(map(len, measured)) and points["pareto"].any()  # every runtime variant of both backbones
    assert not (points["pareto"].astype(bool) & ~points["faithful"].astype(bool)).any()  # never an unfaithful one
    faithful = points[points["faithful"].astype(bool)]
    fastest = faithful[faithful["latency_ms"] == faithful["latency_ms"].min()]
    assert fastest["pareto"].astype(bool).all()  # nothing faithful is faster than the fastest faithful variant
    per_class = pd.read_csv(workspace / "plots/report/per_class.csv")
    assert len(per_class) == 3 * 7 and per_class["f1"].between(0, 1).all()  # two candidates and the student
    shipped = pd.read_csv(workspace / "plots/selected/test_predictions.csv")
    assert len(shipped) == 7 * 12 and shipped["confidence"].between(1 / 7, 1).all()


def test_the_student_learned_from_its_teachers_and_its_card_names_them(workspace):
    student = json.loads((workspace / "reports/details/distill/resnet18.json").read_text())
    record = student["distillation"]
    assert [teacher["name"] for teacher in record["teachers"]] == ["resnet18", "resnet34"]
    for teacher in record["teachers"]:
        cached = np.load(workspace / f"data/teachers/{teacher['name']}.npz")
        assert cached["train_logits"].shape == (2, 7 * 35, 7)  # the image and its mirror (the demo's tta)
        trained = json.loads((workspace / f"reports/details/train/{teacher['name']}.json").read_text())
        assert teacher["stage"] == "train" and teacher["views"] == 2
        assert teacher["val_accuracy"] == pytest.approx(trained["tta"]["val"]["accuracy"], abs=1e-6)
    for split in ("val", "test"):  # the ensemble: softmax averaged over each teacher's views, then the teachers
        cached = [np.load(workspace / f"data/teachers/{name}.npz") for name in ("resnet18", "resnet34")]
        probabilities = np.mean([softmax(arrays[f"{split}_logits"]).mean(0) for arrays in cached], axis=0)
        expected = (probabilities.argmax(1) == cached[0][f"{split}_labels"]).mean()
        assert record["ensemble"][split] == pytest.approx(expected, abs=1e-6)
    assert record["kd_weight"] == 0.5 and record["targets"] == "cached"
    assert student["epochs"] == 2 and 0 < student["test"]["accuracy"] <= 1
    headline = json.loads((workspace / "metrics/distill/resnet18.json").read_text())
    assert headline["test"]["accuracy"] == student["test"]["accuracy"]
    assert headline["teachers"] == {"accuracy": record["ensemble"]}  # beside it in `dvc exp show`
    card = json.loads((workspace / "models/deploy/resnet18/model_card.json").read_text())
    assert card["provenance"]["training"]["distillation"]["teachers"] == record["teachers"]
    markdown = (workspace / "models/deploy/resnet18/MODEL_CARD.md").read_text()
    assert "- Teachers, their probabilities averaged: `resnet18` (train, 2 view(s); val" in markdown
    assert "- Started from the weights of `train@resnet18` (warm start)" in markdown
    table = (workspace / "reports/results.md").read_text()
    assert "## Distillation: resnet18" in table and "Against `train@resnet18`, whose weights it started from" in table
    assert re.search(r"^\| distill@resnet18 +\|", table, re.M)  # among the candidates


def test_the_distillation_benchmark_compares_cached_online_and_no_teachers(workspace, tmp_path):
    out = tmp_path / "rows.json"
    done = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "scripts/bench_distill.py"), str(workspace), "--epochs", "1",
         "--modes", "cached", "online", "none", "--threads", "1", "--out", str(out)],
        env=dvc_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(out.read_text())
    assert [row["mode"] for row in rows] == ["cached", "online", "none"]
    for row in rows:
        assert row["epochs"] == 1 and {"val", "test", "test_tta"} <= set(row)
        assert row["train_seconds_per_epoch"] > 0
    assert "| targets | epochs | val |" in done.stdout and "resnet18, teachers resnet18, resnet34" in done.stdout


def softmax(logits: np.ndarray) -> np.ndarray:
    return torch.softmax(torch.from_numpy(logits), dim=-1).numpy()


def test_metrics_files_hold_headline_numbers_only(workspace):
    metrics = json.loads(dvc(workspace, "metrics", "show", "--json"))
    flat = json.dumps(metrics)
    for detail in ("per_class", "confusion", "seconds", "reason", "images_per_second", "history", "calibration"):
        assert detail not in flat, detail
    for path in (workspace / "metrics").rglob("*.json"):
        assert len(path.read_text()) < 1500, path  # a few dozen numbers each


def test_plots_render(workspace):
    out = dvc(workspace, "plots", "show", "--json")
    for expected in (
        "Class distribution",
        "feature_extract/resnet18/predictions.csv",
        "Learning curves, accuracy",
        "Learning curves, loss",
        "Test accuracy per backbone",
        "Accuracy against CPU latency, shipped models",
        "Candidates, test F1 per class",
        "confident_mistakes.png",
        "Selected model as shipped, test confusion",
        "learning_curves.png",
        "train/resnet34/predictions.csv",
        "Selected model as shipped",
        "reliability.png",
    ):
        assert expected in out, expected
