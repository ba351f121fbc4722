"""The checkpoint format: a state dict plus JSON-able metadata, loadable with weights_only=True."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ferbench.errors import FerbenchError


def unwrap(model: nn.Module) -> nn.Module:
    """The module itself under DistributedDataParallel and torch.compile wrappers, so checkpoint keys
    never carry `module.` or `_orig_mod.`."""
    if isinstance(model, nn.parallel.DistributedDataParallel):
        model = model.module
    return getattr(model, "_orig_mod", model)


def model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the model's weights on the CPU (plain keys, also under torch.compile)."""
    return {name: tensor.detach().cpu().clone() for name, tensor in unwrap(model).state_dict().items()}


def save_checkpoint(path: Path, model: nn.Module, **metadata: Any) -> None:
    """Write a model's weights (on the CPU) and metadata; see `save_state`."""
    save_state(path, model_state(model), **metadata)


def save_state(path: Path, state: dict[str, torch.Tensor], **metadata: Any) -> None:
    """Write atomically (temp file, then rename) so an interrupted save never leaves a torn file."""
    atomic_torch_save(path, {"state_dict": state, "metadata": metadata})


def atomic_torch_save(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(path.suffix + ".partial")
    torch.save(payload, partial)
    partial.replace(path)


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Return (state_dict, metadata) of a checkpoint written by `save_checkpoint`."""
    if not path.is_file():
        raise FerbenchError(f"{path}: checkpoint not found; run the stage that writes it (dvc repro)")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or "state_dict" not in payload:
        raise FerbenchError(f"{path}: not a ferbench checkpoint")
    return payload["state_dict"], payload.get("metadata", {})
