"""Knowledge distillation: the loss, the teachers' cached outputs and the students that learn from them."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch.nn import functional as F

from ferbench.constants import FER2013_CLASSES
from ferbench.errors import FerbenchError
from ferbench.models.backbones import Backbone
from ferbench.models.checkpoint import load_checkpoint
from ferbench.models.classifier import ImageClassifier, build_head
from ferbench.models.fernets import FerVGG
from ferbench.paths import teacher_checkpoint, teacher_file
from ferbench.records import TeacherRecord
from ferbench.schema import validate_params
from ferbench.training.benchmark import long_training
from ferbench.training.engine import (
    Batches,
    Checkpointing,
    Distillation,
    TrainingData,
    distillation_loss,
    fit,
    predict_logits,
)
from ferbench.training.settings import backbone_spec
from ferbench.training.teachers import (
    CachedTargets,
    OnlineTargets,
    TeacherIdentity,
    TeacherOutputs,
    TrainedTeacher,
    cache_teacher_outputs,
    ensemble_probabilities,
    load_teacher_outputs,
    load_teaching,
    save_teacher_outputs,
    teacher_outputs,
    view_logits,
)
from tests.support import PROJECT_ROOT, candidate_training, recipe, run_settings, synthetic_prepared, train, tta

pytestmark = pytest.mark.slow  # make test-fast leaves these out; make test runs them

CPU = torch.device("cpu")
CLASSES = list(FER2013_CLASSES)


def tiny_cnn(seed: int) -> ImageClassifier:
    """A two-stage FER-style CNN small enough to train in a second."""
    torch.manual_seed(seed)
    network = FerVGG((8, 16), (1, 1))
    return ImageClassifier(Backbone(network, network.feature_dim, 24, (0.5,), (0.25,), True), build_head(16, 7))


def random_split(count: int, seed: int) -> Batches:
    """Textured 48x48 images with labels drawn at random: nothing to learn but the images themselves."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (count, 48, 48), dtype=torch.uint8, generator=generator)
    return Batches(images, torch.randint(0, 7, (count,), generator=generator))


def test_the_distillation_term_is_hintons_scaled_kl():
    torch.manual_seed(0)
    logits, teacher = torch.randn(5, 7), F.softmax(torch.randn(5, 7) / 3.0, dim=1)
    expected = 9.0 * (teacher * (teacher.log() - F.log_softmax(logits / 3.0, dim=1))).sum(1).mean()
    torch.testing.assert_close(distillation_loss(logits, teacher, 3.0), expected)
    same = F.softmax(logits / 3.0, dim=1)
    assert distillation_loss(logits, same, 3.0).abs() < 1e-6  # nothing to learn from one's own outputs


def test_with_kd_weight_zero_a_student_trains_exactly_as_without_teachers(tmp_path):
    data, val = random_split(48, 1), random_split(16, 2)
    section = recipe(epochs=2, batch_size=16, lr=0.01, flip=True, label_smoothing=0.1, precision="fp32")
    soft = torch.full((48, 7), 1 / 7)
    results = []
    for name, distillation in (("plain", None), ("zero", Distillation(CachedTargets(soft), 0.0, 4.0))):
        torch.manual_seed(3)
        model = tiny_cnn(0)
        fit(model, TrainingData(data, val, 7, distillation), section, Checkpointing(tmp_path / f"{name}.pt"))
        results.append(model.state_dict())
    for key in results[0]:
        torch.testing.assert_close(results[0][key], results[1][key], rtol=0, atol=0)


def agreement(first: torch.nn.Module, second: torch.nn.Module, data: Batches) -> float:
    return float(
        (predict_logits(first, data, 64).argmax(1) == predict_logits(second, data, 64).argmax(1)).float().mean()
    )


