"""A FER-shaped stand-in dataset whose classes are learnable from the pixels.

Each image is a drawn face whose brows, eyes and mouth take the shape of its emotion (a smile
for happy, an open O for surprise, inner-lowered brows for angry, ...), with random position,
size, line width, brightness, contrast, mirroring and noise, so that a model has to learn the
shapes rather than a fixed template. Everything is deterministic given the seed.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from ferbench.constants import FER2013_CLASSES, IMAGE_SIZE
from ferbench.data.archive import SPLIT_FOLDERS
from ferbench.errors import FerbenchError

CANVAS = 96  # faces are drawn at twice the size, then downsampled for smooth edges
JPEG_QUALITY = 92

# Per emotion: brow (inner-end lift, outer-end lift, overall lift), eye height, mouth shape.
# Lifts are in canvas pixels, positive means up.
_FEATURES: dict[str, dict[str, object]] = {
    "angry": {"brow": (-6, 3, -2), "eye": 4, "mouth": "tight"},
    "disgust": {"brow": (-4, -4, -3), "eye": 3, "mouth": "sneer"},
    "fear": {"brow": (6, -1, 6), "eye": 9, "mouth": "grimace"},
    "happy": {"brow": (0, 0, 1), "eye": 5, "mouth": "smile"},
    "neutral": {"brow": (0, 0, 0), "eye": 5, "mouth": "flat"},
    "sad": {"brow": (6, -4, 0), "eye": 4, "mouth": "frown"},
    "surprise": {"brow": (3, 3, 10), "eye": 9, "mouth": "open"},
}


def _draw_mouth(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, s: float, ink: int, width: int) -> None:
    w = 16 * s
    if shape == "smile":
        draw.arc((cx - w, cy - 12 * s, cx + w, cy + 8 * s), 20, 160, fill=ink, width=width)
    elif shape == "frown":
        draw.arc((cx - w, cy + 2 * s, cx + w, cy + 20 * s), 200, 340, fill=ink, width=width)
    elif shape == "open":
        draw.ellipse((cx - 7 * s, cy - 6 * s, cx + 7 * s, cy + 12 * s), fill=ink)
    elif shape == "grimace":
        draw.rectangle((cx - w, cy - 3 * s, cx + w, cy + 5 * s), outline=ink, width=width)
        draw.line((cx - w, cy + 1 * s, cx + w, cy + 1 * s), fill=ink, width=max(1, width // 2))
    elif shape == "tight":
        draw.line((cx - 9 * s, cy + 2 * s, cx + 9 * s, cy + 2 * s), fill=ink, width=width + 1)
    elif shape == "sneer":
        draw.line(
            [(cx - w, cy + 4 * s), (cx - 4 * s, cy + 1 * s), (cx + 4 * s, cy - 4 * s), (cx + w, cy + 2 * s)],
            fill=ink,
            width=width,
            joint="curve",
        )
        draw.line((cx - 5 * s, cy - 17 * s, cx - 1 * s, cy - 13 * s), fill=ink, width=max(1, width // 2))
        draw.line((cx + 5 * s, cy - 17 * s, cx + 1 * s, cy - 13 * s), fill=ink, width=max(1, width // 2))
    else:  # flat
        draw.line((cx - 13 * s, cy + 2 * s, cx + 13 * s, cy + 2 * s), fill=ink, width=width)


def render_face(class_name: str, rng: np.random.Generator) -> np.ndarray:
    """Draw one 48x48 uint8 face showing `class_name`, with random nuisance factors."""
    if class_name not in _FEATURES:
        raise FerbenchError(f"synthetic data knows the FER-2013 classes only, not '{class_name}'")
    features = _FEATURES[class_name]
    background = int(rng.integers(0, 256))
    skin = int(np.clip(background + rng.choice([-1, 1]) * rng.integers(50, 120), 30, 235))
    ink = int(np.clip(skin + (-1 if skin > 110 else 1) * rng.integers(60, 110), 0, 255))
    image = Image.new("L", (CANVAS, CANVAS), background)
    draw = ImageDraw.Draw(image)
    s = float(rng.uniform(0.85, 1.12))
    cx = CANVAS / 2 + float(rng.uniform(-6, 6))
    cy = CANVAS / 2 + float(rng.uniform(-5, 5))
    width = int(rng.integers(2, 5))
    draw.ellipse((cx - 34 * s, cy - 42 * s, cx + 34 * s, cy + 42 * s), fill=skin)

    inner_lift, outer_lift, lift = features["brow"]  # type: ignore[misc]
    jitter = rng.uniform(-1.5, 1.5, size=3)
    brow_y = cy - 22 * s - (lift + jitter[0]) * s
    eye_y = cy - 10 * s
    eye_h = (features["eye"] + jitter[1]) * s  # type: ignore[operator]
    for side in (-1, 1):
        inner_x, outer_x = cx + side * 5 * s, cx + side * 22 * s
        draw.line(
            (inner_x, brow_y - (inner_lift + jitter[2]) * s, outer_x, brow_y - outer_lift * s),
            fill=ink,
            width=width + 1,
        )
        ex = cx + side * 13 * s
        draw.ellipse((ex - 6 * s, eye_y - eye_h / 2, ex + 6 * s, eye_y + eye_h / 2), fill=ink)
    _draw_mouth(draw, str(features["mouth"]), cx, cy + 20 * s, s, ink, width)

    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    small = np.asarray(image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR), dtype=np.float32)
    contrast = rng.uniform(0.6, 1.2)
    noisy = (small - small.mean()) * contrast + small.mean() + rng.normal(0, rng.uniform(3, 14), small.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def _check_counts(counts: Mapping[str, int], key: str) -> None:
    for class_name, count in counts.items():
        if class_name not in FER2013_CLASSES:
            raise FerbenchError(
                f"params.yaml: '{key}' names unknown class '{class_name}'; use {', '.join(FER2013_CLASSES)}"
            )
        if not isinstance(count, int) or count < 0:
            raise FerbenchError(f"params.yaml: '{key}.{class_name}' must be a whole number >= 0, got {count!r}")


def write_synthetic_archive(destination: Path, counts: Mapping[str, Mapping[str, int]], seed: int) -> dict[str, int]:
    """Write a Kaggle-layout zip of synthetic faces; `counts[split][class]` images per class.

    Each image's randomness depends only on (seed, split, class, index), so changing one
    class's count leaves every other image unchanged. Returns the number of images per split.
    """
    for split in SPLIT_FOLDERS:
        _check_counts(counts.get(split, {}), f"data.synthetic.{split}")
    written = {split: 0 for split in SPLIT_FOLDERS}
    total = sum(sum(counts.get(split, {}).values()) for split in SPLIT_FOLDERS)
    with (
        zipfile.ZipFile(destination, "w", compression=zipfile.ZIP_STORED) as archive,
        tqdm(total=total, desc="synthetic faces", unit="img") as progress,
    ):
        for split_index, split in enumerate(SPLIT_FOLDERS):
            for class_name, count in counts.get(split, {}).items():
                class_index = FER2013_CLASSES.index(class_name)
                for index in range(count):
                    rng = np.random.default_rng([seed, split_index, class_index, index])
                    buffer = io.BytesIO()
                    Image.fromarray(render_face(class_name, rng)).save(buffer, "JPEG", quality=JPEG_QUALITY)
                    archive.writestr(f"{split}/{class_name}/synthetic_{index:05d}.jpg", buffer.getvalue())
                    written[split] += 1
                    progress.update()
    return written
