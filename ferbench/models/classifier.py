"""Heads on top of backbone features, and the whole image classifier built from the pieces."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from ferbench.constants import IMAGE_SIZE
from ferbench.models.backbones import Backbone, build_backbone
from ferbench.models.checkpoint import load_checkpoint
from ferbench.models.preprocess import Preprocess
from ferbench.specs import BackboneSpec, TTAConfig


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
    """48x48 batch (uint8, or float 0..255) -> logits: preprocessing, trunk and head in one module (one export)."""

    def __init__(self, backbone: Backbone, head: nn.Module) -> None:
        super().__init__()
        self.preprocess = backbone_preprocess(backbone)
        self.trunk = backbone.trunk
        self.head = head
        self.frozen: list[nn.Module] = []  # set by set_trainable; kept in eval mode while training
        if backbone.convolutional:
            self.trunk.to(memory_format=torch.channels_last)

    def train(self, mode: bool = True) -> ImageClassifier:
        super().train(mode)
        for module in self.frozen:
            module.eval()
        return self

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


_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def trunk_blocks(trunk: nn.Module) -> list[str]:
    """Names of the trunk's repeated blocks, in order (ResNet BasicBlocks, ViT/CLIP encoder layers, ...).

    The block type is the non-container module class that occurs more than once and holds the
    most parameters in total; a plain stack of layers (VGG) falls back to its parameterised layers.
    """
    totals: dict[type, int] = {}
    counts: dict[type, int] = {}
    for module in trunk.modules():
        if module is trunk or isinstance(module, _CONTAINERS) or not any(True for _ in module.children()):
            continue
        counts[type(module)] = counts.get(type(module), 0) + 1
        totals[type(module)] = totals.get(type(module), 0) + sum(p.numel() for p in module.parameters())
    repeated = [kind for kind, count in counts.items() if count > 1 and totals[kind] > 0]
    if repeated:
        kind = max(repeated, key=lambda k: totals[k])
        return [name for name, module in trunk.named_modules() if type(module) is kind and name]
    return [
        name
        for name, module in trunk.named_modules()
        if name and not any(True for _ in module.children()) and any(True for _ in module.parameters(recurse=False))
    ]


def set_trainable(model: ImageClassifier, trainable: str | int) -> int:
    """Freeze everything but the chosen part; return the number of trainable parameters.

    Fully frozen submodules stay in eval mode during training (see ImageClassifier.train), so a
    frozen BatchNorm keeps its statistics and a frozen part really is the pretrained network.
    """
    names = [name for name, _ in model.trunk.named_parameters()]
    if trainable == "all":
        first = 0
    elif trainable == "head":
        first = len(names)
    else:
        blocks = trunk_blocks(model.trunk)
        start_block = blocks[max(0, len(blocks) - int(trainable))]
        first = next(i for i, name in enumerate(names) if name.startswith(start_block + "."))
    for index, (_, parameter) in enumerate(model.trunk.named_parameters()):
        parameter.requires_grad_(index >= first)
    for parameter in model.head.parameters():
        parameter.requires_grad_(True)
    model.frozen = [
        module
        for module in model.trunk.modules()
        if not any(p.requires_grad for p in module.parameters())
        and (any(True for _ in module.parameters()) or any(True for _ in module.buffers()))
    ]
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def load_classifier(
    spec: BackboneSpec, checkpoint: Path, num_classes: int, folder_only: bool = False
) -> ImageClassifier:
    """Rebuild a trained ImageClassifier (backbone + linear head) from its checkpoint, in eval mode.

    The architecture comes from the spec without fetching pretrained weights (the checkpoint holds
    all of them), except for transformers, whose architecture is read from the pretrained config.
    `folder_only` (serving an untrusted model folder): nothing but the checkpoint is read, never a
    file the spec names or the network, so a transformers backbone gets the default CLIP ViT-B/32 shape.
    """
    state, _ = load_checkpoint(checkpoint)
    if folder_only:
        spec = spec.model_copy(update={"pretrained": False, "weights": None})
    backbone = build_backbone(spec if spec.source == "transformers" else spec.model_copy(update={"pretrained": False}))
    model = ImageClassifier(backbone, build_head(backbone.feature_dim, num_classes))
    model.load_state_dict(state)
    return model.eval()


class TTAClassifier(nn.Module):
    """A classifier that averages its logits over the TTA views of each image; exports as one graph.

    All views of a batch go through the wrapped model in one call (batch x views).
    """

    def __init__(self, model: nn.Module, config: TTAConfig) -> None:
        super().__init__()
        self.model = model
        self.config = config

    @property
    def preprocess(self) -> nn.Module:
        return self.model.preprocess

    def views(self, images: torch.Tensor) -> torch.Tensor:
        """The views of a batch stacked view by view (views x batch images): the image, its mirror, its shifts."""
        x = images.float()
        views = [x]
        if self.config.flip:
            views.append(x.flip(-1))
        if self.config.shifts:
            pad = self.config.shift_pixels
            height, width = x.shape[-2:]
            padded = F.pad(x.unsqueeze(1), (pad, pad, pad, pad), mode="replicate").squeeze(1)
            for dy, dx in self.config.offsets:
                views.append(padded[:, pad + dy : pad + dy + height, pad + dx : pad + dx + width])
        return torch.cat(views)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.model(self.views(images))
        return logits.view(self.config.views, images.shape[0], -1).mean(0)


def with_tta(model: nn.Module, config: TTAConfig | None) -> nn.Module:
    """`model` wrapped for test-time augmentation, or `model` itself when `config` has one view."""
    return TTAClassifier(model, config) if config is not None and config.enabled else model


def forward_flops(model: nn.Module, image_size: int = IMAGE_SIZE) -> int:
    """Floating-point operations of one forward pass of a classifier on one 48x48 face (a multiply-add
    counts 2), by torch's FLOP counter: the work behind the latency figures and the training throughput's
    TFLOP/s (a training step is about three forward passes). Imported here: the counter pulls in Triton, a
    few tenths of a second at the start of every stage that imports this module."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    device = next(model.parameters()).device
    was_training = model.training
    with counter, torch.no_grad():
        model.eval()(torch.zeros(1, image_size, image_size, dtype=torch.uint8, device=device))
    model.train(was_training)
    return int(counter.get_total_flops())
