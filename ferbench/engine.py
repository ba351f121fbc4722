"""Training and evaluation loops on data that already lives on the training device.

Inputs are indexed straight from one device tensor per split (uint8 images or cached
features); augmentation and preprocessing run on whole batches there. There is no
DataLoader and no per-image Python work in the loop.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from ferbench.errors import FerbenchError
from ferbench.models.checkpoint import atomic_torch_save, model_state, save_state, unwrap
from ferbench.models.preprocess import random_hflip

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("none", "cosine", "step")
CLASS_WEIGHTING = ("none", "balanced")
CPU_WARNING_SECONDS = 30 * 60


@dataclass(frozen=True)
class TrainConfig:
    """The training hyperparameters (a stage's params section, per-backbone overrides merged)."""

    epochs: int
    batch_size: int
    lr: float
    optimizer: str = "adam"
    weight_decay: float = 0.0
    scheduler: str = "none"
    label_smoothing: float = 0.0
    class_weighting: str = "none"
    flip: bool = True
    eval_batch_size: int = 256

    def __post_init__(self) -> None:
        for name, allowed in (("optimizer", OPTIMIZERS), ("scheduler", SCHEDULERS),
                              ("class_weighting", CLASS_WEIGHTING)):  # fmt: skip
            if getattr(self, name) not in allowed:
                raise FerbenchError(
                    f"params.yaml: '{name}' is {getattr(self, name)!r}; use one of: {', '.join(allowed)}"
                )
        if self.epochs < 1 or self.batch_size < 1:
            raise FerbenchError("params.yaml: epochs and batch_size must be at least 1")


def resolve_device(name: str) -> torch.device:
    """`auto`: CUDA when present, else CPU; or any torch device string."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise FerbenchError(f"params.yaml: device is {name!r} but CUDA is not available; use device: auto or cpu")
    return torch.device(name)


class Batches:
    """One split on the device: inputs (images N x H x W, or features V x N x D) and labels.

    Features come with V=1 (original) or V=2 (original and mirrored); mirroring then means
    taking the mirrored copy's features, which is what flipping the image would have given.
    """

    def __init__(self, inputs: torch.Tensor, labels: torch.Tensor, features: bool = False) -> None:
        self.inputs = inputs
        self.labels = labels
        self.features = features

    def __len__(self) -> int:
        return len(self.labels)

    def get(self, index: torch.Tensor, augment: bool) -> torch.Tensor:
        if self.features:
            if augment and self.inputs.shape[0] > 1:
                view = torch.randint(0, self.inputs.shape[0], (len(index),), device=index.device)
                return self.inputs[view, index]
            return self.inputs[0, index]
        images = self.inputs[index]
        return random_hflip(images) if augment else images


@dataclass
class FitResult:
    best_epoch: int
    best_val_accuracy: float
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    train_images_per_second: float = 0.0


def _optimizer(parameters: Any, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(parameters, lr=config.lr, momentum=0.9, weight_decay=config.weight_decay, nesterov=True)


def _scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig) -> torch.optim.lr_scheduler.LRScheduler | None:
    if config.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    if config.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=max(1, config.epochs // 3), gamma=0.1)
    return None


def class_weights(labels: torch.Tensor, num_classes: int, mode: str) -> torch.Tensor | None:
    """`balanced`: weight each class by N / (K * count), as in scikit-learn."""
    if mode == "none":
        return None
    counts = torch.bincount(labels, minlength=num_classes).float().clamp(min=1)
    return len(labels) / (num_classes * counts)


def _autocast(device: torch.device) -> Any:
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")


@torch.no_grad()
def predict_logits(model: nn.Module, data: Batches, batch_size: int) -> torch.Tensor:
    """Logits for a whole split, in order, without augmentation."""
    model.eval()
    device = data.labels.device
    outputs = []
    for index in torch.arange(len(data), device=device).split(batch_size):
        with _autocast(device):
            outputs.append(model(data.get(index, augment=False)).float())
    return torch.cat(outputs) if outputs else torch.zeros(0)


def evaluate(model: nn.Module, data: Batches, batch_size: int) -> dict[str, float]:
    logits = predict_logits(model, data, batch_size)
    return {
        "loss": float(F.cross_entropy(logits, data.labels).item()),
        "accuracy": float((logits.argmax(1) == data.labels).float().mean().item()),
    }


def fit(
    model: nn.Module,
    train: Batches,
    val: Batches,
    config: TrainConfig,
    num_classes: int,
    checkpoint: Path,
    log_epoch: Callable[[dict[str, float]], None] | None = None,
    description: str = "train",
    checkpoint_metadata: dict[str, Any] | None = None,
    resume: ResumeFile | None = None,
) -> FitResult:
    """Train for `config.epochs`, keep the best-on-val state dict in `checkpoint`.

    With `resume`, the full training state is saved after every epoch, and a run that finds a
    matching unfinished state (same fingerprint) continues from it instead of starting over;
    the earlier epochs' rows are replayed through `log_epoch` so curves stay complete.
    """
    device = train.labels.device
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = _optimizer(trainable, config)
    scheduler = _scheduler(optimizer, config)
    weights = class_weights(train.labels, num_classes, config.class_weighting)
    result = FitResult(best_epoch=-1, best_val_accuracy=-math.inf)
    metadata = checkpoint_metadata or {}
    first_epoch = 0
    best_state: dict[str, torch.Tensor] | None = None
    state = resume.load(config.epochs) if resume is not None else None
    if state is not None:
        first_epoch, best_state = _restore(state, model, optimizer, scheduler, result, device)
        print(f"{description}: resuming after epoch {first_epoch} of {config.epochs} ({resume.path})")
        save_state(checkpoint, best_state, epoch=result.best_epoch, **metadata)
        for row in result.history:
            if log_epoch is not None:
                log_epoch(row)
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    start = time.perf_counter()
    train_seconds = 0.0
    with tqdm(total=config.epochs * steps_per_epoch, initial=first_epoch * steps_per_epoch, desc=description,
              unit="batch", mininterval=2.0) as progress:  # fmt: skip
        for epoch in range(first_epoch, config.epochs):
            model.train()
            epoch_start = time.perf_counter()
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), device=device)
            for index in torch.randperm(len(train), device=device).split(config.batch_size):
                inputs, labels = train.get(index, augment=config.flip), train.labels[index]
                with _autocast(device):
                    logits = model(inputs).float()
                loss = F.cross_entropy(logits, labels, weight=weights, label_smoothing=config.label_smoothing)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                loss_sum += loss.detach() * len(index)
                correct += (logits.argmax(1) == labels).sum()
                progress.update()
            if scheduler is not None:
                scheduler.step()
            train_seconds += time.perf_counter() - epoch_start
            val_metrics = evaluate(model, val, config.eval_batch_size)
            row = {
                "epoch": epoch + 1,
                "train_loss": float(loss_sum.item() / len(train)),
                "train_accuracy": float(correct.item() / len(train)),
                "val_loss": val_metrics["loss"],
                "val_accuracy": val_metrics["accuracy"],
            }
            result.history.append(row)
            if log_epoch is not None:
                log_epoch(row)
            improved = row["val_accuracy"] > result.best_val_accuracy
            current = model_state(model) if improved or resume is not None else None  # one copy per epoch
            if improved:
                result.best_epoch, result.best_val_accuracy = epoch + 1, row["val_accuracy"]
                save_state(checkpoint, current, epoch=epoch + 1, **metadata)
                best_state = current
            if resume is not None:
                resume.save(epoch + 1, current, optimizer, scheduler, result, best_state)
            progress.set_postfix(epoch=epoch + 1, val_acc=f"{row['val_accuracy']:.3f}")
    result.seconds = time.perf_counter() - start
    epochs_run = config.epochs - first_epoch
    result.train_images_per_second = epochs_run * len(train) / max(train_seconds, 1e-9) if epochs_run else 0.0
    return result


@dataclass(frozen=True)
class ResumeFile:
    """Where a run keeps its full state after each epoch, and what it must match to be resumed.

    `fingerprint` identifies everything that shapes the run (hyperparameters, backbone, data);
    a state with another fingerprint, or one that already finished, is ignored.
    """

    path: Path
    fingerprint: str

    def load(self, epochs: int) -> dict[str, Any] | None:
        if not self.path.is_file():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a torn or foreign file: start over, say why
            print(f"warning: cannot read {self.path} ({type(exc).__name__}); starting over")
            return None
        if state.get("fingerprint") != self.fingerprint or not 0 < state.get("epoch", 0) < epochs:
            return None
        return state

    def save(self, epoch: int, weights: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer,
             scheduler: torch.optim.lr_scheduler.LRScheduler | None, result: FitResult,
             best_state: dict[str, torch.Tensor] | None) -> None:  # fmt: skip
        state = {
            "fingerprint": self.fingerprint,
            "epoch": epoch,
            "model": weights,
            "best_state": best_state,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "best_epoch": result.best_epoch,
            "best_val_accuracy": result.best_val_accuracy,
            "history": result.history,
            "cpu_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }
        atomic_torch_save(self.path, state)


def _restore(state: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer,
             scheduler: torch.optim.lr_scheduler.LRScheduler | None, result: FitResult,
             device: torch.device) -> tuple[int, dict[str, torch.Tensor]]:  # fmt: skip
    unwrap(model).load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state["scheduler"] is not None:
        scheduler.load_state_dict(state["scheduler"])
    result.best_epoch, result.best_val_accuracy = state["best_epoch"], state["best_val_accuracy"]
    result.history = list(state["history"])
    torch.set_rng_state(state["cpu_rng"])
    if device.type == "cuda" and state["cuda_rng"]:
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return int(state["epoch"]), state["best_state"]


def estimate_seconds(model: nn.Module, train: Batches, config: TrainConfig, probe_batches: int = 2) -> float:
    """Time a few real training steps, restore the weights, and extrapolate to the whole run."""
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    optimizer = _optimizer([p for p in model.parameters() if p.requires_grad], config)
    model.train()
    device = train.labels.device
    index = torch.arange(min(len(train), config.batch_size), device=device)
    timings = []
    for _ in range(probe_batches + 1):
        start = time.perf_counter()
        with _autocast(device):
            loss = F.cross_entropy(model(train.get(index, augment=False)).float(), train.labels[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        timings.append(time.perf_counter() - start)
    model.load_state_dict(state)
    per_batch = float(np.median(timings[1:]))
    return per_batch * math.ceil(len(train) / config.batch_size) * config.epochs * 1.15  # + evaluation


def warn_if_slow(seconds: float, device: torch.device, what: str) -> None:
    """On CPU, say up front when a run would take long, and where the quick settings are."""
    if device.type == "cpu" and seconds > CPU_WARNING_SECONDS:
        print(
            f"warning: {what} would take about {seconds / 3600:.1f} h on this CPU. For a quick run use the demo "
            "settings (`make demo`, params-demo.yaml: small backbones at a low input_size, fewer epochs), "
            "or run on a CUDA GPU (device: auto picks it)."
        )
