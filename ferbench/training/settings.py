"""What a training stage runs with, built once from the typed params (`ferbench.schema.Params`): what every
run of the stage shares (`RunSettings`), the backbone spec, the TTA views and the device. A run's own
hyperparameters are a `ferbench.schema.Recipe` (`Params.finetune_for` and the like); nothing here checks
again what the schema checked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ferbench.data.prepared import leakage_free_test_mask
from ferbench.errors import FerbenchError
from ferbench.paths import PREPARED_DIR
from ferbench.schema import Distributed, Params, Recipe
from ferbench.specs import SPEC_KEYS, BackboneSpec, TTAConfig
from ferbench.training.distributed import SINGLE, Group


def resolve_device(name: str) -> torch.device:
    """`auto`: CUDA when present, else CPU; or any torch device string."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise FerbenchError(f"params.yaml: device is {name!r} but CUDA is not available; use device: auto or cpu")
    return torch.device(name)


def tune_for(device: torch.device) -> None:
    """On CUDA, let cuDNN time its convolution algorithms once and keep the fastest for each shape: a run's
    shapes are fixed (one input size, one batch size), so this pays after the first batches. A process-wide
    switch, so the stages that train or embed call it by name; nothing changes elsewhere."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def backbone_spec(params: Params, name: str) -> BackboneSpec:
    """`backbones.<name>` as the models' spec."""
    return BackboneSpec(name=name, **params.backbone(name).model_dump(include=set(SPEC_KEYS)))


def scaled_recipe(recipe: Recipe, distributed: Distributed | None, world_size: int) -> Recipe:
    """The run's recipe with `batch_size` as the global batch and the learning rate of the scaling
    rule: with `batch: global` nothing changes (the same global batch, the same rate); with
    `per_process`, the global batch is world size x batch_size and `lr_scaling` applies."""
    if world_size <= 1 or distributed is None or distributed.batch == "global":
        return recipe
    factor = {"none": 1.0, "linear": float(world_size), "sqrt": math.sqrt(world_size)}[distributed.lr_scaling]
    return recipe.model_copy(update={"batch_size": recipe.batch_size * world_size, "lr": recipe.lr * factor})


@dataclass(frozen=True)
class RunSettings:
    """What every benchmarked run of a stage shares: the top-level params, where the prepared data is, and
    this process's place among the data-parallel processes."""

    classes: list[str]
    device: torch.device
    seed: int
    prepared_dir: Path
    compile_model: bool
    tta: TTAConfig
    group: Group = SINGLE  # rank 0 of 1 unless the stage joined a process group (`distributed.join_group`)
    distributed: Distributed | None = None  # the `distributed` params; None: one process

    @classmethod
    def from_params(
        cls, params: Params, device: torch.device, group: Group = SINGLE, prepared_dir: Path = PREPARED_DIR
    ) -> RunSettings:
        """The settings of a stage running on `device` as `group` (what `distributed.join_group` returned)."""
        return cls(
            classes=list(params.data.classes),
            device=device,
            seed=params.seed,
            prepared_dir=prepared_dir,
            compile_model=params.compile,
            tta=params.tta,
            group=group,
            distributed=params.distributed,
        )

    def leakage_free(self, test_count: int) -> np.ndarray:
        return leakage_free_test_mask(self.prepared_dir, test_count)
