"""Training and evaluation loops on data that already lives on the training device.

Inputs are indexed straight from one device tensor per split (uint8 images or cached
features); augmentation (`ferbench.augment`) and preprocessing run on whole batches there.
There is no DataLoader and no per-image Python work in the loop. The recipe around it:
optimizers, learning-rate schedules stepped per batch (linear warm-up, cosine, step,
one-cycle) or per epoch on val loss (plateau), label smoothing, class weighting or a
class-balanced sampler, mixup/cutmix, bf16 mixed precision, and an exponential moving
average of the weights that is evaluated and checkpointed as the model when on.
"""

from __future__ import annotations

import copy
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

from ferbench.augment import AugmentConfig, augment_images, mix_batch
from ferbench.distributed import (
    SINGLE,
    Group,
    all_sum,
    broadcast,
    epoch_order,
    global_batches,
    identical_across_ranks,
    rank_share,
    sync_buffers,
    wrap,
)
from ferbench.errors import FerbenchError
from ferbench.models.checkpoint import atomic_torch_save, model_state, save_state, unwrap
from ferbench.run_settings import TrainConfig
from ferbench.schema import PRECISIONS

CPU_WARNING_SECONDS = 30 * 60


def mixed_precision(precision: str, device: torch.device) -> bool:
    """Whether training steps run under bf16 autocast: `auto` on CUDA and on CPUs with native bf16
    (AVX512-BF16 or AMX, where it about halves a plain CNN's step time), `bf16` always, `fp32` never.
    Depthwise convolutions (EfficientNet, MobileNet) train slower in bf16 on CPUs: give them `fp32`."""
    if precision not in PRECISIONS:
        raise FerbenchError(f"params.yaml: 'precision' is {precision!r}; use one of: {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision == "bf16"
    if device.type == "cuda":
        return True
    return (
        device.type == "cpu"
        and torch.backends.mkldnn.is_available()
        and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    )


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

    def get(self, index: torch.Tensor, flip: bool = False, augment: AugmentConfig | None = None) -> torch.Tensor:
        """The inputs at `index`: as stored, or randomly mirrored (`flip`) and augmented (images only)."""
        if self.features:
            if augment is not None and (augment.geometric or augment.erase):
                raise FerbenchError(
                    "params.yaml: augment (shift/rotate/scale/erase) needs images, but this run "
                    "trains on cached features; only flip applies there"
                )
            if flip and self.inputs.shape[0] > 1:
                view = torch.randint(0, self.inputs.shape[0], (len(index),), device=index.device)
                return self.inputs[view, index]
            return self.inputs[0, index]
        return augment_images(self.inputs[index], flip, augment or AugmentConfig())


@dataclass
class FitResult:
    best_epoch: int
    best_val_accuracy: float
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    train_images_per_second: float = 0.0
    identical_across_ranks: bool = True  # data-parallel runs: every rank ended with the same weights


def _optimizer(parameters: Any, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(parameters, lr=config.lr, momentum=0.9, weight_decay=config.weight_decay, nesterov=True)


WARMUP_START = 0.01  # warm-up starts at this share of the learning rate


def lr_factor(step: int, steps_per_epoch: int, config: TrainConfig) -> float:
    """The learning rate of batch `step` (0-based) as a share of `config.lr`, for the per-batch
    schedules: linear warm-up over `warmup_epochs`, then constant (none), half a cosine down to 0
    (cosine), or x0.1 after each third of the epochs (step)."""
    warmup = round(config.warmup_epochs * steps_per_epoch)
    if step < warmup:
        return WARMUP_START + (1 - WARMUP_START) * step / warmup
    if config.scheduler == "cosine":
        total = config.epochs * steps_per_epoch
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))
    if config.scheduler == "step":
        return 0.1 ** ((step // steps_per_epoch) // max(1, config.epochs // 3))
    return 1.0


def _scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int) -> Any:
    """Stepped after every batch, except `plateau`, which `fit` steps with the val loss after every epoch."""
    if config.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=config.plateau_factor, patience=config.plateau_patience
        )
    if config.scheduler == "onecycle":
        rising = config.warmup_epochs / config.epochs if config.warmup_epochs else 0.3
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=config.lr, pct_start=rising, total_steps=config.epochs * steps_per_epoch
        )
    if config.scheduler == "none" and not config.warmup_epochs:
        return None
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, steps_per_epoch, config))


