"""Teachers for knowledge distillation: their outputs on every prepared image, computed once, and the soft
labels a student learns from.

`teach@<teacher>` runs a trained model (a `train` candidate or a `finetune` benchmark model) over every
split in each test-time-augmentation view and caches the logits (`data/teachers/<teacher>.npz`), so a
change of the student's recipe never reruns a teacher. `distill@<student>` averages its teachers'
temperature-softened probabilities over their views and over the teachers (`ensemble_probabilities`) and
looks them up per batch (`CachedTargets`); `OnlineTargets` instead runs the teachers on each augmented
batch as the student sees it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ferbench.data.prepared import PREPARED_SPLITS, leakage_free_test_mask, load_split
from ferbench.errors import FerbenchError
from ferbench.models.checkpoint import load_checkpoint
from ferbench.models.classifier import TTAClassifier, load_classifier
from ferbench.paths import teacher_checkpoint, teacher_file
from ferbench.records import DistillationSummary, TeacherRecord, ViewAccuracy, validated
from ferbench.schema import Params
from ferbench.specs import BackboneSpec, TTAConfig
from ferbench.training.embeddings import load_device_splits
from ferbench.training.engine import Batches, Distillation, inference_autocast, training_autocast
from ferbench.training.settings import backbone_spec

TEACHER_FORMAT = "ferbench-teacher-outputs/1"


@torch.no_grad()
def view_logits(model: nn.Module, data: Batches, views: TTAConfig, batch_size: int) -> np.ndarray:
    """A model's logits for every image of a split in each TTA view: V x N x C float32 (view 0: the image
    itself, then its mirror and shifts in `TTAClassifier`'s order)."""
    model.eval()
    expand = TTAClassifier(model, views)
    device = data.labels.device
    chunks = []
    for index in torch.arange(len(data), device=device).split(max(1, batch_size // views.views)):
        images = data.get(index)
        with inference_autocast(device):
            stacked = expand.views(images)
            logits = model(stacked).float()
        chunks.append(logits.view(views.views, len(index), -1).cpu())
    if not chunks:
        return np.zeros((views.views, 0, 0), dtype=np.float32)
    return torch.cat(chunks, dim=1).numpy().astype(np.float32)


@dataclass(frozen=True)
class TeacherOutputs:
    """One teacher's cached logits (split -> V x N x C) and what it is (name, stage, backbone, its accuracy)."""

    logits: Mapping[str, np.ndarray]
    labels: Mapping[str, np.ndarray]
    metadata: TeacherRecord

    @property
    def name(self) -> str:
        return self.metadata.teacher

    def probabilities(self, split: str, temperature: float) -> np.ndarray:
        """N x C: softmax(logits / temperature) averaged over the views."""
        logits = torch.from_numpy(self.logits[split])
        return F.softmax(logits / temperature, dim=-1).mean(0).numpy()


def save_teacher_outputs(path: Path, outputs: TeacherOutputs) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {f"{split}_logits": logits for split, logits in outputs.logits.items()}
    arrays.update({f"{split}_labels": labels for split, labels in outputs.labels.items()})
    with path.open("wb") as handle:
        record = {"format": TEACHER_FORMAT, **outputs.metadata.model_dump(mode="json")}
        np.savez(handle, metadata=np.array(json.dumps(record)), **arrays)


def load_teacher_outputs(path: Path, classes: Sequence[str], labels: Mapping[str, np.ndarray]) -> TeacherOutputs:
    """A teacher's cached outputs, checked against the prepared data they must describe (same classes, the
    same images in the same order, judged by their labels), or one line naming the fix."""
    fix = f"run `dvc repro` (teach@{path.stem} writes it)"
    if not path.is_file():
        raise FerbenchError(f"{path}: teacher outputs not found; {fix}")
    try:
        with np.load(path, allow_pickle=False) as arrays:
            metadata = json.loads(str(arrays["metadata"]))
            logits = {split: arrays[f"{split}_logits"] for split in PREPARED_SPLITS}
            cached_labels = {split: arrays[f"{split}_labels"] for split in PREPARED_SPLITS}
    except (OSError, KeyError, ValueError) as exc:
        raise FerbenchError(f"{path}: not a teacher-outputs file ({type(exc).__name__}); {fix}") from exc
    if not isinstance(metadata, dict) or metadata.pop("format", None) != TEACHER_FORMAT:
        raise FerbenchError(f"{path}: written by another ferbench version; {fix}")
    record = validated(TeacherRecord, metadata, str(path), f"teach@{path.stem}")
    if record.classes != list(classes):
        raise FerbenchError(f"{path}: written for other classes ({', '.join(record.classes)}); {fix}")
    for split in PREPARED_SPLITS:
        shape = logits[split].shape
        if (
            logits[split].ndim != 3
            or shape[1:] != (len(labels[split]), len(classes))
            or not np.array_equal(cached_labels[split], labels[split])
            or not np.isfinite(logits[split]).all()
        ):
            raise FerbenchError(f"{path}: its {split} outputs do not match data/prepared (stale or damaged); {fix}")
    return TeacherOutputs(logits, cached_labels, record)


def ensemble_probabilities(teachers: Sequence[TeacherOutputs], split: str, temperature: float) -> np.ndarray:
    """N x C: the teachers' temperature-softened probabilities, averaged over views, then over teachers."""
    if not teachers:
        raise FerbenchError("distill.teachers is empty: a student needs at least one teacher")
    return np.mean([teacher.probabilities(split, temperature) for teacher in teachers], axis=0)


class CachedTargets:
    """Soft labels looked up per image: the teachers' outputs on the clean images (all their views),
    cached once; the student's augmentation does not change them."""

    sees_images = False

    def __init__(self, probabilities: torch.Tensor) -> None:
        self.probabilities = probabilities

    def __call__(self, index: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        return self.probabilities[index]


class OnlineTargets:
    """Soft labels computed per batch: every teacher runs on the batch exactly as the student sees it
    (flipped, warped, erased, mixed), one extra forward pass per teacher and step."""

    sees_images = True

    def __init__(self, teachers: Sequence[nn.Module], temperature: float, bf16: bool) -> None:
        self.teachers = [teacher.eval() for teacher in teachers]
        for teacher in self.teachers:
            for parameter in teacher.parameters():
                parameter.requires_grad_(False)
        self.temperature = temperature
        self.bf16 = bf16

    @torch.no_grad()
    def __call__(self, index: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        device = inputs.device
        probabilities = []
        for teacher in self.teachers:
            with training_autocast(device, self.bf16):
                logits = teacher(inputs).float()
            probabilities.append(F.softmax(logits / self.temperature, dim=-1))
        return torch.stack(probabilities).mean(0)


def _accuracy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    return float((probabilities.argmax(-1) == labels).mean()) if len(labels) else 0.0


def teacher_outputs(
    model: nn.Module,
    splits: Mapping[str, Batches],
    views: TTAConfig,
    batch_size: int,
    identity: TeacherIdentity,
    leakage_free: np.ndarray,
) -> TeacherOutputs:
    """Run a trained model over every split in every view; its record is `identity` with its accuracies
    (the image alone and averaged over the views)."""
    logits = {split: view_logits(model, data, views, batch_size) for split, data in splits.items()}
    labels = {split: data.labels.cpu().numpy() for split, data in splits.items()}
    accuracy = {
        split: ViewAccuracy(
            image=_accuracy(logits[split][0], labels[split]), views=_accuracy(logits[split].mean(0), labels[split])
        )
        for split in splits
    }
    test = logits["test"].mean(0)
    accuracy["test_leakage_free"] = ViewAccuracy(views=_accuracy(test[leakage_free], labels["test"][leakage_free]))
    record = TeacherRecord(
        teacher=identity.teacher,
        stage=identity.stage,
        backbone=identity.backbone,
        classes=list(identity.classes),
        views=views,
        view_count=views.views,
        accuracy=accuracy,
    )
    return TeacherOutputs(logits, labels, record)


def outputs_digest(teachers: Sequence[TeacherOutputs]) -> str:
    """A short hash of the teachers' cached logits (what a student's resume state must match)."""
    digest = hashlib.sha256()
    for teacher in teachers:
        digest.update(teacher.name.encode())
        for split in PREPARED_SPLITS:
            digest.update(np.ascontiguousarray(teacher.logits[split]).tobytes())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class Teaching:
    """What a student learns from: its teachers' cached outputs, the temperature, the weight of the soft
    term and where the soft labels come from (`cached`, or `online` with the teachers' `models`)."""

    teachers: Sequence[TeacherOutputs]
    temperature: float
    kd_weight: float
    targets: str
    models: Sequence[nn.Module] = ()
    warm_start: str | None = None  # `<stage>@<teacher>` whose weights the student starts from; None: random
    initial_state: Mapping[str, torch.Tensor] | None = None  # those weights

    @property
    def names(self) -> list[str]:
        return [teacher.name for teacher in self.teachers]

    def ensemble_accuracy(self) -> dict[str, float]:
        """The ensemble's accuracy on val and test (probabilities at temperature 1, over views and teachers)."""
        labels = self.teachers[0].labels
        return {
            split: _accuracy(ensemble_probabilities(self.teachers, split, 1.0), labels[split])
            for split in ("val", "test")
        }

    @property
    def record(self) -> DistillationSummary:
        """The teachers (name, stage, backbone, views, accuracies), the ensemble's accuracy and the settings:
        what the student's checkpoint, details and model card say it learned from."""
        return DistillationSummary(
            teachers=[teacher.metadata.summary() for teacher in self.teachers],
            ensemble=self.ensemble_accuracy(),
            temperature=self.temperature,
            kd_weight=self.kd_weight,
            targets=self.targets,
            warm_start=self.warm_start,
        )

    @property
    def digest(self) -> str:
        settings = f"{self.temperature}|{self.kd_weight}|{self.targets}|{self.warm_start}"
        return hashlib.sha256(f"{outputs_digest(self.teachers)}|{settings}".encode()).hexdigest()[:16]

    def distillation(self, train: Batches, device: torch.device, bf16: bool) -> Distillation:
        """The engine's distillation for the train split on `device`."""
        if self.targets == "online":
            if not self.models:
                raise FerbenchError("distill.targets is online, but no teacher model was loaded")
            targets: Any = OnlineTargets([model.to(device) for model in self.models], self.temperature, bf16)
        else:
            probabilities = ensemble_probabilities(self.teachers, "train", self.temperature)
            if len(probabilities) != len(train):
                raise FerbenchError("teacher outputs and data/prepared/train.npz differ in length; rerun `dvc repro`")
            targets = CachedTargets(torch.from_numpy(probabilities).float().to(device))
        return Distillation(targets, self.kd_weight, self.temperature)


@dataclass(frozen=True)
class TeacherIdentity:
    """Which model a teacher is: its name, the stage that trained it, its backbone and its classes."""

    teacher: str
    stage: str
    backbone: str
    classes: tuple[str, ...]


@dataclass(frozen=True)
class TrainedTeacher:
    """A teacher as `teach` finds it: its backbone, the stage that trained it and that stage's checkpoint."""

    spec: BackboneSpec
    stage: str
    checkpoint: Path


def cache_teacher_outputs(
    teacher: TrainedTeacher,
    classes: Sequence[str],
    prepared_dir: Path,
    views: TTAConfig,
    batch_size: int,
    device: torch.device,
    destination: Path,
) -> TeacherOutputs:
    """The `teach` stage: load a trained checkpoint, run it over every prepared split in every view, write
    the outputs to `destination` (an .npz) and a copy of the checkpoint beside it (.pt)."""
    spec, stage, checkpoint = teacher.spec, teacher.stage, teacher.checkpoint
    model = load_classifier(spec, checkpoint, len(classes)).to(device)
    splits = load_device_splits(prepared_dir, device)
    identity = TeacherIdentity(spec.name, stage, spec.model, tuple(classes))
    leakage_free = leakage_free_test_mask(prepared_dir, len(splits["test"]))
    outputs = teacher_outputs(model, splits, views, batch_size, identity, leakage_free)
    save_teacher_outputs(destination, outputs)
    shutil.copyfile(checkpoint, destination.with_suffix(".pt"))
    return outputs


def load_teaching(
    params: Params, prepared_dir: Path, student: str, root: Path = Path("."), targets: str | None = None
) -> Teaching:
    """What `student` learns from: the outputs of the teachers of `distill.teachers` (checked against the
    prepared data), their models for online soft labels (`targets`, by default `distill.targets`), and the
    weights it starts from when it is warm-started. `root`: the workspace the files are in."""
    classes = list(params.data.classes)
    targets = targets or params.distill.targets
    labels = {split: load_split(prepared_dir / f"{split}.npz").labels for split in PREPARED_SPLITS}
    teachers = [load_teacher_outputs(root / teacher_file(name), classes, labels) for name in params.distill.teachers]
    models = []
    if targets == "online":
        for name in params.distill.teachers:
            models.append(load_classifier(backbone_spec(params, name), root / teacher_checkpoint(name), len(classes)))
    distill = params.distill
    initial_state = warm_start_weights(params, student, root)
    return Teaching(
        teachers,
        distill.temperature,
        distill.kd_weight,
        targets,
        models,
        warm_start=f"{distill.teachers[student]}@{student}" if initial_state is not None else None,
        initial_state=initial_state,
    )


def warm_start_weights(params: Params, student: str, root: Path = Path(".")) -> dict[str, torch.Tensor] | None:
    """The weights a student starts from: those of the teacher of its own backbone when
    `distill.students.<student>.warm_start`, else None (random initialisation)."""
    if not params.warm_start(student):
        return None
    state, _ = load_checkpoint(root / teacher_checkpoint(student))
    return state
