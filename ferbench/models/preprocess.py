"""Per-backbone preprocessing on whole batches, on the training device.

48x48 gray (uint8, or float in 0..255 after augmentation) -> float in [0, 1] -> the backbone's
input size (bilinear) -> its channels (3 for ImageNet-style backbones, 1 for the FER-native
networks) -> the backbone's own mean/std. This is the only definition of it: training,
embedding, evaluation, export and inference all call `Preprocess`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F


class Preprocess(nn.Module):
    """uint8 or float (B x H x W) -> normalised float (B x C x S x S); exportable with the model.

    With `channels_last` the output is laid out NHWC in memory, which CNN kernels run faster on.
    """

    def __init__(
        self, input_size: int, mean: Sequence[float], std: Sequence[float], channels_last: bool = False
    ) -> None:
        super().__init__()
        if len(mean) != len(std) or len(mean) not in (1, 3):
            raise ValueError(f"mean and std need 1 or 3 channels each, got {len(mean)} and {len(std)}")
        self.input_size = int(input_size)
        self.channels = len(mean)
        self.channels_last = channels_last
        shape = (1, self.channels, 1, 1)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(shape), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(shape), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.unsqueeze(1).float() / 255.0
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        x = (x.expand(-1, self.channels, -1, -1) - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x
