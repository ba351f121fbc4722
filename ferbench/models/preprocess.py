"""Per-backbone preprocessing on whole batches, on the training device.

48x48 uint8 gray -> float in [0, 1] -> the backbone's input size (bilinear) -> 3 channels ->
the backbone's own mean/std. This is the only definition of it: training, embedding,
evaluation, export and inference all call `Preprocess`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F


class Preprocess(nn.Module):
    """uint8 (B x H x W) -> normalised float (B x 3 x S x S); exportable with the model.

    With `channels_last` the output is laid out NHWC in memory, which CNN kernels run faster on.
    """

    def __init__(
        self, input_size: int, mean: Sequence[float], std: Sequence[float], channels_last: bool = False
    ) -> None:
        super().__init__()
        self.input_size = int(input_size)
        self.channels_last = channels_last
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.unsqueeze(1).float() / 255.0
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        x = (x.expand(-1, 3, -1, -1) - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


def random_hflip(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mirror a random half of a uint8 batch (B x H x W), on whatever device it lives."""
    flip = torch.rand(images.shape[0], device=images.device, generator=generator) < 0.5
    return torch.where(flip.view(-1, 1, 1), images.flip(-1), images)
