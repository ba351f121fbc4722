"""The two benchmarks of a backbone: frozen features (`embed` + `feature_extract`) and `finetune`.

Stages call these functions; each writes exactly its declared outputs:
models/<stage>/<name>.pt, metrics/<stage>/<name>.json (headline numbers),
reports/details/<stage>/<name>.json (everything else measured), plots/<stage>/<name>/ and
dvclive/<stage>/<name>/ (per-epoch curves).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch
from dvclive import Live

from ferbench.errors import FerbenchError
from ferbench.evaluation.calibration import calibration_report
from ferbench.evaluation.metrics import classification_metrics
from ferbench.evaluation.plots import save_confusion_matrix
from ferbench.files import write_frame_csv
from ferbench.models.backbones import build_backbone
from ferbench.models.checkpoint import load_checkpoint, unwrap
from ferbench.models.classifier import ImageClassifier, Standardize, build_head, set_trainable, with_tta
from ferbench.paths import RunOutputs
from ferbench.provenance import code_revision
from ferbench.records import DistillationSummary, RunIdentity, RunReport, as_record, write_headline, write_record
from ferbench.schema import CandidateTraining, FeatureExtract, Recipe
from ferbench.specs import BackboneSpec, TTAConfig
from ferbench.training.embeddings import load_device_splits, load_embeddings
from ferbench.training.engine import (
    Batches,
    Checkpointing,
    Distillation,
    Parallel,
    ResumeFile,
    TrainingData,
    fit,
    mixed_precision,
    predict_logits,
)
from ferbench.training.settings import RunSettings, scaled_recipe


class Teaching(Protocol):
    """What a student learns from, as its training needs it (`ferbench.training.teachers.Teaching`; kept
    apart so that the candidates' and benchmarks' stages do not depend on the teachers' code)."""

    @property
    def record(self) -> DistillationSummary:
        """The teachers and settings, for the student's checkpoint and details."""
        ...

    @property
    def digest(self) -> str:
        """A short hash of everything taught, for the resume fingerprint."""
        ...

    @property
    def initial_state(self) -> Mapping[str, torch.Tensor] | None:
        """The weights the student starts from (a teacher's of its own backbone), or None: random."""
        ...

    def distillation(self, train: Batches, device: torch.device, bf16: bool) -> Distillation: ...


@dataclass(frozen=True)
class Run:
    """One benchmarked model: its stage, its backbone's name and what its checkpoint and details record
    about it beyond the recipe (backbone, sizes, trainable part)."""

    stage: str
    name: str
    identity: RunIdentity

    @property
    def outputs(self) -> RunOutputs:
        return RunOutputs(self.stage, self.name)

    @property
    def description(self) -> str:
        return f"{self.stage}@{self.name}"


def _epoch_logger(live: Live):
    def log(row: Mapping[str, float]) -> None:
        for split in ("train", "val"):
            live.log_metric(f"{split}/loss", row[f"{split}_loss"])
            live.log_metric(f"{split}/accuracy", row[f"{split}_accuracy"])
        if "lr" in row:
            live.log_metric("lr", row["lr"])
        live.next_step()

    return log


def _headline(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {key: metrics[key] for key in ("accuracy", "macro_f1")}


def evaluate_model(
    model: torch.nn.Module,
    splits: Mapping[str, Batches],
    classes: Sequence[str],
    batch_size: int,
    leakage_free: np.ndarray,
    tta: TTAConfig | None = None,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Metrics of a trained model on every split: accuracy, macro-F1, per-class recall, confusion and
    loss; the leakage-free test subset; with `tta`, the same on val and test averaged over the TTA
    views; and calibration (ECE and NLL before and after a temperature fitted on val).

    Returns the metrics and the plain test predictions (for the confusion plot data).
    """
    report: dict[str, Any] = {}
    logits: dict[str, torch.Tensor] = {}
    for name, data in splits.items():
        logits[name] = predict_logits(model, data, batch_size)
        report[name] = classification_metrics(data.labels.cpu().numpy(), logits[name].argmax(1).cpu().numpy(), classes)
        report[name]["loss"] = float(torch.nn.functional.cross_entropy(logits[name], data.labels).item())
    test_labels = splits["test"].labels.cpu().numpy()
    test_predictions = logits["test"].argmax(1).cpu().numpy()
    report["test_leakage_free"] = {
        **_headline(classification_metrics(test_labels[leakage_free], test_predictions[leakage_free], classes)),
        "images": int(leakage_free.sum()),
    }
    if tta is not None and tta.enabled:
        augmented = with_tta(model, tta)
        views: dict[str, Any] = {"views": tta.views}
        for name in ("val", "test"):
            predicted = predict_logits(augmented, splits[name], max(1, batch_size // tta.views)).argmax(1).cpu().numpy()
            views[name] = _headline(classification_metrics(splits[name].labels.cpu().numpy(), predicted, classes))
            if name == "test":
                views["test_leakage_free"] = _headline(
                    classification_metrics(test_labels[leakage_free], predicted[leakage_free], classes)
                )
        report["tta"] = views
    report["calibration"] = calibration_report(
        {name: (logits[name].cpu().numpy(), splits[name].labels.cpu().numpy()) for name in ("val", "test")}
    )
    return report, {"test": test_predictions}


def train_and_report(
    model: torch.nn.Module,
    splits: Mapping[str, Batches],
    recipe: Recipe,
    run: Run,
    settings: RunSettings,
    resume: ResumeFile | None = None,
    tta: TTAConfig | None = None,
    distillation: Distillation | None = None,
) -> RunReport | None:
    """Fit with DVCLive curves (learning from `distillation`'s teachers too, when given), reload the
    best-on-val checkpoint, evaluate it on every split (with `tta`'s views too), write the run's outputs.

    Under data parallelism (`settings.group`), every rank trains; rank 0 alone logs, evaluates and
    writes and returns the report, and the other ranks return None once training is done."""
    group, outputs, classes = settings.group, run.outputs, settings.classes
    if group.is_main:
        outputs.clear()
    device = splits["train"].labels.device
    sync_batchnorm = settings.distributed is not None and settings.distributed.sync_batchnorm
    identity = run.identity.model_dump(mode="json", exclude_unset=True)
    metadata = {**identity, "training": recipe.model_dump(mode="json"), "code_revision": code_revision()}
    checkpointing = Checkpointing(outputs.checkpoint, metadata, resume)
    live_log = Live(dir=str(outputs.live), save_dvc_exp=False, dvcyaml=None) if group.is_main else nullcontext()
    with live_log as live:
        result = fit(
            model,
            TrainingData(splits["train"], splits["val"], len(classes), distillation),
            recipe,
            checkpointing,
            Parallel(group, settings.seed, sync_batchnorm),
            log_epoch=_epoch_logger(live) if group.is_main else None,
            description=run.description,
        )
    if not group.is_main:
        return None
    if not result.identical_across_ranks:
        raise FerbenchError(
            f"{run.description}: the {group.world_size} processes ended with different weights; data-parallel "
            "training went wrong (report it with the params); nothing was written"
        )
    state, _ = load_checkpoint(outputs.checkpoint)
    unwrap(model).load_state_dict(state)
    start = time.perf_counter()
    leakage_free = settings.leakage_free(len(splits["test"]))
    report, predictions = evaluate_model(model, splits, classes, recipe.eval_batch_size, leakage_free, tta)
    eval_seconds = time.perf_counter() - start
    test_labels = splits["test"].labels.cpu().numpy()
    outputs.plots.mkdir(parents=True, exist_ok=True)
    write_frame_csv(
        pd.DataFrame(
            {"actual": [classes[i] for i in test_labels], "predicted": [classes[i] for i in predictions["test"]]}
        ),
        outputs.plots / "predictions.csv",
    )
    save_confusion_matrix(
        np.array(report["test"]["confusion_matrix"]),
        classes,
        outputs.plots / "confusion.png",
        title=f"{run.description}: test accuracy {report['test']['accuracy']:.3f}",
    )
    details = {
        "train": {key: report["train"][key] for key in ("accuracy", "macro_f1", "loss")},
        "val": {
            key: report["val"][key] for key in ("accuracy", "macro_f1", "loss", "per_class_recall", "per_class_f1")
        },
        "test": report["test"],
        **{key: report[key] for key in ("test_leakage_free", "tta", "calibration") if key in report},
        "overfitting": overfitting_gaps(result.history, result.best_epoch, report),
        "best_epoch": result.best_epoch,
        "epochs": recipe.epochs,
        "train_seconds": round(result.seconds, 2),
        "eval_seconds": round(eval_seconds, 2),
        "train_images_per_second": round(result.train_images_per_second, 1),
        "device": str(device),
        "processes": group.world_size,
        "identical_weights_across_processes": result.identical_across_ranks,
        "global_batch_size": recipe.batch_size,
        "mixed_precision": "bf16" if mixed_precision(recipe.precision, device) else "fp32",
        **identity,
    }
    report = as_record(RunReport, details)
    write_record(outputs.details, report)
    write_headline(outputs.metrics, report.headline())
    return report


def overfitting_gaps(
    history: Sequence[Mapping[str, float]], best_epoch: int, report: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any]:
    """Train-val gaps: of the shipped (best-on-val) model evaluated cleanly, and from the epoch log.

    `accuracy_gap` (train minus val accuracy) and `loss_gap` (val minus train loss) grow as a
    model memorises. The epoch-log gaps use the running train metrics of that epoch (with
    augmentation), at the best and at the last epoch; the clean ones are what selection uses.
    """

    def from_row(row: Mapping[str, float]) -> dict[str, float]:
        return {
            "accuracy_gap": row["train_accuracy"] - row["val_accuracy"],
            "loss_gap": row["val_loss"] - row["train_loss"],
        }

    rows = {int(row["epoch"]): row for row in history}
    return {
        "accuracy_gap": report["train"]["accuracy"] - report["val"]["accuracy"],
        "loss_gap": report["val"]["loss"] - report["train"]["loss"],
        "best_epoch": best_epoch,
        "at_best_epoch": from_row(rows[best_epoch]),
        "at_last_epoch": from_row(history[-1]),
    }


def run_feature_extract(
    name: str, features_path: Path, training: FeatureExtract, settings: RunSettings
) -> RunReport | None:
    """Train a head on cached features of a frozen backbone (`training`: the merged feature_extract section)."""
    torch.manual_seed(settings.seed)
    splits, embedding = load_embeddings(features_path, settings.device)
    if training.flip and splits["train"].inputs.shape[0] < 2:
        raise FerbenchError(f"{features_path}: no mirrored features; rerun `dvc repro embed@{name}`")
    train_features = splits["train"].inputs.flatten(0, 1)
    head = torch.nn.Sequential(
        Standardize(train_features.mean(0), train_features.std(0)),
        build_head(embedding.feature_dim, len(settings.classes), training.hidden, training.dropout),
    )
    identity = RunIdentity(backbone=name, feature_dim=embedding.feature_dim, head_hidden=list(training.hidden))
    return train_and_report(
        head.to(settings.device), splits, training.recipe, Run("feature_extract", name, identity), settings
    )


def run_finetune(spec: BackboneSpec, recipe: Recipe, settings: RunSettings) -> RunReport | None:
    """Train the whole network (backbone and a linear head) end to end."""
    torch.manual_seed(settings.seed)
    recipe = scaled_recipe(recipe, settings.distributed, settings.group.world_size)
    backbone = build_backbone(spec)
    model = ImageClassifier(backbone, build_head(backbone.feature_dim, len(settings.classes))).to(settings.device)
    runnable = torch.compile(model) if settings.compile_model else model
    splits = load_device_splits(settings.prepared_dir, settings.device)
    identity = RunIdentity(backbone=spec.name, input_size=backbone.input_size, feature_dim=backbone.feature_dim)
    return train_and_report(runnable, splits, recipe, Run("finetune", spec.name, identity), settings, tta=settings.tta)


def data_digest(splits: Mapping[str, Batches]) -> str:
    """A short hash of the train and val data, so a resume state from other data is never used."""
    digest = hashlib.sha256()
    for name in ("train", "val"):
        digest.update(splits[name].inputs.cpu().numpy().tobytes())
        digest.update(splits[name].labels.cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def run_train(spec: BackboneSpec, training: CandidateTraining, settings: RunSettings) -> RunReport | None:
    """Final training of a shortlisted candidate: longer, with the chosen part trainable, resumable."""
    return long_training("train", spec, training, settings)


def long_training(
    stage: str,
    spec: BackboneSpec,
    training: CandidateTraining,
    settings: RunSettings,
    teaching: Teaching | None = None,
) -> RunReport | None:
    """A candidate's training (`train`), or a student's (`distill`, with `teaching`): the recipe, with the
    chosen part trainable, resumable after a kill. The checkpoint and details record the teachers."""
    torch.manual_seed(settings.seed)
    recipe = scaled_recipe(training.recipe, settings.distributed, settings.group.world_size)
    backbone = build_backbone(spec)
    model = ImageClassifier(backbone, build_head(backbone.feature_dim, len(settings.classes)))
    if teaching is not None and teaching.initial_state is not None:
        model.load_state_dict(teaching.initial_state)
    trainable_parameters = set_trainable(model, training.trainable)
    model = model.to(settings.device)
    runnable = torch.compile(model) if settings.compile_model else model
    splits = load_device_splits(settings.prepared_dir, settings.device)
    identity = RunIdentity(
        backbone=spec.name,
        input_size=backbone.input_size,
        feature_dim=backbone.feature_dim,
        trainable=training.trainable,
        trainable_parameters=trainable_parameters,
        **({"distillation": teaching.record} if teaching is not None else {}),
    )
    distillation = None
    if teaching is not None:
        distillation = teaching.distillation(
            splits["train"], settings.device, mixed_precision(recipe.precision, settings.device)
        )
    run = Run(stage, spec.name, identity)
    fingerprint = hashlib.sha256(
        json.dumps(
            {
                "config": recipe.model_dump(),
                "spec": spec.model_dump(),
                "trainable": training.trainable,
                "classes": list(settings.classes),
                "seed": settings.seed,
                "bf16": mixed_precision(recipe.precision, settings.device),
                "data": data_digest(splits),
                "processes": settings.group.world_size,
                "teaching": teaching.digest if teaching is not None else None,
            },
            sort_keys=True,
        ).encode()
    ).hexdigest()[:16]
    resume = ResumeFile(run.outputs.resume, fingerprint)
    return train_and_report(
        runnable, splits, recipe, run, settings, resume=resume, tta=settings.tta, distillation=distillation
    )