def test_a_distilled_student_agrees_with_its_teacher_more_than_one_taught_by_labels(tmp_path):
    """The teacher memorised a tiny set of images with random labels; on images none of them saw, a student
    that learned its soft labels answers like it more often than one that learned the same labels alone."""
    data, unseen = random_split(140, 4), random_split(400, 5)
    memorise = recipe(epochs=80, batch_size=28, lr=0.01, flip=False, precision="fp32")
    teacher = tiny_cnn(0)
    train(teacher, data, data, memorise, 7, tmp_path / "teacher.pt")
    teacher.load_state_dict(load_checkpoint(tmp_path / "teacher.pt")[0])
    assert (predict_logits(teacher, data, 64).argmax(1) == data.labels).float().mean() > 0.9  # memorised
    outputs = TeacherOutputs(
        {"train": view_logits(teacher, data, tta(), 64)},
        {"train": data.labels.numpy()},
        TeacherRecord(
            teacher="t", stage="train", backbone="tiny", classes=CLASSES, views=tta(), view_count=1, accuracy={}
        ),
    )
    soft = torch.from_numpy(ensemble_probabilities([outputs], "train", 4.0))
    section = recipe(epochs=40, batch_size=28, lr=0.01, flip=False, precision="fp32")
    students = {}
    for name, distillation in (("labels", None), ("distilled", Distillation(CachedTargets(soft), 0.9, 4.0))):
        torch.manual_seed(7)
        student = tiny_cnn(1)
        fit(student, TrainingData(data, data, 7, distillation), section, Checkpointing(tmp_path / f"{name}.pt"))
        students[name] = student
    labels_only, distilled = (agreement(teacher, students[name], unseen) for name in ("labels", "distilled"))
    assert distilled > labels_only + 0.1, (distilled, labels_only)


def test_online_targets_run_every_teacher_on_the_batch_as_the_student_sees_it():
    teachers = [tiny_cnn(0).eval(), tiny_cnn(1).eval()]
    images = random_split(6, 0).inputs.float()
    targets = OnlineTargets(teachers, 2.0, bf16=False)
    expected = torch.stack([F.softmax(teacher(images) / 2.0, dim=1) for teacher in teachers]).mean(0)
    torch.testing.assert_close(targets(torch.arange(6), images), expected)
    assert targets.sees_images and not CachedTargets(expected).sees_images


def cached_outputs(teacher: torch.nn.Module, name: str) -> TeacherOutputs:
    splits = {
        split: random_split(count, seed) for split, count, seed in (("train", 8, 0), ("val", 4, 1), ("test", 5, 2))
    }
    identity = TeacherIdentity(name, "train", "tiny", tuple(CLASSES))
    return teacher_outputs(teacher, splits, tta(flip=True), 4, identity, np.ones(5, dtype=bool))


def test_teacher_outputs_hold_every_view_of_every_image_and_come_back_checked(tmp_path):
    teacher = tiny_cnn(0).eval()
    outputs = cached_outputs(teacher, "tiny")
    assert outputs.logits["train"].shape == (2, 8, 7) and outputs.logits["test"].shape == (2, 5, 7)
    mirrored = random_split(8, 0).inputs.flip(-1)
    torch.testing.assert_close(torch.from_numpy(outputs.logits["train"][1]), teacher(mirrored), atol=1e-5, rtol=1e-5)
    accuracy = outputs.metadata.accuracy
    assert set(accuracy) == {"train", "val", "test", "test_leakage_free"} and outputs.metadata.view_count == 2
    path = tmp_path / "tiny.npz"
    save_teacher_outputs(path, outputs)
    labels = {split: outputs.labels[split] for split in outputs.labels}
    loaded = load_teacher_outputs(path, CLASSES, labels)
    np.testing.assert_array_equal(loaded.logits["val"], outputs.logits["val"])
    with pytest.raises(FerbenchError, match="do not match data/prepared"):
        load_teacher_outputs(path, CLASSES, {**labels, "val": labels["val"][::-1].copy() + 1})
    with pytest.raises(FerbenchError, match="other classes"):
        load_teacher_outputs(path, CLASSES[::-1], labels)
    path.write_bytes(b"not a numpy file")
    with pytest.raises(FerbenchError, match="not a teacher-outputs file"):
        load_teacher_outputs(path, CLASSES, labels)
    with pytest.raises(FerbenchError, match=r"not found; run `dvc repro` \(teach@missing"):
        load_teacher_outputs(tmp_path / "missing.npz", CLASSES, labels)


