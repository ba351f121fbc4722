"""Shared fixtures: small archives built in temporary folders; nothing is downloaded."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ferbench.constants import FER2013_CLASSES
from ferbench.data.synthetic import write_synthetic_archive
from ferbench.faces import YUNET_FILE as YUNET_CACHE_NAME
from ferbench.faces import cache_folder
from ferbench.workspace import local_path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# This machine's real files, where it has them: the FER-2013 zip named by the git-ignored params-local.yaml
# (data.archive), and a YuNet model in ferbench's cache (where the app keeps its download). Absent: tests skip.
REAL_ARCHIVE = local_path("data", "archive") or PROJECT_ROOT / "params-local.yaml: data.archive"
YUNET_FILE = cache_folder() / YUNET_CACHE_NAME
needs_yunet = pytest.mark.skipif(not YUNET_FILE.is_file(), reason=f"{YUNET_FILE} not present (YuNet face detector)")


def cache_yunet(cache: Path) -> bool:
    """Put the local YuNet file where `ferbench.faces` caches its download (point $FERBENCH_CACHE at
    `cache`); False when there is no local file."""
    if not YUNET_FILE.is_file():
        return False
    if cache.resolve() == YUNET_FILE.parent.resolve():
        return True
    cache.mkdir(parents=True, exist_ok=True)
    (cache / "face_detection_yunet_2023mar.onnx").write_bytes(YUNET_FILE.read_bytes())
    return True


def detector_args() -> list[str]:
    """Command-line options for the app and predict: the local YuNet file when present, else Haar."""
    return ["--detector-model", str(YUNET_FILE)] if YUNET_FILE.is_file() else ["--detector", "haar"]


class FixedFaces:
    """A stand-in detector that 'finds' the given boxes (each framed as the square on the box)."""

    name = "fixed"
    can_align = False

    def __init__(self, *frames: list[tuple[int, int, int, int]]) -> None:
        self.frames = list(frames)
        self.calls = 0

    def __call__(self, rgb: np.ndarray) -> list:
        from ferbench.faces import Face

        boxes = self.frames[min(self.calls, len(self.frames) - 1)]
        self.calls += 1
        return [Face(tuple(box)) for box in boxes]

    def window(self, face, align: bool):
        from ferbench.faces import box_window

        return box_window(face.box)


def encode(pixels: np.ndarray, fmt: str = "JPEG", mode: str | None = None) -> bytes:
    """Encode an array as image bytes (optionally converting mode first, e.g. to RGB)."""
    image = Image.fromarray(pixels)
    if mode:
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def textured(seed: int, size: int = 48) -> np.ndarray:
    """A distinct, non-blank grayscale image."""
    return np.random.default_rng(seed).integers(0, 256, (size, size), dtype=np.uint8)


def write_zip(path: Path, members: Mapping[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def minimal_members(per_class: int = 3, start_seed: int = 0) -> dict[str, bytes]:
    """A valid Kaggle-layout dataset: `per_class` distinct images per class in train and test."""
    members = {}
    seed = start_seed
    for split in ("train", "test"):
        for name in FER2013_CLASSES:
            for index in range(per_class):
                members[f"{split}/{name}/img_{index}.png"] = encode(textured(seed), "PNG")
                seed += 1
    return members


@pytest.fixture
def zip_factory(tmp_path: Path) -> Callable[..., Path]:
    counter = iter(range(10**6))

    def make(members: Mapping[str, bytes]) -> Path:
        return write_zip(tmp_path / f"archive_{next(counter)}.zip", members)

    return make


SMALL_COUNTS = {
    "train": dict.fromkeys(FER2013_CLASSES, 40),
    "test": dict.fromkeys(FER2013_CLASSES, 12),
}


@pytest.fixture(scope="session")
def synthetic_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("synthetic") / "fer2013.zip"
    write_synthetic_archive(path, SMALL_COUNTS, seed=7)
    return path


def synthetic_prepared(
    root: Path, train_per_class: int, test_per_class: int, seed: int, val_fraction: float = 0.15
) -> Path:
    """`root/prepared`: the prepare stage's output for a synthetic archive of that many faces per class."""
    from ferbench.data.prepare import QualityPolicy, prepare_dataset, write_prepared

    counts = {
        "train": dict.fromkeys(FER2013_CLASSES, train_per_class),
        "test": dict.fromkeys(FER2013_CLASSES, test_per_class),
    }
    write_synthetic_archive(root / "fer.zip", counts, seed=seed)
    result = prepare_dataset(root / "fer.zip", list(FER2013_CLASSES), val_fraction, 0, QualityPolicy(), 64)
    write_prepared(result, root / "prepared")
    return root / "prepared"


def save_tiny_clip(folder: Path) -> Path:
    """A 2-layer CLIP vision tower saved like a downloaded one (save_pretrained), mean (0.1, 0.2, 0.3)."""
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    config = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=64, patch_size=16
    )
    CLIPVisionModel(config).save_pretrained(folder)
    CLIPImageProcessor(image_mean=[0.1, 0.2, 0.3], image_std=[0.5, 0.5, 0.5]).save_pretrained(folder)
    return folder


def untrained_model_folder(
    folder: Path, variant: str = "onnx_fp32", tta: object = None, temperature: float = 1.0, **card_fields: object
) -> Path:
    """A deployable model folder (card + export) of resnet18 at 48 px with random weights, optionally
    with test-time augmentation (a TTAConfig) inside and a calibration temperature on the card."""
    import torch

    from ferbench.deploy import write_model_folder
    from ferbench.models.backbones import BackboneSpec, build_backbone
    from ferbench.models.classifier import ImageClassifier, build_head, with_tta

    torch.manual_seed(0)
    spec = BackboneSpec("resnet18", "torchvision", "resnet18", False, None, 48)
    backbone = build_backbone(spec)
    model = ImageClassifier(backbone, build_head(backbone.feature_dim, len(FER2013_CLASSES))).eval()
    write_model_folder(
        folder,
        spec,
        with_tta(model, tta),
        list(FER2013_CLASSES),
        variant,
        tta=tta,
        temperature=temperature,
        **card_fields,
    )
    return folder
