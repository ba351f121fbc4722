"""Training and evaluation loops on data that already lives on the training device.

Inputs are indexed straight from one device tensor per split (uint8 images or cached
features); augmentation (`ferbench.training.augment`) and preprocessing run on whole batches there.
There is no DataLoader and no per-image Python work in the loop. The recipe around it:
optimizers, learning-rate schedules stepped per batch (linear warm-up, cosine, step,
one-cycle) or per epoch on val loss (plateau), label smoothing, class weighting or a
class-balanced sampler, mixup/cutmix, bf16 mixed precision, and an exponential moving
average of the weights that is evaluated and checkpointed as the model when on.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from torch.nn import functional as F
from torch.optim.swa_utils import AveragedModel
from tqdm import tqdm

from ferbench.errors import FerbenchError
from ferbench.models.checkpoint import atomic_torch_save, model_state, save_state, unwrap
from ferbench.schema import NO_AUGMENT, Augment, Recipe
from ferbench.training.augment import augment_images, mix_batch
from ferbench.training.distributed import (
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

CPU_WARNING_SECONDS = 30 * 60


def mixed_precision(precision: str, device: torch.device) -> bool:
    """Whether training steps run under bf16 autocast: `auto` on CUDA and on CPUs with native bf16
    (AVX512-BF16 or AMX, where it about halves a plain CNN's step time), `bf16` always, `fp32` never.
    Depthwise convolutions (EfficientNet, MobileNet) train slower in bf16 on CPUs: give them `fp32`."""
    if precision != "auto":
        return precision == "bf16"
    if device.type == "cuda":
        return True
    return (
        device.type == "cpu"
        and torch.backends.mkldnn.is_available()
        and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    )


class SoftTargets(Protocol):
    """Teachers' class probabilities (at the distillation temperature) for a training batch."""

    sees_images: bool  # computed from the batch as the student sees it (augmented, mixed), not looked up

    def __call__(self, index: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """B x C probabilities for the train images at `index`, which the student sees as `inputs`."""
        ...


@dataclass(frozen=True)
class Distillation:
    """Knowledge distillation: the loss is (1 - weight) x cross-entropy on the labels + weight x
    temperature^2 x KL(teachers' probabilities || the student's), both at `temperature` (Hinton et al.
    2015; the temperature^2 keeps the soft term's gradients on the scale of the hard one's)."""

    targets: SoftTargets
    weight: float
    temperature: float


def distillation_loss(logits: torch.Tensor, teacher_probabilities: torch.Tensor, temperature: float) -> torch.Tensor:
    """temperature^2 x KL(teacher || student), the student's probabilities softened by `temperature`, batch mean."""
    log_student = F.log_softmax(logits / temperature, dim=1)
    return temperature**2 * F.kl_div(log_student, teacher_probabilities, reduction="batchmean")


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

    def get(self, index: torch.Tensor, flip: bool = False, augment: Augment = NO_AUGMENT) -> torch.Tensor:
        """The inputs at `index`: as stored, or randomly mirrored (`flip`) and augmented (images only)."""
        if self.features:
            if augment.geometric or augment.erase:
                raise FerbenchError(
                    "params.yaml: augment (shift/rotate/scale/erase) needs images, but this run "
                    "trains on cached features; only flip applies there"
                )
            if flip and self.inputs.shape[0] > 1:
                view = torch.randint(0, self.inputs.shape[0], (len(index),), device=index.device)
                return self.inputs[view, index]
            return self.inputs[0, index]
        return augment_images(self.inputs[index], flip, augment)


@dataclass
class FitResult:
    best_epoch: int
    best_val_accuracy: float
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    train_images_per_second: float = 0.0
    identical_across_ranks: bool = True  # data-parallel runs: every rank ended with the same weights


def _optimizer(parameters: Any, recipe: Recipe) -> torch.optim.Optimizer:
    if recipe.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=recipe.lr, weight_decay=recipe.weight_decay)
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(parameters, lr=recipe.lr, weight_decay=recipe.weight_decay)
    return torch.optim.SGD(parameters, lr=recipe.lr, momentum=0.9, weight_decay=recipe.weight_decay, nesterov=True)


WARMUP_START = 0.01  # warm-up starts at this share of the learning rate


def _scheduler(optimizer: torch.optim.Optimizer, recipe: Recipe, steps_per_epoch: int) -> Any:
    """Torch's schedulers, stepped after every batch, except `plateau`, which `fit` steps with the val loss
    after every epoch. A linear warm-up from WARMUP_START of the rate over `warmup_epochs` (LinearLR), then
    constant (none), half a cosine down to 0 (cosine) or x0.1 after each third of the epochs (step; a third
    that ends within the warm-up is not applied), the two chained by SequentialLR; one-cycle rises over
    `warmup_epochs` itself."""
    schedulers = torch.optim.lr_scheduler
    if recipe.scheduler == "plateau":
        return schedulers.ReduceLROnPlateau(
            optimizer, mode="min", factor=recipe.plateau_factor, patience=recipe.plateau_patience
        )
    total = recipe.epochs * steps_per_epoch
    if recipe.scheduler == "onecycle":
        rising = recipe.warmup_epochs / recipe.epochs if recipe.warmup_epochs else 0.3
        return schedulers.OneCycleLR(optimizer, max_lr=recipe.lr, pct_start=rising, total_steps=total)
    warmup = round(recipe.warmup_epochs * steps_per_epoch)
    phases: list[Any] = []
    if warmup:
        phases.append(schedulers.LinearLR(optimizer, start_factor=WARMUP_START, end_factor=1.0, total_iters=warmup))
    if recipe.scheduler == "cosine":
        phases.append(schedulers.CosineAnnealingLR(optimizer, T_max=max(1, total - warmup)))
    elif recipe.scheduler == "step":  # counted from the first step, so the milestones move by the warm-up
        third = steps_per_epoch * max(1, recipe.epochs // 3)
        milestones = [step - warmup for step in range(third, total, third) if step > warmup]
        phases.append(schedulers.MultiStepLR(optimizer, milestones=milestones, gamma=0.1))
    if len(phases) < 2:
        return phases[0] if phases else None
    return schedulers.SequentialLR(optimizer, phases, milestones=[warmup])


def ramped_ema(decay: float) -> Callable[[list[torch.Tensor], list[torch.Tensor], torch.Tensor], None]:
    """The update `AveragedModel` applies after its first (a copy): the average moves towards the live
    weights by 1 - d, with d = min(decay, (1 + t) / (10 + t)) at update t, so that it is not dominated by
    the random initialisation early on; integer buffers (BatchNorm's batch count) are copied.

    Torch's own `get_ema_multi_avg_fn` keeps d = decay from the first update (at 0.999, after one
    368-step epoch of FER-2013 the average is still 69% the initial weights, and the first epochs'
    evaluations judge a near-random model) and averages integer buffers arithmetically."""

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], updates: torch.Tensor) -> None:
        if not averaged[0].is_floating_point():
            torch._foreach_copy_(averaged, current)
            return
        steps = updates.double()  # on the weights' device: no host synchronisation
        weight = (1 - torch.clamp((1 + steps) / (10 + steps), max=decay)).to(averaged[0].dtype)
        torch._foreach_lerp_(averaged, current, weight)

    return update