def test_the_ensemble_averages_softened_probabilities_over_views_then_teachers():
    first, second = cached_outputs(tiny_cnn(0).eval(), "a"), cached_outputs(tiny_cnn(1).eval(), "b")
    ensemble = ensemble_probabilities([first, second], "val", 2.0)
    expected = np.mean(
        [F.softmax(torch.from_numpy(t.logits["val"]) / 2.0, dim=-1).mean(0).numpy() for t in (first, second)], axis=0
    )
    np.testing.assert_allclose(ensemble, expected, rtol=1e-6)
    np.testing.assert_allclose(ensemble.sum(1), 1.0, rtol=1e-6)
    with pytest.raises(FerbenchError, match="at least one teacher"):
        ensemble_probabilities([], "val", 2.0)


def test_teacher_files_are_named_by_teacher():
    assert teacher_file("fer_vgg8") == Path("data/teachers/fer_vgg8.npz")
    assert teacher_checkpoint("fer_vgg8") == Path("data/teachers/fer_vgg8.pt")


def test_a_warm_started_student_begins_from_its_teachers_weights_and_says_so(tmp_path, monkeypatch):
    """With `warm_start`, the student of a backbone starts from the weights of that backbone's teacher (read from
    the teacher's copy under data/teachers/): one epoch at a vanishing rate leaves it where the teacher was."""
    (tmp_path / "synthetic").mkdir()
    prepared = synthetic_prepared(tmp_path / "synthetic", 6, 2, seed=2, val_fraction=0.25)
    params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    params["backbones"]["tiny"] = {"source": "ferbench", "model": "vgg8_w32", "pretrained": False, "weights": None,
                                   "input_size": None, "feature_extract": {}, "finetune": {}}  # fmt: skip
    params["train"]["candidates"]["tiny"] = {}
    params["distill"] |= {"teachers": {"tiny": "train"}, "students": {"tiny": {"warm_start": True}}}
    params = validate_params(params)
    monkeypatch.chdir(tmp_path)
    spec = backbone_spec(params, "tiny")
    settings = run_settings(prepared)
    teacher_training = candidate_training(epochs=1, batch_size=8, lr=0.01, precision="fp32", flip=False)
    long_training("train", spec, teacher_training, settings)
    teacher = TrainedTeacher(spec, "train", Path("models/train/tiny.pt"))
    cache_teacher_outputs(teacher, CLASSES, prepared, tta(), 16, CPU, Path("data/teachers/tiny.npz"))
    assert Path("data/teachers/tiny.pt").read_bytes() == Path("models/train/tiny.pt").read_bytes()
    teaching = load_teaching(params, prepared, "tiny")
    assert teaching.warm_start == "train@tiny" and teaching.initial_state is not None
    still = candidate_training(epochs=1, batch_size=8, lr=1e-9, precision="fp32", flip=False, ema_decay=0.0)
    summary = long_training("distill", spec, still, settings, teaching)
    teacher_state, _ = load_checkpoint(Path("models/train/tiny.pt"))
    student_state, metadata = load_checkpoint(Path("models/distill/tiny.pt"))
    for key, value in teacher_state.items():
        if value.is_floating_point() and "running" not in key:
            torch.testing.assert_close(student_state[key], value, atol=1e-5, rtol=0)
    assert summary.distillation.warm_start == "train@tiny" and metadata["distillation"]["warm_start"] == "train@tiny"
    teacher = json.loads(Path("reports/details/train/tiny.json").read_text())
    assert summary.val.accuracy == pytest.approx(teacher["val"]["accuracy"], abs=0.15)
    with pytest.raises(FerbenchError, match=r"not found; run `dvc repro` \(teach@tiny"):
        Path("data/teachers/tiny.npz").unlink()
        load_teaching(params, prepared, "tiny")
