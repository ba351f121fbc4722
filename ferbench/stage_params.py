"""Params shared by the model stages: the device, the class list, a backbone's spec and TTA."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ferbench import params as P
from ferbench.distributed import DistributedConfig, start
from ferbench.errors import FerbenchError
from ferbench.models.backbones import BackboneSpec
from ferbench.models.classifier import TTAConfig
from ferbench.paths import PREPARED_DIR
from ferbench.run_settings import RunSettings, resolve_device


def backbone_spec(params: dict[str, Any], name: str) -> BackboneSpec:
    backbones = P.get(params, "backbones", dict)
    if name not in backbones:
        raise FerbenchError(f"params.yaml: no backbone '{name}' under 'backbones' (have: {', '.join(backbones)})")
    return BackboneSpec.from_params(name, backbones[name])


def backbone_overrides(params: dict[str, Any], name: str, stage: str) -> dict[str, Any]:
    """`backbones.<name>.<stage>`: per-backbone hyperparameters that replace the stage's."""
    overrides = P.get(params, "backbones", dict)[name].get(stage) or {}
    if not isinstance(overrides, dict):
        raise FerbenchError(f"params.yaml: 'backbones.{name}.{stage}' must be a mapping of overrides")
    if stage == "feature_extract" and "flip" in overrides:
        raise FerbenchError(
            f"params.yaml: 'backbones.{name}.feature_extract.flip' cannot be overridden per backbone "
            "(the embed stage computes mirrored features from feature_extract.flip)"
        )
    return overrides


def device(params: dict[str, Any]) -> torch.device:
    return resolve_device(str(P.get(params, "device", str)))


def tta_config(params: dict[str, Any]) -> TTAConfig:
    return TTAConfig.from_params(P.get(params, "tta", dict))


def run_settings(params: dict[str, Any], prepared_dir: Path = PREPARED_DIR) -> RunSettings:
    """The settings every training stage shares, read and checked once; in a data-parallel launch
    (`ferbench.launch`), this process joins its group here, on its own device."""
    distributed = distributed_config(params)
    group, target = start(device(params), distributed.timeout_s)
    return RunSettings(
        classes=list(P.get(params, "data.classes", list)),
        device=target,
        seed=P.get(params, "seed", int),
        prepared_dir=prepared_dir,
        compile_model=bool(P.get(params, "compile", bool)),
        tta=tta_config(params),
        group=group,
        distributed=distributed,
    )


def distributed_config(params: dict[str, Any]) -> DistributedConfig:
    return DistributedConfig.from_params(P.get(params, "distributed", dict))
