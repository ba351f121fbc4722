"""Training-time augmentation of whole batches on the training device (no DataLoader, no PIL).

`augment_images` turns a uint8 batch (B x H x W) into a float batch in the same 0..255 range:
one random affine per image (mirror, shift, rotation, zoom) applied with a single
`affine_grid`/`grid_sample` call, then optional random erasing. `mix_batch` applies mixup or
cutmix to a batch and returns each image's partner with the weight of the image itself. Every random draw comes from
torch's generator, so a seeded run augments identically (and a resumed run continues the
stream: the engine saves the generator state).

Why not timm's `Mixup` and `RandomErasing`: they draw from NumPy's and Python's generators, which
neither `seed` nor a resume file restores (tests/test_recipe.py shows it); timm's `Mixup` refuses a
batch of odd size (the last batch of an epoch often is) and returns smoothed one-hot targets, while the
loss here mixes the hard labels and a teacher's soft labels through each image's partner and weight.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from ferbench.schema import Augment

ERASE_AREA = (0.02, 0.25)  # share of the image one erased rectangle covers (as in Zhong et al.'s random erasing)
ERASE_ASPECT = (0.3, 3.3)


def _uniform(count: int, low: float, high: float, device: torch.device) -> torch.Tensor:
    return torch.rand(count, device=device) * (high - low) + low


def affine_matrices(count: int, flip: bool, config: Augment, device: torch.device) -> torch.Tensor:
    """One random 2 x 3 `affine_grid` matrix per image (output -> input coordinates, in [-1, 1])."""
    angle = _uniform(count, -config.rotate, config.rotate, device) * (math.pi / 180)
    zoom = _uniform(count, 1 - config.scale, 1 + config.scale, device)
    mirror = torch.ones(count, device=device)
    if flip:
        mirror = torch.where(torch.rand(count, device=device) < 0.5, -1.0, 1.0)
    shift_x = _uniform(count, -config.shift, config.shift, device) * 2  # the grid spans 2 units per image side
    shift_y = _uniform(count, -config.shift, config.shift, device) * 2
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    return torch.stack(
        [torch.stack([cos * mirror, -sin, shift_x], dim=1), torch.stack([sin * mirror, cos, shift_y], dim=1)], dim=1
    )


def warp(images: torch.Tensor, matrices: torch.Tensor) -> torch.Tensor:
    """Resample a float batch (B x H x W) through per-image affine matrices, edges replicated."""
    batch = images.unsqueeze(1)
    grid = F.affine_grid(matrices.to(batch.dtype), list(batch.shape), align_corners=False)
    return F.grid_sample(batch, grid, mode="bilinear", padding_mode="border", align_corners=False).squeeze(1)


def random_erase(images: torch.Tensor, probability: float) -> torch.Tensor:
    """Replace one random rectangle of each chosen image (probability `probability`) with uniform noise."""
    count, height, width = images.shape
    device = images.device
    area = _uniform(count, *ERASE_AREA, device) * height * width
    aspect = torch.exp(_uniform(count, math.log(ERASE_ASPECT[0]), math.log(ERASE_ASPECT[1]), device))
    box_h = (area * aspect).sqrt().clamp(1, height)
    box_w = (area / aspect).sqrt().clamp(1, width)
    top = torch.rand(count, device=device) * (height - box_h)
    left = torch.rand(count, device=device) * (width - box_w)
    rows = torch.arange(height, device=device).view(1, height, 1)
    cols = torch.arange(width, device=device).view(1, 1, width)
    inside = (
        (rows >= top.view(-1, 1, 1))
        & (rows < (top + box_h).view(-1, 1, 1))
        & (cols >= left.view(-1, 1, 1))
        & (cols < (left + box_w).view(-1, 1, 1))
    )
    chosen = (torch.rand(count, device=device) < probability).view(-1, 1, 1)
    noise = torch.rand(images.shape, device=device, dtype=images.dtype) * 255
    return torch.where(inside & chosen, noise, images)


def random_hflip(images: torch.Tensor) -> torch.Tensor:
    """Mirror a random half of a batch (B x H x W, any dtype), on whatever device it lives."""
    flip = torch.rand(images.shape[0], device=images.device) < 0.5
    return torch.where(flip.view(-1, 1, 1), images.flip(-1), images)


def augment_images(images: torch.Tensor, flip: bool, config: Augment) -> torch.Tensor:
    """A uint8 batch (B x H x W), augmented: uint8 when only flipping, else float in 0..255
    (the models' Preprocess takes either)."""
    if not config.geometric and not config.erase:
        return random_hflip(images) if flip else images
    out = images.float()
    if config.geometric:
        out = warp(out, affine_matrices(len(out), flip, config, out.device))
    elif flip:
        out = random_hflip(out)
    if config.erase:
        out = random_erase(out, config.erase)
    return out


def _beta(alpha: float, device: torch.device) -> float:
    concentration = torch.tensor([float(alpha)], device=device)
    return float(torch.distributions.Beta(concentration, concentration).sample().item())


def mix_batch(images: torch.Tensor, config: Augment) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Mixup or cutmix (one of them at random when both are on) with a shuffled copy of the batch.

    Returns the mixed images, the partner of each image (its index in the batch) and the weight of the
    image itself: the loss is `weight * loss(targets) + (1 - weight) * loss(targets[partner])`, for hard
    labels and a teacher's soft ones alike.
    """
    device = images.device
    partner = torch.randperm(len(images), device=device)
    use_cutmix = bool(config.cutmix) and (not config.mixup or torch.rand(1).item() < 0.5)
    if not use_cutmix:
        weight = _beta(config.mixup, device)
        return weight * images + (1 - weight) * images[partner], partner, weight
    weight = _beta(config.cutmix, device)
    height, width = images.shape[-2:]
    cut_h, cut_w = round(height * math.sqrt(1 - weight)), round(width * math.sqrt(1 - weight))
    center_y, center_x = int(torch.randint(height, (1,)).item()), int(torch.randint(width, (1,)).item())
    top, bottom = max(center_y - cut_h // 2, 0), min(center_y + (cut_h + 1) // 2, height)
    left, right = max(center_x - cut_w // 2, 0), min(center_x + (cut_w + 1) // 2, width)
    mixed = images.clone()
    mixed[..., top:bottom, left:right] = images[partner][..., top:bottom, left:right]
    kept = 1 - (bottom - top) * (right - left) / (height * width)  # the box was clipped at the edges
    return mixed, partner, kept