class WeightAverage:
    """Exponential moving average of a model's weights and buffers (BatchNorm statistics too).

    The decay ramps up as (1 + t) / (10 + t) over the first steps, so the average is not
    dominated by the random initialisation. `module` is an ordinary copy of the model, used
    for evaluation and saved as the checkpoint.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.module = copy.deepcopy(unwrap(model)).eval()
        for parameter in self.module.parameters():
            parameter.requires_grad_(False)
        self.decay = decay
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        averaged, live = [], []
        for mine, theirs in zip(self.module.state_dict().values(), unwrap(model).state_dict().values(), strict=True):
            if mine.is_floating_point():
                averaged.append(mine)
                live.append(theirs.detach())
            else:
                mine.copy_(theirs)
        torch._foreach_lerp_(averaged, live, 1 - decay)

    def state_dict(self) -> dict[str, Any]:
        return {"weights": model_state(self.module), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["weights"])
        self.updates = int(state["updates"])


def class_weights(labels: torch.Tensor, num_classes: int, mode: str) -> torch.Tensor | None:
    """`balanced`: weight each class by N / (K * count), as in scikit-learn."""
    if mode == "none":
        return None
    counts = torch.bincount(labels, minlength=num_classes).float().clamp(min=1)
    return len(labels) / (num_classes * counts)


def balanced_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per-image sampling weights under which every class is drawn equally often on average."""
    counts = torch.bincount(labels, minlength=num_classes).float().clamp(min=1)
    return (1.0 / counts)[labels]