def weight_average(model: nn.Module, decay: float) -> AveragedModel:
    """An exponential moving average of `model`'s weights and buffers (BatchNorm statistics too), starting
    from its current weights; `.module` is an ordinary copy of the model, evaluated and checkpointed."""
    average = AveragedModel(unwrap(model), multi_avg_fn=ramped_ema(decay), use_buffers=True)
    average.update_parameters(unwrap(model))  # the first update copies
    for parameter in average.parameters():
        parameter.requires_grad_(False)
    average.module.eval()
    return average


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


def inference_autocast(device: torch.device) -> Any:
    """Evaluation and embedding: bf16 on CUDA, exact fp32 on the CPU (the numbers match the exported model's)."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")


def training_autocast(device: torch.device, bf16: bool) -> Any:
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)


@torch.no_grad()
def predict_logits(model: nn.Module, data: Batches, batch_size: int) -> torch.Tensor:
    """Logits for a whole split, in order, without augmentation."""
    model.eval()
    device = data.labels.device
    outputs = []
    for index in torch.arange(len(data), device=device).split(batch_size):
        with inference_autocast(device):
            outputs.append(model(data.get(index)).float())
    return torch.cat(outputs) if outputs else torch.zeros(0)


def evaluate(model: nn.Module, data: Batches, batch_size: int) -> dict[str, float]:
    logits = predict_logits(model, data, batch_size)
    return {
        "loss": float(F.cross_entropy(logits, data.labels).item()),
        "accuracy": float((logits.argmax(1) == data.labels).float().mean().item()),
    }


@dataclass(frozen=True)
class TrainingData:
    """What a run learns from and is judged on, already on the training device."""

    train: Batches
    val: Batches
    num_classes: int
    distillation: Distillation | None = None  # teachers' soft labels for the train images, when distilling


@dataclass(frozen=True)
class Checkpointing:
    """Where a run keeps its best-on-val weights (with `metadata` beside them) and, with `resume`, its
    full state after every epoch."""

    path: Path
    metadata: Mapping[str, Any] = field(default_factory=dict)
    resume: ResumeFile | None = None


@dataclass(frozen=True)
class Parallel:
    """This process's share of a data-parallel run (`ferbench.training.distributed`); one process by default."""

    group: Group = SINGLE
    seed: int = 0  # every rank draws the same epoch order from it
    sync_batchnorm: bool = True


