"""Short benchmark runs on synthetic faces: both must learn well above chance (1/7)."""

import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from tqdm import tqdm

from ferbench.constants import FER2013_CLASSES
from ferbench.models.backbones import build_backbone
from ferbench.models.checkpoint import load_checkpoint
from ferbench.models.classifier import (
    ImageClassifier,
    build_head,
    frozen_extractor,
    set_trainable,
    trunk_blocks,
)
from ferbench.models.preprocess import Preprocess
from ferbench.records import EmbeddingRecord
from ferbench.training.augment import random_hflip
from ferbench.training.benchmark import run_feature_extract, run_finetune
from ferbench.training.embeddings import compute_embeddings, load_device_splits, save_embeddings
from ferbench.training.engine import Batches, ResumeFile, class_weights
from tests.support import (
    backbone_spec,
    feature_extract_section,
    recipe,
    run_settings,
    synthetic_prepared,
    train,
    tta,
)

pytestmark = pytest.mark.slow  # make test-fast leaves these out; make test runs them

CLASSES = list(FER2013_CLASSES)
CPU = torch.device("cpu")
SPEC = backbone_spec("resnet18", "torchvision", "resnet18", input_size=48)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return synthetic_prepared(tmp_path_factory.mktemp("train"), 80, 15, seed=11)