def balanced_sample(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """An epoch's worth of indices (with replacement) in which every class is drawn equally often on average."""
    return torch.multinomial(balanced_weights(labels, num_classes), len(labels), replacement=True)


def _autocast(device: torch.device) -> Any:
    """Evaluation: bf16 on CUDA, exact fp32 on the CPU (the numbers match the exported model's)."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")


def _training_autocast(device: torch.device, bf16: bool) -> Any:
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)


@torch.no_grad()
def predict_logits(model: nn.Module, data: Batches, batch_size: int) -> torch.Tensor:
    """Logits for a whole split, in order, without augmentation."""
    model.eval()
    device = data.labels.device
    outputs = []
    for index in torch.arange(len(data), device=device).split(batch_size):
        with _autocast(device):
            outputs.append(model(data.get(index)).float())
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
    group: Group = SINGLE,
    seed: int = 0,
    sync_batchnorm: bool = True,
) -> FitResult:
    """Train for `config.epochs`, keep the best-on-val state dict in `checkpoint`.

    With `config.ema_decay`, the moving average of the weights is what is evaluated each epoch
    and checkpointed. With `resume`, the full training state is saved after every epoch, and a
    run that finds a matching unfinished state (same fingerprint) continues from it instead of
    starting over; the earlier epochs' rows are replayed through `log_epoch` so curves stay
    complete. `config.precision` decides on bf16 autocast for the training steps (`mixed_precision`).

    With a data-parallel `group` (`ferbench.distributed`), `config.batch_size` is the global batch:
    every rank draws the same epoch order (from `seed` and the epoch), trains on its share of each
    batch under DistributedDataParallel and evaluates the same val; rank 0 alone writes the
    checkpoint, the resume state and the curves, and its resume state is what every rank resumes from.
    """
    device = train.labels.device
    bf16 = mixed_precision(config.precision, device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = _optimizer(trainable, config)
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    scheduler = _scheduler(optimizer, config, steps_per_epoch)
    per_batch = scheduler is not None and config.scheduler != "plateau"
    average = WeightAverage(model, config.ema_decay) if config.ema_decay else None
    evaluated = average.module if average is not None else model
    weights = class_weights(train.labels, num_classes, config.class_weighting)
    result = FitResult(best_epoch=-1, best_val_accuracy=-math.inf)
    metadata = checkpoint_metadata or {}
    first_epoch = 0
    best_state: dict[str, torch.Tensor] | None = None
    state = resume.load(config.epochs) if resume is not None and group.is_main else None
    state = broadcast(state, group)
    if state is not None:
        first_epoch, best_state = _restore(state, model, optimizer, scheduler, average, result, device)
        if group.is_main:
            print(f"{description}: resuming after epoch {first_epoch} of {config.epochs} ({resume.path})")
            save_state(checkpoint, best_state, epoch=result.best_epoch, **metadata)
        for row in result.history:
            if log_epoch is not None:
                log_epoch(row)
    trained = wrap(model, group, sync_batchnorm)  # the model itself when not distributed
    start = time.perf_counter()
    train_seconds = 0.0
    with tqdm(
        total=config.epochs * steps_per_epoch,
        initial=first_epoch * steps_per_epoch,
        desc=description,
        unit="batch",
        mininterval=2.0,
        disable=not group.is_main,
    ) as progress:
        for epoch in range(first_epoch, config.epochs):
            model.train()
            epoch_start = time.perf_counter()
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), device=device)
            if group.enabled:
                balance = balanced_weights(train.labels, num_classes) if config.sampler == "balanced" else None
                order = epoch_order(len(train), seed, epoch, device, balance)
            else:
                order = (
                    balanced_sample(train.labels, num_classes)
                    if config.sampler == "balanced"
                    else torch.randperm(len(train), device=device)
                )
            seen = 0
            for batch in global_batches(order, config.batch_size, group):
                index = rank_share(batch, group)
                seen += len(batch)
                inputs = train.get(index, flip=config.flip, augment=config.augment)
                labels = partner_labels = train.labels[index]
                share = 1.0
                if config.augment.mixing:
                    inputs, labels, partner_labels, share = mix_batch(inputs.float(), labels, config.augment)
                with _training_autocast(device, bf16):
                    logits = trained(inputs).float()
                loss = F.cross_entropy(logits, labels, weight=weights, label_smoothing=config.label_smoothing)
                if share < 1.0:
                    loss = share * loss + (1 - share) * F.cross_entropy(
                        logits, partner_labels, weight=weights, label_smoothing=config.label_smoothing
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if per_batch:
                    scheduler.step()
                if average is not None:
                    average.update(model)
                loss_sum += loss.detach() * len(index)
                correct += (logits.argmax(1) == labels).sum()
                progress.update()
            train_seconds += time.perf_counter() - epoch_start
            loss_sum, correct = all_sum(loss_sum, group), all_sum(correct, group)
            for module in (model, evaluated):
                sync_buffers(module, group)
            val_metrics = evaluate(evaluated, val, config.eval_batch_size)
            if scheduler is not None and not per_batch:
                scheduler.step(val_metrics["loss"])
            row = {
                "epoch": epoch + 1,
                "train_loss": float(loss_sum.item() / seen),
                "train_accuracy": float(correct.item() / seen),
                "val_loss": val_metrics["loss"],
                "val_accuracy": val_metrics["accuracy"],
                "lr": float(optimizer.param_groups[0]["lr"]),
            }
            result.history.append(row)
            if log_epoch is not None:
                log_epoch(row)
            improved = row["val_accuracy"] > result.best_val_accuracy
            current = model_state(evaluated) if improved or resume is not None else None  # one copy per epoch
            if improved:
                result.best_epoch, result.best_val_accuracy = epoch + 1, row["val_accuracy"]
                if group.is_main:
                    save_state(checkpoint, current, epoch=epoch + 1, **metadata)
                best_state = current
            if resume is not None and group.is_main:
                live = model_state(model) if average is not None else current
                resume.save(epoch + 1, live, optimizer, scheduler, average, result, best_state)
            progress.set_postfix(epoch=epoch + 1, val_acc=f"{row['val_accuracy']:.3f}")
    result.seconds = time.perf_counter() - start
    result.identical_across_ranks = identical_across_ranks(evaluated, group)
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

    def save(
        self,
        epoch: int,
        weights: dict[str, torch.Tensor],
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        average: WeightAverage | None,
        result: FitResult,
        best_state: dict[str, torch.Tensor] | None,
    ) -> None:
        state = {
            "fingerprint": self.fingerprint,
            "epoch": epoch,
            "model": weights,
            "average": average.state_dict() if average is not None else None,
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


def _restore(
    state: dict[str, Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    average: WeightAverage | None,
    result: FitResult,
    device: torch.device,
) -> tuple[int, dict[str, torch.Tensor]]:
    unwrap(model).load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state["scheduler"] is not None:
        scheduler.load_state_dict(state["scheduler"])
    if average is not None and state.get("average") is not None:
        average.load_state_dict(state["average"])
    result.best_epoch, result.best_val_accuracy = state["best_epoch"], state["best_val_accuracy"]
    result.history = list(state["history"])
    torch.set_rng_state(state["cpu_rng"])
    if device.type == "cuda" and state["cuda_rng"]:
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return int(state["epoch"]), state["best_state"]


def estimate_seconds(model: nn.Module, train: Batches, config: TrainConfig, probe_batches: int = 2) -> float:
    """Time a few real training steps, restore the weights, and extrapolate to the whole run."""
    bf16 = mixed_precision(config.precision, train.labels.device)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    optimizer = _optimizer([p for p in model.parameters() if p.requires_grad], config)
    model.train()
    device = train.labels.device
    index = torch.arange(min(len(train), config.batch_size), device=device)
    timings = []
    for _ in range(probe_batches + 1):
        start = time.perf_counter()
        with _training_autocast(device, bf16):
            loss = F.cross_entropy(model(train.get(index)).float(), train.labels[index])
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