class TrainingState:
    """Everything a run changes as it trains: the weights (and their moving average), the optimizer, the
    learning-rate schedule, the best-on-val weights and the history. One `epoch` at a time; its
    `snapshot` is what a resume file holds, `restore` takes one back."""

    def __init__(self, model: nn.Module, data: TrainingData, recipe: Recipe, parallel: Parallel) -> None:
        self.model, self.data, self.recipe, self.parallel = model, data, recipe, parallel
        self.device = data.train.labels.device
        self.bf16 = mixed_precision(recipe.precision, self.device)
        self.optimizer = _optimizer([p for p in model.parameters() if p.requires_grad], recipe)
        self.steps_per_epoch = math.ceil(len(data.train) / recipe.batch_size)
        self.scheduler = _scheduler(self.optimizer, recipe, self.steps_per_epoch)
        self.per_batch = self.scheduler is not None and recipe.scheduler != "plateau"
        self.average = weight_average(model, recipe.ema_decay) if recipe.ema_decay else None
        self.evaluated = self.average.module if self.average is not None else model
        self.class_weights = class_weights(data.train.labels, data.num_classes, recipe.class_weighting)
        self.result = FitResult(best_epoch=-1, best_val_accuracy=-math.inf)
        self.best_state: dict[str, torch.Tensor] | None = None
        self.epochs_done = 0
        self.train_seconds = 0.0  # in the training steps of the epochs run here (not evaluation)
        self._current: dict[str, torch.Tensor] | None = None  # the evaluated weights after the last epoch
        self.trained = model  # wrapped for data parallelism by `start`

    def start(self) -> None:
        """Wrap the model for data parallelism (after any restore: DDP broadcasts rank 0's weights)."""
        self.trained = wrap(self.model, self.parallel.group, self.parallel.sync_batchnorm)

    def _epoch_order(self, epoch: int) -> torch.Tensor:
        train, recipe, group = self.data.train, self.recipe, self.parallel.group
        if group.enabled:
            balance = balanced_weights(train.labels, self.data.num_classes) if recipe.sampler == "balanced" else None
            return epoch_order(len(train), self.parallel.seed, epoch, self.device, balance)
        if recipe.sampler == "balanced":
            return balanced_sample(train.labels, self.data.num_classes)
        return torch.randperm(len(train), device=self.device)

    def _loss(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        partner: torch.Tensor | None,
        share: float,
        soft: torch.Tensor | None,
    ) -> torch.Tensor:
        """Cross-entropy on the labels (mixed with the partners' by `share`), and with `soft` (the teachers'
        probabilities for the batch) the distillation term weighted in."""
        recipe = self.recipe
        loss = F.cross_entropy(logits, labels, weight=self.class_weights, label_smoothing=recipe.label_smoothing)
        if partner is not None:
            loss = share * loss + (1 - share) * F.cross_entropy(
                logits, labels[partner], weight=self.class_weights, label_smoothing=recipe.label_smoothing
            )
        distillation = self.data.distillation
        if distillation is None or distillation.weight == 0 or soft is None:
            return loss
        return (1 - distillation.weight) * loss + distillation.weight * distillation_loss(
            logits, soft, distillation.temperature
        )

    def _soft_targets(
        self, index: torch.Tensor, inputs: torch.Tensor, partner: torch.Tensor | None, share: float
    ) -> torch.Tensor | None:
        """The teachers' probabilities for a batch: looked up and mixed like the labels, or computed from the
        (mixed) images themselves."""
        distillation = self.data.distillation
        if distillation is None or distillation.weight == 0:
            return None
        soft = distillation.targets(index, inputs)
        if partner is None or distillation.targets.sees_images:
            return soft
        return share * soft + (1 - share) * soft[partner]

    def epoch(self, epoch: int, progress: StepClock | tqdm) -> dict[str, float]:
        """Train one epoch (`epoch` counts from 0), evaluate on val, keep the history row it returns."""
        train, recipe, group = self.data.train, self.recipe, self.parallel.group
        self.model.train()
        start = time.perf_counter()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device)
        seen = 0
        for batch in global_batches(self._epoch_order(epoch), recipe.batch_size, group):
            index = rank_share(batch, group)
            seen += len(batch)
            inputs = train.get(index, flip=recipe.flip, augment=recipe.augment)
            labels = train.labels[index]
            partner, share = None, 1.0
            if recipe.augment.mixing:
                inputs, partner, share = mix_batch(inputs.float(), recipe.augment)
            soft = self._soft_targets(index, inputs, partner, share)
            with training_autocast(self.device, self.bf16):
                logits = self.trained(inputs).float()
            loss = self._loss(logits, labels, partner, share, soft)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            if self.per_batch:
                self.scheduler.step()
            if self.average is not None:
                self.average.update_parameters(unwrap(self.model))
            loss_sum += loss.detach() * len(index)
            correct += (logits.argmax(1) == labels).sum()
            progress.update()
        if self.device.type == "cuda":  # CUDA queues the steps: the clock stops when they are done, not queued
            torch.cuda.synchronize(self.device)
        self.train_seconds += time.perf_counter() - start
        loss_sum, correct = all_sum(loss_sum, group), all_sum(correct, group)
        for module in (self.model, self.evaluated):
            sync_buffers(module, group)
        val_metrics = evaluate(self.evaluated, self.data.val, recipe.eval_batch_size)
        if self.scheduler is not None and not self.per_batch:
            self.scheduler.step(val_metrics["loss"])
        row = {
            "epoch": epoch + 1,
            "train_loss": float(loss_sum.item() / seen),
            "train_accuracy": float(correct.item() / seen),
            "val_loss": val_metrics["loss"],
            "val_accuracy": val_metrics["accuracy"],
            "lr": float(self.optimizer.param_groups[0]["lr"]),
        }
        self.result.history.append(row)
        self.epochs_done = epoch + 1
        return row

    def keep_if_best(self, row: Mapping[str, float], checkpointing: Checkpointing) -> None:
        """After an epoch: the weights become the best when val accuracy rose (rank 0 writes them)."""
        improved = row["val_accuracy"] > self.result.best_val_accuracy
        current = model_state(self.evaluated) if improved or checkpointing.resume is not None else None
        if improved:
            self.result.best_epoch, self.result.best_val_accuracy = int(row["epoch"]), row["val_accuracy"]
            if self.parallel.group.is_main:
                save_state(checkpointing.path, current, epoch=int(row["epoch"]), **checkpointing.metadata)
            self.best_state = current
        self._current = current

    def snapshot(self) -> dict[str, Any]:
        """The full state after the last epoch, for a resume file."""
        return {
            "epoch": self.epochs_done,
            "model": model_state(self.model) if self.average is not None else self._current,
            "average": self.average.state_dict() if self.average is not None else None,
            "best_state": self.best_state,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "best_epoch": self.result.best_epoch,
            "best_val_accuracy": self.result.best_val_accuracy,
            "history": self.result.history,
            "cpu_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        """Continue from a snapshot: weights, optimizer, schedule, average, history and random state."""
        unwrap(self.model).load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.average is not None and state.get("average") is not None:
            self.average.load_state_dict(state["average"])
        self.result.best_epoch, self.result.best_val_accuracy = state["best_epoch"], state["best_val_accuracy"]
        self.result.history = list(state["history"])
        torch.set_rng_state(state["cpu_rng"])
        if self.device.type == "cuda" and state["cuda_rng"]:
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.epochs_done = int(state["epoch"])
        self.best_state = state["best_state"]


def fit(
    model: nn.Module,
    data: TrainingData,
    recipe: Recipe,
    checkpointing: Checkpointing,
    parallel: Parallel = Parallel(),
    log_epoch: Callable[[dict[str, float]], None] | None = None,
    description: str = "train",
) -> FitResult:
    """Train for `recipe.epochs`, keep the best-on-val weights in `checkpointing.path`.

    With `recipe.ema_decay`, the moving average of the weights is what is evaluated each epoch and
    checkpointed. With `checkpointing.resume`, the full training state is saved after every epoch but the
    last, and a run that finds a matching unfinished state (same fingerprint) continues from it instead of
    starting over; the earlier epochs' rows are replayed through `log_epoch` so curves stay complete. A
    finished run removes its state (weights, optimizer and best weights: 340 MB for a resnet34).
    `recipe.precision` decides on bf16 autocast for the training steps (`mixed_precision`).

    With a data-parallel `parallel.group` (`ferbench.training.distributed`), `recipe.batch_size` is the
    global batch: every rank draws the same epoch order (from `parallel.seed` and the epoch), trains on its
    share of each batch under DistributedDataParallel and evaluates the same val; rank 0 alone writes the
    checkpoint, the resume state and the curves, and its resume state is what every rank resumes from.
    """
    group, resume = parallel.group, checkpointing.resume
    state = TrainingState(model, data, recipe, parallel)
    saved = resume.load(recipe.epochs) if resume is not None and group.is_main else None
    saved = broadcast(saved, group)
    if saved is not None:
        state.restore(saved)
        if group.is_main:
            print(f"{description}: resuming after epoch {state.epochs_done} of {recipe.epochs} ({resume.path})")
            save_state(checkpointing.path, state.best_state, epoch=state.result.best_epoch, **checkpointing.metadata)
        for row in state.result.history:
            if log_epoch is not None:
                log_epoch(row)
    first_epoch = state.epochs_done
    state.start()
    start = time.perf_counter()
    with tqdm(
        total=recipe.epochs * state.steps_per_epoch,
        initial=first_epoch * state.steps_per_epoch,
        desc=description,
        unit="batch",
        mininterval=2.0,
        disable=not group.is_main,
    ) as progress:
        steps_left = (recipe.epochs - first_epoch) * state.steps_per_epoch
        clock = StepClock(progress, steps_left, state.device, description) if group.is_main else progress
        for epoch in range(first_epoch, recipe.epochs):
            row = state.epoch(epoch, clock)
            if log_epoch is not None:
                log_epoch(row)
            state.keep_if_best(row, checkpointing)
            if resume is not None and group.is_main and epoch + 1 < recipe.epochs:
                resume.save(state.snapshot())
            progress.set_postfix(epoch=epoch + 1, val_acc=f"{row['val_accuracy']:.3f}")
    if resume is not None and group.is_main:
        resume.path.unlink(missing_ok=True)  # a finished run's state is never resumed (`ResumeFile.load`)
    result = state.result
    result.seconds = time.perf_counter() - start
    result.identical_across_ranks = identical_across_ranks(state.evaluated, group)
    epochs_run = recipe.epochs - first_epoch
    result.train_images_per_second = (
        epochs_run * len(data.train) / max(state.train_seconds, 1e-9) if epochs_run else 0.0
    )
    return result


RESUME_FORMAT = 2  # 2: torch's schedulers and AveragedModel in the state


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
        if state.get("format") != RESUME_FORMAT:  # written by a version that kept its state otherwise
            return None
        if state.get("fingerprint") != self.fingerprint or not 0 < state.get("epoch", 0) < epochs:
            return None
        return state

    def save(self, snapshot: Mapping[str, Any]) -> None:
        atomic_torch_save(self.path, {"format": RESUME_FORMAT, "fingerprint": self.fingerprint, **snapshot})


class StepClock:
    """The progress bar's step counter that, on the CPU, also warns once when the whole run would take long:
    the run's own first steps are timed (the first, which allocates, left out), so the estimate costs no
    training step of its own."""

    TIMED_STEPS = 2

    def __init__(self, progress: tqdm, steps_left: int, device: torch.device, what: str) -> None:
        self.progress, self.steps_left, self.device, self.what = progress, steps_left, device, what
        self._steps = 0
        self._since: float | None = None

    def update(self) -> None:
        self.progress.update()
        self._steps += 1
        if self.device.type != "cpu" or self._steps > 1 + self.TIMED_STEPS:
            return
        now = time.perf_counter()
        if self._steps == 1:
            self._since = now
        elif self._steps == 1 + self.TIMED_STEPS:
            per_step = (now - self._since) / self.TIMED_STEPS
            warn_if_slow(per_step * self.steps_left * 1.15, self.device, self.what)  # + evaluation


def warn_if_slow(seconds: float, device: torch.device, what: str) -> None:
    """On CPU, say up front when a run would take long, and where the quick settings are."""
    if device.type == "cpu" and seconds > CPU_WARNING_SECONDS:
        print(
            f"warning: {what} would take about {seconds / 3600:.1f} h on this CPU. For a quick run use the demo "
            "settings (`make demo`, params-demo.yaml: small backbones at a low input_size, fewer epochs), "
            "or run on a CUDA GPU (device: auto picks it)."
        )
