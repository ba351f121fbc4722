"""FER-native networks: VGG-style CNNs built for 48x48 grayscale faces and trained from scratch.

They are backbones like any other (`source: ferbench` in `params.yaml: backbones`), so every
stage, the export, the latency measurement and the app treat them the same way. Their
input is one channel at the image's own 48 px; adding a network is one line in `NETWORKS`.

- `vgg8_w32`: 4 stages of 2 convolutions (32-64-128-256 channels), BatchNorm, max-pool, global
  average pool. 1.2 M parameters, 0.12 GMAC at 48 px; for a CPU (about a minute per FER-2013
  epoch on 2 cores with bf16).
- `vgg11_w64`: 4 stages of 2/2/3/3 convolutions (64-128-256-512), BatchNorm, max-pool, then a
  fully connected layer of 1024. 12.4 M parameters, 0.64 GMAC; for a GPU: the kind of network
  behind the best published single-model FER-2013 results.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ferbench.errors import FerbenchError

NATIVE_SIZE = 48
# FER-2013's pixel statistics (mean 0.508, std 0.255 over the train folder), rounded.
MEAN = (0.5,)
STD = (0.25,)


class ConvUnit(nn.Module):
    """3x3 convolution, BatchNorm, ReLU: the repeated block (what `train.trainable: N` counts)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.norm = nn.BatchNorm2d(out_channels)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


class FerVGG(nn.Module):
    """Stages of ConvUnits, each ending in a 2x2 max-pool; then global average pooling (`fc_width`
    None) or a 3x3 average pool, flatten and a fully connected layer (the classic FER VGG head)."""

    def __init__(
        self, widths: Sequence[int], convs: Sequence[int], fc_width: int | None = None, dropout: float = 0.0
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 1
        for width, count in zip(widths, convs, strict=True):
            for _ in range(count):
                layers.append(ConvUnit(channels, width))
                channels = width
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        if fc_width is None:
            self.pool: nn.Module = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
            self.feature_dim = channels
        else:
            self.pool = nn.Sequential(
                nn.AdaptiveAvgPool2d(3),
                nn.Flatten(),
                nn.Dropout(dropout),
                nn.Linear(channels * 9, fc_width),
                nn.BatchNorm1d(fc_width),
                nn.ReLU(inplace=True),
            )
            self.feature_dim = fc_width
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.features(x))


@dataclass(frozen=True)
class Architecture:
    widths: tuple[int, ...]
    convs: tuple[int, ...]
    fc_width: int | None = None
    dropout: float = 0.0

    def build(self) -> FerVGG:
        return FerVGG(self.widths, self.convs, self.fc_width, self.dropout)


NETWORKS: dict[str, Architecture] = {
    "vgg8_w32": Architecture((32, 64, 128, 256), (2, 2, 2, 2)),
    "vgg11_w64": Architecture((64, 128, 256, 512), (2, 2, 3, 3), fc_width=1024, dropout=0.3),
}


def build_fer_network(name: str, backbone_name: str, pretrained: bool, weights: str | None) -> FerVGG:
    """The network `name`, randomly initialised, or with the trunk weights of a local file.

    There are no published weights to download: `pretrained: true` needs `weights`, a state
    dict of this trunk (e.g. saved from an earlier run with `torch.save(model.trunk.state_dict())`).
    """
    if name not in NETWORKS:
        raise FerbenchError(
            f"backbone '{backbone_name}': ferbench has no network '{name}' (have: {', '.join(NETWORKS)})"
        )
    network = NETWORKS[name].build()
    if not pretrained:
        return network
    if weights is None:
        raise FerbenchError(
            f"backbone '{backbone_name}': ferbench networks have no published weights; set "
            f"backbones.{backbone_name}.pretrained: false (train from scratch) or weights: a local state-dict file"
        )
    path = Path(weights)
    if not path.is_file():
        raise FerbenchError(
            f"backbone '{backbone_name}': weights file {path} not found (backbones.{backbone_name}.weights)"
        )
    try:
        network.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except Exception as exc:
        raise FerbenchError(
            f"backbone '{backbone_name}': {path} is not a state dict of ferbench's '{name}' ({type(exc).__name__}); "
            f"fix backbones.{backbone_name}.weights or set pretrained: false"
        ) from exc
    return network