def test_finetune_learns_and_writes_its_outputs(prepared, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    section = recipe(epochs=4, batch_size=32, lr=0.001, flip=True, precision="fp32", eval_batch_size=128)
    summary = run_finetune(SPEC, section, run_settings(prepared, tta(flip=True, shifts=4)))
    assert summary.test.accuracy >= 2 / 7
    written = json.loads((tmp_path / "reports/details/finetune/resnet18.json").read_text())
    assert {"accuracy", "macro_f1", "per_class_recall", "per_class_f1", "confusion_matrix"} <= set(written["test"])
    headline = json.loads((tmp_path / "metrics/finetune/resnet18.json").read_text())
    assert headline["test"] == {key: written["test"][key] for key in ("accuracy", "macro_f1")}
    assert headline["tta"]["test"]["accuracy"] == written["tta"]["test"]["accuracy"]
    assert set(headline) == {"train", "val", "test", "test_leakage_free", "tta", "overfitting", "best_epoch"}
    # synthetic faces are all distinct: every test image is leakage-free, so both figures agree
    assert written["test_leakage_free"]["images"] == 7 * 15
    assert written["test_leakage_free"]["accuracy"] == pytest.approx(written["test"]["accuracy"])
    assert written["tta"]["views"] == 6 and 0 < written["tta"]["test"]["accuracy"] <= 1
    calibration = written["calibration"]
    assert calibration["temperature"] > 0 and calibration["val"]["nll_scaled"] <= calibration["val"]["nll"] + 1e-9
    assert written["train"]["accuracy"] > 0 and written["val"]["accuracy"] > 0
    predictions = pd.read_csv(tmp_path / "plots/finetune/resnet18/predictions.csv")
    assert list(predictions.columns) == ["actual", "predicted"] and len(predictions) == 7 * 15
    assert (tmp_path / "plots/finetune/resnet18/confusion.png").stat().st_size > 10_000
    curve = pd.read_csv(tmp_path / "dvclive/finetune/resnet18/plots/metrics/val/accuracy.tsv", sep="\t")
    assert len(curve) == 4
    assert (tmp_path / "models/finetune/resnet18.pt").is_file()


def test_feature_extract_learns_from_cached_features(prepared, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    backbone = build_backbone(backbone_spec("resnet18", "torchvision", "resnet18", input_size=64))
    splits = load_device_splits(prepared, CPU)
    arrays = compute_embeddings(backbone, splits, flip=True, batch_size=128, device=CPU)
    assert arrays["train"].shape == (2, len(splits["train"]), 512) and arrays["test"].shape[0] == 1
    save_embeddings(tmp_path / "f.npz", arrays, EmbeddingRecord(backbone="resnet18", feature_dim=512, input_size=64))
    section = feature_extract_section(epochs=20, batch_size=64, lr=0.001, flip=True, hidden=[], dropout=0.0)
    summary = run_feature_extract("resnet18", tmp_path / "f.npz", section, run_settings(prepared))
    assert summary.test.accuracy >= 2 / 7
    assert (tmp_path / "metrics/feature_extract/resnet18.json").is_file()


def test_mirrored_features_are_features_of_mirrored_images(prepared):
    backbone = build_backbone(SPEC)
    splits = load_device_splits(prepared, CPU)
    arrays = compute_embeddings(backbone, splits, flip=True, batch_size=512, device=CPU)
    with torch.no_grad():
        mirrored = frozen_extractor(backbone)(splits["train"].inputs[:4].flip(-1)).numpy()
    np.testing.assert_allclose(arrays["train"][1, :4], mirrored, rtol=1e-2, atol=1e-2)
    # and the mirrored copy is not just the original again: the features do change under a flip
    assert np.abs(arrays["train"][1, :4] - arrays["train"][0, :4]).max() > 0.1


def test_preprocess_resizes_to_three_normalised_channels():
    images = torch.full((2, 48, 48), 255, dtype=torch.uint8)
    out = Preprocess(224, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))(images)
    assert out.shape == (2, 3, 224, 224)
    torch.testing.assert_close(out, torch.full_like(out, 2.0))
    images = torch.randint(0, 256, (64, 48, 48), dtype=torch.uint8)
    flipped = random_hflip(images)
    mirrored = [bool(torch.equal(f, i.flip(-1))) for f, i in zip(flipped, images, strict=True)]
    unchanged = [bool(torch.equal(f, i)) for f, i in zip(flipped, images, strict=True)]
    assert all(m or u for m, u in zip(mirrored, unchanged, strict=True))
    assert 10 < sum(mirrored) < 54  # about half, never all or none


def test_best_checkpoint_is_the_best_val_epoch(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(200, 5)
    y = (x[:, 0] > 0).long()
    data = Batches(x.unsqueeze(0), y, features=True)
    model = torch.nn.Linear(5, 2)
    result = train(model, data, data, recipe(epochs=5, batch_size=20, lr=0.05, flip=False), 2, tmp_path / "m.pt")
    accuracies = [row["val_accuracy"] for row in result.history]
    assert result.best_epoch == int(np.argmax(accuracies)) + 1
    assert result.best_val_accuracy > 0.9


def test_balanced_class_weights():
    weights = class_weights(torch.tensor([0, 0, 0, 1]), 2, "balanced")
    torch.testing.assert_close(weights, torch.tensor([4 / 6, 2.0]))
    assert class_weights(torch.tensor([0, 1]), 2, "none") is None


def test_long_cpu_runs_warn_up_front_and_point_to_the_demo(capsys):
    from ferbench.training.engine import warn_if_slow

    warn_if_slow(3 * 3600, CPU, "finetune@vgg16")
    printed = capsys.readouterr().out
    assert "finetune@vgg16 would take about 3.0 h" in printed and "make demo" in printed
    warn_if_slow(60, CPU, "finetune@resnet18")
    warn_if_slow(3 * 3600, torch.device("cuda"), "finetune@vgg16")
    assert capsys.readouterr().out == ""


def test_the_warning_comes_from_the_runs_own_first_steps(capsys, monkeypatch):
    """No step is spent on the estimate: the clock times the run's steps 2 and 3 (here 1 s each) and warns
    once, before step 4, when the steps left would take long."""
    from ferbench.training import engine

    now = iter(range(100))
    monkeypatch.setattr(engine.time, "perf_counter", lambda: float(next(now)))
    progress = tqdm(total=10, file=io.StringIO())
    clock = engine.StepClock(progress, steps_left=10_000, device=CPU, what="train@vgg16")
    for _ in range(10):
        clock.update()
    assert progress.n == 10
    printed = capsys.readouterr().out
    assert printed.count("would take") == 1 and "train@vgg16 would take about 3.2 h" in printed
    quick = engine.StepClock(tqdm(disable=True), steps_left=100, device=CPU, what="train@resnet18")
    for _ in range(10):
        quick.update()
    assert capsys.readouterr().out == ""


def _small_resnet() -> ImageClassifier:
    torch.manual_seed(0)
    backbone = build_backbone(SPEC)
    return ImageClassifier(backbone, build_head(backbone.feature_dim, 7))


def _subset(data: Batches, count: int) -> Batches:
    return Batches(data.inputs[:count], data.labels[:count])


def test_an_interrupted_run_resumes_from_its_last_epoch(prepared, tmp_path, capsys):
    splits = {name: _subset(data, 96) for name, data in load_device_splits(prepared, CPU).items()}
    # warm-up then cosine (torch's SequentialLR) and a weight average (AveragedModel): their states resume too
    config = recipe(epochs=4, batch_size=32, lr=0.001, scheduler="cosine", warmup_epochs=1, ema_decay=0.9)
    resume = ResumeFile(tmp_path / "state.resume.pt", "fingerprint-a")
    interrupted: list[dict] = []

    def killed_during_epoch_3(row):
        interrupted.append(row)
        if row["epoch"] == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(
            _small_resnet(),
            splits["train"],
            splits["val"],
            config,
            7,
            tmp_path / "best.pt",
            log_epoch=killed_during_epoch_3,
            resume=resume,
        )
    assert torch.load(resume.path, weights_only=True)["epoch"] == 2
    (tmp_path / "best.pt").unlink()  # DVC removes a stage's regular outputs before rerunning it
    state = torch.load(resume.path, weights_only=True)
    older = tmp_path / "older.resume.pt"
    torch.save({key: value for key, value in state.items() if key != "format"}, older)
    assert ResumeFile(older, "fingerprint-a").load(4) is None  # another version's state: start over
    assert ResumeFile(resume.path, "fingerprint-a").load(4) is not None
    unfinished = tmp_path / "unfinished.resume.pt"
    shutil.copy(resume.path, unfinished)

    logged: list[dict] = []
    result = train(
        _small_resnet(),
        splits["train"],
        splits["val"],
        config,
        7,
        tmp_path / "best.pt",
        log_epoch=logged.append,
        resume=resume,
    )
    assert "resuming after epoch 2 of 4" in capsys.readouterr().out
    assert [row["epoch"] for row in logged] == [1, 2, 3, 4]
    assert logged[:2] == interrupted[:2]  # the earlier epochs are replayed, not retrained
    _, metadata = load_checkpoint(tmp_path / "best.pt")
    assert metadata["epoch"] == result.best_epoch
    assert not resume.path.exists()  # a finished run's state is removed: it would never be resumed

    # another fingerprint (changed params or data) starts over
    fresh: list[dict] = []
    train(
        _small_resnet(),
        splits["train"],
        splits["val"],
        recipe(epochs=1, batch_size=32, lr=0.001),
        7,
        tmp_path / "best.pt",
        log_epoch=fresh.append,
        resume=ResumeFile(unfinished, "fingerprint-b"),
    )
    assert [row["epoch"] for row in fresh] == [1] and "resuming" not in capsys.readouterr().out


def test_trainable_head_keeps_the_backbone_and_its_batchnorm_statistics(prepared):
    splits = {name: _subset(data, 128) for name, data in load_device_splits(prepared, CPU).items()}
    model = _small_resnet()
    assert set_trainable(model, "head") == 512 * 7 + 7
    before = {name: tensor.clone() for name, tensor in model.trunk.state_dict().items()}
    train(model, splits["train"], splits["val"], recipe(epochs=1, batch_size=64, lr=0.01), 7, Path(os.devnull))
    for name, tensor in model.trunk.state_dict().items():
        assert torch.equal(tensor, before[name]), name


def test_trainable_last_blocks_are_the_last_residual_stage(prepared):
    model = _small_resnet()
    assert trunk_blocks(model.trunk)[-2:] == ["layer4.0", "layer4.1"]
    set_trainable(model, 2)
    trainable = {name.split(".")[0] for name, p in model.trunk.named_parameters() if p.requires_grad}
    assert trainable == {"layer4"}
    model.train()
    assert not model.trunk.layer3.training and model.trunk.layer4.training
