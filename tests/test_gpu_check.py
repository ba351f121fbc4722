"""The GPU check (scripts/gpu_check.py) as a CPU dry run: the same code a lent GPU runs, at tiny sizes, so
that it cannot rot between loans. Its preparation step is checked on a prepared folder (no download)."""

import json
import subprocess
import sys

import numpy as np
import pytest

from tests.support import PROJECT_ROOT, synthetic_prepared

pytestmark = pytest.mark.slow  # make test-fast leaves these out; make test runs them

SCRIPT = PROJECT_ROOT / "scripts" / "gpu_check.py"


@pytest.fixture(scope="module")
def carried(tmp_path_factory):
    """What `prepare` writes, from a prepared folder of synthetic faces."""
    root = tmp_path_factory.mktemp("gpu")
    prepared = synthetic_prepared(root, 12, 4, seed=3)
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "prepare", "--prepared", str(prepared), "--out", str(root / ".gpu"),
         "--train-images", "40", "--skip-wheels"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "of the 64 MiB a device call may carry" in done.stdout
    return root / ".gpu" / "data"


def test_prepare_carries_a_train_subset_all_of_val_and_test_and_the_full_sizes(carried):
    counts = json.loads((carried / "counts.json").read_text())
    assert counts["train"] == 12 * 7 - counts["val"] and counts["train_carried"] == 40
    with np.load(carried / "train.npz") as train, np.load(carried / "val.npz") as val:
        assert train["images"].shape == (40, 48, 48) and train["images"].dtype == np.uint8
        assert len(val["labels"]) == counts["val"]


def test_the_cpu_dry_run_writes_every_field_and_records_a_failing_step(carried, tmp_path):
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "run", "--device", "cpu", "--data", str(carried), "--out", str(out),
         "--backbones", "resnet18", "no_such_backbone", "--input-size", "32", "--steps", "2", "--batch-size", "8",
         "--embed-images", "16", "--real-epochs", "1", "--onnx-images", "20", "--distill-teachers", "resnet18"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr[-2000:]  # a step failed, the rest ran
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["environment"]["device"] == "cpu" and report["environment"]["torch"]
    row = report["backbones"]["resnet18"]
    for key in ("input_size", "gflops_per_image", "finetune_images_per_second", "finetune_tflops",
                "embed_images_per_second", "embed_tflops", "peak_memory_gib", "batch_size"):  # fmt: skip
        assert key in row, key
    assert row["input_size"] == 32 and row["finetune_images_per_second"] > 0 and row["embed_images_per_second"] > 0
    assert report["backbones"]["no_such_backbone"] is None
    assert "no backbone 'no_such_backbone'" in report["errors"]["backbone no_such_backbone"]
    real = report["real_data"]
    assert real["epochs"] == 1 and {"val_accuracy", "test_accuracy_last_epoch"} <= set(real)
    assert real["onnx_agreement_with_torch_cpu"] >= 0.95 and real["onnx_images"] == 20
    (distillation,) = report["distillation"]
    assert distillation is not None, report["errors"]
    assert distillation["student"] == "fer_vgg8" and distillation["teachers"] == ["resnet18"]
    assert distillation["cached_images_per_second"] > 0 and distillation["online_images_per_second"] > 0
    assert report["projection"]["gpu_preset"]["stages_minutes"]["distill@fer_vgg8"] is None  # not measured here
    for key in ("protocol", "gpu_preset"):
        projection = report["projection"][key]
        assert projection["total_minutes"] > 0 and not projection["complete"]  # only resnet18 was measured
        assert projection["stages_minutes"]["finetune@resnet18"] > 0
    markdown = (out / "gpu_check.md").read_text()
    assert "| resnet18 | 32 |" in markdown and "Projected GPU time" in markdown and "Failed steps" in markdown
    assert "Distillation, fer_vgg8 from resnet18" in markdown
