"""What a training run is configured with: the hyperparameters (`TrainConfig`, a stage's params
section with a backbone's overrides merged by `stage_settings`), what every run shares
(`RunSettings`) and the device. The engine and the benchmark runners build on this; the stages
read params into it without importing the training code.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ferbench.augment import AugmentConfig
from ferbench.data.prepared import leakage_free_test_mask
from ferbench.distributed import SINGLE, DistributedConfig, Group
from ferbench.errors import FerbenchError
from ferbench.models.classifier import TTAConfig
from ferbench.schema import CLASS_WEIGHTING, OPTIMIZERS, PRECISIONS, SAMPLERS, SCHEDULERS


@dataclass(frozen=True)
class TrainConfig:
    """The training hyperparameters (a stage's params section, per-backbone overrides merged)."""

    epochs: int
    batch_size: int
    lr: float
    optimizer: str = "adam"
    weight_decay: float = 0.0
    scheduler: str = "none"
    warmup_epochs: float = 0.0  # linear warm-up from lr/100 (none, cosine, step); onecycle's rising phase
    plateau_factor: float = 0.5  # plateau: multiply the lr by this ...
    plateau_patience: int = 2  # ... after this many epochs without a lower val loss
    label_smoothing: float = 0.0
    class_weighting: str = "none"
    sampler: str = "shuffle"  # shuffle: each image once per epoch; balanced: classes drawn equally often
    flip: bool = True
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    ema_decay: float = 0.0  # 0: off; else the weights' exponential moving average is the model
    precision: str = "auto"  # training steps: see mixed_precision
    eval_batch_size: int = 256

    def __post_init__(self) -> None:
        for name, allowed in (
            ("optimizer", OPTIMIZERS),
            ("scheduler", SCHEDULERS),
            ("class_weighting", CLASS_WEIGHTING),
            ("sampler", SAMPLERS),
        ):
            if getattr(self, name) not in allowed:
                raise FerbenchError(
                    f"params.yaml: '{name}' is {getattr(self, name)!r}; use one of: {', '.join(allowed)}"
                )
        for name in ("lr", "weight_decay", "warmup_epochs", "ema_decay", "label_smoothing", "plateau_factor"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise FerbenchError(f"params.yaml: '{name}' is {value!r}; use a number (write 1.0e-5, not 1e-5)")
        if self.lr <= 0:
            raise FerbenchError(f"params.yaml: 'lr' is {self.lr}; use a positive learning rate")
        if self.epochs < 1 or self.batch_size < 1 or self.eval_batch_size < 1:
            raise FerbenchError("params.yaml: epochs, batch_size and eval_batch_size must be at least 1")
        if not 0 <= self.warmup_epochs < self.epochs and self.warmup_epochs != 0:
            raise FerbenchError(f"params.yaml: warmup_epochs is {self.warmup_epochs}; use 0 up to fewer than epochs")
        if not 0 <= self.ema_decay < 1:
            raise FerbenchError(f"params.yaml: ema_decay is {self.ema_decay}; use 0 (off) or a decay below 1 (0.999)")
        if not 0 < self.plateau_factor < 1 or self.plateau_patience < 0:
            raise FerbenchError("params.yaml: plateau_factor must lie in (0, 1) and plateau_patience be >= 0")
        if not 0 <= self.label_smoothing < 1:
            raise FerbenchError(f"params.yaml: label_smoothing is {self.label_smoothing}; use a value in [0, 1)")
        if self.precision not in PRECISIONS:
            raise FerbenchError(f"params.yaml: 'precision' is {self.precision!r}; use one of: {', '.join(PRECISIONS)}")
        if not isinstance(self.augment, AugmentConfig):
            object.__setattr__(self, "augment", AugmentConfig.from_params(self.augment, "training section"))


def scaled_config(config: TrainConfig, distributed: DistributedConfig | None, world_size: int) -> TrainConfig:
    """The run's config with `batch_size` as the global batch and the learning rate of the scaling
    rule: with `batch: global` nothing changes (the same global batch, the same rate); with
    `per_process`, the global batch is world size x batch_size and `lr_scaling` applies."""
    if world_size <= 1 or distributed is None or distributed.batch == "global":
        return config
    factor = {"none": 1.0, "linear": float(world_size), "sqrt": math.sqrt(world_size)}[distributed.lr_scaling]
    return replace(config, batch_size=config.batch_size * world_size, lr=config.lr * factor)


def resolve_device(name: str) -> torch.device:
    """`auto`: CUDA when present, else CPU; or any torch device string."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise FerbenchError(f"params.yaml: device is {name!r} but CUDA is not available; use device: auto or cpu")
    return torch.device(name)


HEAD_KEYS = ("hidden", "dropout")  # head shape, feature_extract only (fine-tuning keeps the seed's linear head)
TRAIN_KEYS = ("trainable",)  # train@<candidate> only: which part of the network learns
TRAIN_SECTION_ONLY = ("candidates",)  # in the train section, not a hyperparameter


def stage_settings(
    section: Mapping[str, Any], overrides: Mapping[str, Any] | None, where: str, extra_keys: Sequence[str] = ()
) -> tuple[TrainConfig, dict[str, Any]]:
    """A stage's params section with a backbone's overrides merged: the TrainConfig and the extra keys set."""
    overrides = dict(overrides or {})
    if isinstance(section.get("augment"), Mapping) and isinstance(overrides.get("augment"), Mapping):
        overrides["augment"] = {**section["augment"], **overrides["augment"]}  # strengths merge one by one
    merged = {k: v for k, v in {**section, **overrides}.items() if k not in TRAIN_SECTION_ONLY}
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(merged) - known - set(extra_keys))
    if unknown:
        raise FerbenchError(
            f"params.yaml: unknown key(s) {', '.join(unknown)} in {where}; "
            f"known: {', '.join(sorted(known | set(extra_keys)))}"
        )
    settings = {k: v for k, v in merged.items() if k in known}
    settings["augment"] = AugmentConfig.from_params(settings.get("augment"), where)
    try:
        config = TrainConfig(**settings)
    except TypeError as exc:
        raise FerbenchError(f"params.yaml: {where}: {exc}") from exc
    return config, {k: merged[k] for k in extra_keys if k in merged}


@dataclass(frozen=True)
class RunSettings:
    """What every benchmarked run shares: the top-level params and where the prepared data is."""

    classes: list[str]
    device: torch.device
    seed: int
    prepared_dir: Path
    compile_model: bool = False
    tta: TTAConfig = field(default_factory=TTAConfig)
    group: Group = SINGLE  # this process's rank among the data-parallel processes (0 of 1 by default)
    distributed: DistributedConfig | None = None  # the `distributed` params; None: one process

    def leakage_free(self, test_count: int) -> np.ndarray:
        return leakage_free_test_mask(self.prepared_dir, test_count)
