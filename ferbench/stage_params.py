"""Params shared by the model stages: the device, the class list and a backbone's spec."""

from __future__ import annotations

from typing import Any

import torch

from ferbench import params as P
from ferbench.engine import resolve_device
from ferbench.errors import FerbenchError
from ferbench.models.backbones import BackboneSpec


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
