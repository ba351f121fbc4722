"""The two benchmarks of a backbone: frozen features (`embed` + `feature_extract`) and `finetune`.

Stages call these functions; each writes exactly its declared outputs:
models/<stage>/<name>.pt, metrics/<stage>/<name>.json, plots/<stage>/<name>/ and
dvclive/<stage>/<name>/ (per-epoch curves).
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from dvclive import Live
from tqdm import tqdm

from ferbench.data.prepared import PREPARED_SPLITS, load_split
from ferbench.engine import Batches, FitResult, TrainConfig, estimate_seconds, fit, predict_logits, warn_if_slow
from ferbench.errors import FerbenchError
from ferbench.metrics import classification_metrics
from ferbench.models.backbones import Backbone, BackboneSpec, build_backbone
from ferbench.models.checkpoint import load_checkpoint, unwrap
from ferbench.models.classifier import ImageClassifier, Standardize, build_head, frozen_extractor
from ferbench.plots import save_confusion_matrix

FEATURE_VIEWS = ("original", "mirrored")


HEAD_KEYS = ("hidden", "dropout")  # head shape, feature_extract only (fine-tuning keeps the seed's linear head)


def stage_settings(
    section: Mapping[str, Any], overrides: Mapping[str, Any] | None, where: str, head_keys: Sequence[str] = ()
) -> tuple[TrainConfig, dict[str, Any]]:
    """A stage's params section with a backbone's overrides merged: the TrainConfig and head settings."""
    merged = {**section, **(overrides or {})}
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(merged) - known - set(head_keys))
    if unknown:
        raise FerbenchError(
            f"params.yaml: unknown key(s) {', '.join(unknown)} in {where}; "
            f"known: {', '.join(sorted(known | set(head_keys)))}"
        )
    config = TrainConfig(**{k: v for k, v in merged.items() if k in known})
    head = {"hidden": [int(width) for width in merged.get("hidden", [])], "dropout": float(merged.get("dropout", 0.0))}
    return config, head


def load_device_splits(prepared_dir: Path, device: torch.device) -> dict[str, Batches]:
    """All prepared splits as uint8 image tensors on `device` (about 80 MB for FER-2013)."""
    splits = {}
    for name in PREPARED_SPLITS:
        split = load_split(prepared_dir / f"{name}.npz")
        splits[name] = Batches(torch.from_numpy(split.images).to(device), torch.from_numpy(split.labels).to(device))
    return splits


@torch.no_grad()
def compute_embeddings(
    backbone: Backbone, splits: Mapping[str, Batches], flip: bool, batch_size: int, device: torch.device
) -> dict[str, np.ndarray]:
    """Features of every split once (and of mirrored train images when `flip`), float16 V x N x D."""
    extractor = frozen_extractor(backbone).to(device)
    jobs = [
        (name, view) for name in splits for view in FEATURE_VIEWS if view == "original" or (flip and name == "train")
    ]
    total = sum(math.ceil(len(splits[name]) / batch_size) for name, _ in jobs)
    features: dict[str, list[np.ndarray]] = {name: [] for name in splits}
    with tqdm(total=total, desc="embed", unit="batch", mininterval=2.0) as progress:
        for name, view in jobs:
            images = splits[name].inputs
            chunks = []
            for start in range(0, len(images), batch_size):
                batch = images[start : start + batch_size]
                if view == "mirrored":
                    batch = batch.flip(-1)
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
                    chunks.append(extractor(batch).float().cpu())
                progress.update()
            features[name].append(torch.cat(chunks).numpy().astype(np.float16))
    arrays = {name: np.stack(views) for name, views in features.items()}
    arrays.update({f"{name}_labels": splits[name].labels.cpu().numpy() for name in splits})
    return arrays


def save_embeddings(path: Path, arrays: Mapping[str, np.ndarray], metadata: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        np.savez(handle, metadata=np.array(json.dumps(metadata)), **arrays)


def load_embeddings(path: Path, device: torch.device) -> tuple[dict[str, Batches], dict[str, Any]]:
    """Cached features as Batches on the device, and the embedding metadata."""
    if not path.is_file():
        raise FerbenchError(f"{path}: features not found; run `dvc repro` (the embed stage writes them)")
    with np.load(path, allow_pickle=False) as arrays:
        metadata = json.loads(str(arrays["metadata"]))
        splits = {
            name: Batches(
                torch.from_numpy(arrays[name].astype(np.float32)).to(device),
                torch.from_numpy(arrays[f"{name}_labels"]).to(device),
                features=True,
            )
            for name in PREPARED_SPLITS
        }
    return splits, metadata


class RunOutputs:
    """Where one benchmarked model writes: checkpoint, metrics, plots and DVCLive curves."""

    def __init__(self, stage: str, name: str) -> None:
        self.checkpoint = Path("models") / stage / f"{name}.pt"
        self.metrics = Path("metrics") / stage / f"{name}.json"
        self.plots = Path("plots") / stage / name
        self.live = Path("dvclive") / stage / name

    def clear(self) -> None:
        shutil.rmtree(self.live, ignore_errors=True)
        shutil.rmtree(self.plots, ignore_errors=True)


def _epoch_logger(live: Live):
    def log(row: Mapping[str, float]) -> None:
        for split in ("train", "val"):
            live.log_metric(f"{split}/loss", row[f"{split}_loss"])
            live.log_metric(f"{split}/accuracy", row[f"{split}_accuracy"])
        live.next_step()

    return log


def train_and_report(
    model: torch.nn.Module,
    splits: Mapping[str, Batches],
    config: TrainConfig,
    outputs: RunOutputs,
    classes: Sequence[str],
    description: str,
    extra: Mapping[str, Any],
) -> dict[str, Any]:
    """Fit with DVCLive curves, reload the best-on-val checkpoint, evaluate it on every split, write."""
    outputs.clear()
    device = splits["train"].labels.device
    warn_if_slow(estimate_seconds(model, splits["train"], config), device, description)
    with Live(dir=str(outputs.live), save_dvc_exp=False, dvcyaml=None) as live:
        result: FitResult = fit(model, splits["train"], splits["val"], config, len(classes), outputs.checkpoint,
                                log_epoch=_epoch_logger(live), description=description,
                                checkpoint_metadata=dict(extra))  # fmt: skip
    state, _ = load_checkpoint(outputs.checkpoint)
    unwrap(model).load_state_dict(state)
    report: dict[str, Any] = {}
    predictions = {}
    start = time.perf_counter()
    for name, data in splits.items():
        logits = predict_logits(model, data, config.eval_batch_size)
        predictions[name] = logits.argmax(1).cpu().numpy()
        report[name] = classification_metrics(data.labels.cpu().numpy(), predictions[name], classes)
    eval_seconds = time.perf_counter() - start
    test_labels = splits["test"].labels.cpu().numpy()
    outputs.plots.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"actual": [classes[i] for i in test_labels], "predicted": [classes[i] for i in predictions["test"]]}
                 ).to_csv(outputs.plots / "predictions.csv", index=False)  # fmt: skip
    save_confusion_matrix(np.array(report["test"]["confusion_matrix"]), classes, outputs.plots / "confusion.png",
                          title=f"{description}: test accuracy {report['test']['accuracy']:.3f}")  # fmt: skip
    summary = {
        "train": {"accuracy": report["train"]["accuracy"], "macro_f1": report["train"]["macro_f1"]},
        "val": {"accuracy": report["val"]["accuracy"], "macro_f1": report["val"]["macro_f1"]},
        "test": report["test"],
        "best_epoch": result.best_epoch,
        "epochs": config.epochs,
        "train_seconds": round(result.seconds, 2),
        "eval_seconds": round(eval_seconds, 2),
        "train_images_per_second": round(result.train_images_per_second, 1),
        "device": str(device),
        **extra,
    }
    outputs.metrics.parent.mkdir(parents=True, exist_ok=True)
    outputs.metrics.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def run_feature_extract(
    name: str, features_path: Path, section: Mapping[str, Any], overrides: Mapping[str, Any] | None,
    classes: Sequence[str], device: torch.device, seed: int,
) -> dict[str, Any]:  # fmt: skip
    """Train a head on cached features of a frozen backbone."""
    torch.manual_seed(seed)
    config, head_settings = stage_settings(
        section, overrides, f"feature_extract / backbones.{name}.feature_extract", HEAD_KEYS
    )
    splits, metadata = load_embeddings(features_path, device)
    if config.flip and splits["train"].inputs.shape[0] < 2:
        raise FerbenchError(f"{features_path}: no mirrored features; rerun `dvc repro embed@{name}`")
    train_features = splits["train"].inputs.flatten(0, 1)
    head = torch.nn.Sequential(
        Standardize(train_features.mean(0), train_features.std(0)),
        build_head(metadata["feature_dim"], len(classes), **head_settings),
    )
    return train_and_report(head.to(device), splits, config, RunOutputs("feature_extract", name), classes,
                            f"feature_extract@{name}", {"backbone": name, "feature_dim": metadata["feature_dim"],
                                                        "head_hidden": head_settings["hidden"]})  # fmt: skip


def run_finetune(
    spec: BackboneSpec, section: Mapping[str, Any], overrides: Mapping[str, Any] | None, prepared_dir: Path,
    classes: Sequence[str], device: torch.device, seed: int, compile_model: bool,
) -> dict[str, Any]:  # fmt: skip
    """Train the whole network (backbone and a linear head) end to end."""
    torch.manual_seed(seed)
    config, _ = stage_settings(section, overrides, f"finetune / backbones.{spec.name}.finetune")
    backbone = build_backbone(spec)
    model = ImageClassifier(backbone, build_head(backbone.feature_dim, len(classes))).to(device)
    runnable = torch.compile(model) if compile_model else model
    splits = load_device_splits(prepared_dir, device)
    return train_and_report(runnable, splits, config, RunOutputs("finetune", spec.name), classes,
                            f"finetune@{spec.name}", {"backbone": spec.name, "input_size": backbone.input_size,
                                                      "feature_dim": backbone.feature_dim})  # fmt: skip
