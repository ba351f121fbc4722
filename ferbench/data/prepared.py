"""The prepared-split file format: `data/prepared/<split>.npz` with `images` and `labels`."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ferbench.constants import IMAGE_SIZE
from ferbench.errors import FerbenchError
from ferbench.records import DataOrigin, read_record

PREPARED_SPLITS: tuple[str, ...] = ("train", "val", "test")


@dataclass(frozen=True)
class Split:
    """One split in memory: uint8 images N x 48 x 48 and int64 labels N."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


def save_split(path: Path, split: Split) -> None:
    """Write a split uncompressed: it loads in milliseconds and DVC caches it once."""
    if split.images.dtype != np.uint8 or split.images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(
            f"images must be uint8 N x {IMAGE_SIZE} x {IMAGE_SIZE}, got {split.images.dtype} {split.images.shape}"
        )
    if len(split.images) != len(split.labels):
        raise ValueError("images and labels differ in length")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        np.savez(handle, images=split.images, labels=split.labels.astype(np.int64))


def load_split(path: Path) -> Split:
    """Read a split written by `save_split`, failing clearly if it is missing or malformed."""
    if not path.is_file():
        raise FerbenchError(f"{path}: prepared split not found; run `dvc repro prepare` first")
    with np.load(path, allow_pickle=False) as arrays:
        if "images" not in arrays or "labels" not in arrays:
            raise FerbenchError(f"{path}: expected arrays 'images' and 'labels'; rerun `dvc repro prepare`")
        return Split(images=arrays["images"], labels=arrays["labels"])


MANIFEST_FILE = "manifest.csv"
PROVENANCE_FILE = "provenance.json"  # where the data came from: source and the archive's SHA-256


def archive_provenance(archive: Path, source: str, dataset: str | None) -> DataOrigin:
    """What a prepared dataset was made from: the source (kaggle | archive | synthetic), the Kaggle
    dataset when it came from Kaggle, and the size and SHA-256 of the archive that was decoded."""
    digest = hashlib.sha256()
    with archive.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return DataOrigin(
        source=source,
        **({"kaggle_dataset": dataset} if source == "kaggle" else {}),
        archive_sha256=digest.hexdigest(),
        archive_bytes=archive.stat().st_size,
    )


def read_provenance(prepared_dir: Path) -> DataOrigin:
    """The prepared dataset's provenance record (see `archive_provenance`)."""
    return read_record(prepared_dir / PROVENANCE_FILE, DataOrigin, "-f prepare")


def leakage_free_test_mask(prepared_dir: Path, test_count: int) -> np.ndarray:
    """Which test images (by row of test.npz) have pixels that occur nowhere in the Kaggle train folder.

    About 8% of FER-2013's test images are pixel copies of train-folder images (whatever
    `prepare` then kept or dropped); accuracy on the rest is the leakage-free figure.
    """
    import pandas as pd

    path = prepared_dir / MANIFEST_FILE
    if not path.is_file():
        raise FerbenchError(f"{path}: manifest not found; run `dvc repro prepare`")
    manifest = pd.read_csv(
        path, usecols=["folder", "split", "index", "pixel_hash"], dtype={"pixel_hash": str}, keep_default_na=False
    )
    train_hashes = set(manifest.loc[(manifest["folder"] == "train") & (manifest["pixel_hash"] != ""), "pixel_hash"])
    test = manifest[manifest["split"] == "test"].sort_values("index")
    if len(test) != test_count or not np.array_equal(test["index"].to_numpy(), np.arange(test_count)):
        raise FerbenchError(
            f"{path}: does not match test.npz ({len(test)} test rows, {test_count} images); rerun `dvc repro prepare`"
        )
    return ~test["pixel_hash"].isin(train_hashes).to_numpy()
