"""One entry point that builds any backbone from its `params.yaml` spec.

A spec names the library (`source`), the model (`model`), whether to load pretrained weights
(`pretrained`), optionally a local weights file or folder (`weights`), and optionally an input
size (`input_size`, default: the size the weights were trained at). Adding a model is a
params change: any torchvision classification model, any timm model, the CLIP vision tower
of transformers, and the FER-native networks of `ferbench.models.fernets` (trained from
scratch on 48x48 grayscale). Preprocessing constants come from each library's own config.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ferbench.errors import FerbenchError
from ferbench.specs import BackboneSpec


@dataclass
class Backbone:
    """A trunk mapping a normalised image batch (B x C x S x S) to features (B x feature_dim).

    C is the length of `mean`/`std`: 3 for ImageNet-style backbones, 1 for the FER-native ones.
    """

    trunk: nn.Module
    feature_dim: int
    input_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    convolutional: bool  # CNNs run faster channels_last


def _weights_error(spec: BackboneSpec, exc: Exception) -> FerbenchError:
    return FerbenchError(
        f"backbone '{spec.name}': cannot load {spec.source} weights for '{spec.model}' ({type(exc).__name__}: {exc}). "
        "Ways out: run once with network access so the library caches them (TORCH_HOME / HF_HOME), "
        f"set backbones.{spec.name}.weights to a local file or folder, or set pretrained: false"
    )


def _last_linear(model: nn.Module) -> tuple[str, nn.Linear]:
    linears = [(name, module) for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not linears:
        raise FerbenchError("torchvision model has no final linear layer to remove")
    return linears[-1]


def _replace_module(model: nn.Module, dotted: str, replacement: nn.Module) -> None:
    parent_name, _, child = dotted.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, replacement)


def _load_state_dict(path: Path, spec: BackboneSpec) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FerbenchError(f"backbone '{spec.name}': weights file {path} not found (backbones.{spec.name}.weights)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise _weights_error(spec, exc) from exc


def _output_width(model: nn.Module, input_size: int) -> int:
    """Feature width by one forward pass: timm models differ in where their pooled features come from."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        width = int(model(torch.zeros(1, 3, input_size, input_size)).shape[-1])
    model.train(was_training)
    return width


def _torchvision(spec: BackboneSpec) -> Backbone:
    import torchvision

    try:
        weights_enum = torchvision.models.get_model_weights(spec.model).DEFAULT
    except (ValueError, KeyError) as exc:
        raise FerbenchError(f"backbone '{spec.name}': torchvision has no model '{spec.model}'") from exc
    download = spec.pretrained and spec.weights is None
    kwargs = {"image_size": spec.input_size} if spec.input_size and spec.model.startswith("vit_") else {}
    try:
        model = torchvision.models.get_model(spec.model, weights=weights_enum if download else None, **kwargs)
    except Exception as exc:
        raise _weights_error(spec, exc) from exc
    if spec.pretrained and spec.weights is not None:
        model.load_state_dict(_load_state_dict(Path(spec.weights), spec))
    head_name, head = _last_linear(model)
    _replace_module(model, head_name, nn.Identity())
    preset = weights_enum.transforms()
    return Backbone(
        trunk=model,
        feature_dim=head.in_features,
        input_size=spec.input_size or int(preset.crop_size[0]),
        mean=tuple(preset.mean),
        std=tuple(preset.std),
        convolutional=not spec.model.startswith(("vit_", "swin_", "maxvit")),
    )


def _timm(spec: BackboneSpec) -> Backbone:
    import timm

    overlay = {"file": str(spec.weights)} if spec.pretrained and spec.weights is not None else None
    if overlay and not Path(spec.weights).is_file():
        raise FerbenchError(
            f"backbone '{spec.name}': weights file {spec.weights} not found (backbones.{spec.name}.weights)"
        )
    kwargs = {"img_size": spec.input_size} if spec.input_size and "vit" in spec.model else {}
    try:
        model = timm.create_model(
            spec.model, pretrained=spec.pretrained, num_classes=0, pretrained_cfg_overlay=overlay, **kwargs
        )
    except RuntimeError as exc:
        if "Unknown model" in str(exc):
            raise FerbenchError(f"backbone '{spec.name}': timm has no model '{spec.model}'") from exc
        raise _weights_error(spec, exc) from exc
    except Exception as exc:
        raise _weights_error(spec, exc) from exc
    config = timm.data.resolve_data_config({}, model=model)
    input_size = spec.input_size or int(config["input_size"][-1])
    return Backbone(
        trunk=model,
        feature_dim=_output_width(model, input_size),
        input_size=input_size,
        mean=tuple(config["mean"]),
        std=tuple(config["std"]),
        convolutional=not any(tag in spec.model for tag in ("vit", "deit", "swin", "eva", "beit")),
    )


class _PooledVisionTower(nn.Module):
    """Wraps a transformers vision model so that it returns its pooled features as a tensor."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).pooler_output


def _transformers(spec: BackboneSpec) -> Backbone:
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel
    from transformers.utils import logging as hf_logging

    source = spec.weights or spec.model
    if spec.pretrained:
        try:
            with contextlib.ExitStack() as stack:
                stack.callback(hf_logging.set_verbosity, hf_logging.get_verbosity())  # the caller's, restored
                hf_logging.set_verbosity_error()
                model = CLIPVisionModel.from_pretrained(source)
                processor = CLIPImageProcessor.from_pretrained(source)
        except Exception as exc:
            raise _weights_error(spec, exc) from exc
    else:
        # Random weights with the architecture of openai/clip-vit-base-patch32 (transformers' defaults).
        model = CLIPVisionModel(CLIPVisionConfig())
        processor = CLIPImageProcessor()
    native = int(model.config.image_size)
    return Backbone(
        trunk=_PooledVisionTower(model),
        feature_dim=int(model.config.hidden_size),
        input_size=spec.input_size or native,
        mean=tuple(processor.image_mean),
        std=tuple(processor.image_std),
        convolutional=False,
    )


def _ferbench(spec: BackboneSpec) -> Backbone:
    from ferbench.models import fernets

    network = fernets.build_fer_network(spec.model, spec.name, spec.pretrained, spec.weights)
    return Backbone(
        trunk=network,
        feature_dim=network.feature_dim,
        input_size=spec.input_size or fernets.NATIVE_SIZE,
        mean=fernets.MEAN,
        std=fernets.STD,
        convolutional=True,
    )


_BUILDERS = {"torchvision": _torchvision, "timm": _timm, "transformers": _transformers, "ferbench": _ferbench}


def build_backbone(spec: BackboneSpec) -> Backbone:
    """Build the trunk and its preprocessing constants for `spec`."""
    return _BUILDERS[spec.source](spec)
