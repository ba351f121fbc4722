"""Heads on top of backbone features, and the whole image classifier built from the pieces."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ferbench.models.backbones import Backbone
from ferbench.models.preprocess import Preprocess


class Standardize(nn.Module):
    """Fixed per-feature standardisation with train-set statistics: frozen features vary wildly in
    scale between backbones, and a linear head learns far faster on standardised inputs."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean.detach().clone().float())
        self.register_buffer("std", std.detach().clone().float().clamp(min=1e-6))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return (features - self.mean) / self.std


def build_head(in_features: int, num_classes: int, hidden: Sequence[int] = (), dropout: float = 0.0) -> nn.Module:
    """Linear by default; `hidden` adds Linear-ReLU layers, `dropout` goes before each Linear."""
    layers: list[nn.Module] = []
    width = in_features
    for size in hidden:
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers += [nn.Linear(width, int(size)), nn.ReLU(inplace=True)]
        width = int(size)
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


def backbone_preprocess(backbone: Backbone) -> Preprocess:
    """The preprocessing a backbone expects: its input size, mean/std, and NHWC for CNNs."""
    return Preprocess(backbone.input_size, backbone.mean, backbone.std, channels_last=backbone.convolutional)


class ImageClassifier(nn.Module):
    """uint8 48x48 batch -> logits: preprocessing, trunk and head in one module (one export)."""

    def __init__(self, backbone: Backbone, head: nn.Module) -> None:
        super().__init__()
        self.preprocess = backbone_preprocess(backbone)
        self.trunk = backbone.trunk
        self.head = head
        if backbone.convolutional:
            self.trunk.to(memory_format=torch.channels_last)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(self.preprocess(images)))


def frozen_extractor(backbone: Backbone) -> nn.Sequential:
    """uint8 batch -> features through the frozen trunk, in eval mode, without gradients."""
    module = nn.Sequential(backbone_preprocess(backbone), backbone.trunk).eval()
    if backbone.convolutional:
        module.to(memory_format=torch.channels_last)
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return module
