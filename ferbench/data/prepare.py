"""The `prepare` stage's logic: decode once, check quality, split, and account for every file."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from ferbench.constants import IMAGE_SIZE
from ferbench.data.archive import SPLIT_FOLDERS, check_archive, classify_entry, read_entries
from ferbench.data.decode import UndecodableImage, decode_fer
from ferbench.data.prepared import MANIFEST_FILE, PREPARED_SPLITS, Split, save_split
from ferbench.data.split import group_stratified_split
from ferbench.errors import FerbenchError
from ferbench.files import write_frame_csv
from ferbench.records import DataQuality, DataSummary
from ferbench.schema import Data


@dataclass
class PreparedData:
    """The result of preparing: the splits, one manifest row per archive file, and the summary."""

    splits: dict[str, Split]
    manifest: pd.DataFrame
    summary: DataSummary


def _check_layout(archive: Path, classes: Sequence[str], max_uncompressed_mb: float) -> int:
    """Fail fast, before decoding, on unknown class folders or missing splits; count data files."""
    seen: dict[str, set[str]] = {split: set() for split in SPLIT_FOLDERS}
    unknown: set[str] = set()
    files = 0
    for info in check_archive(archive, max_uncompressed_mb):
        entry = classify_entry(info.filename)
        files += entry is not None
        if entry is None or entry.class_name is None:
            continue
        if entry.class_name not in classes:
            unknown.add(f"{entry.split}/{entry.class_name}")
        seen[entry.split].add(entry.class_name)
    if unknown:
        raise FerbenchError(
            f"{archive}: unknown class folder(s) {', '.join(sorted(unknown))}; "
            f"data.classes lists {', '.join(classes)} (add the class there or remove the folder)"
        )
    for split in SPLIT_FOLDERS:
        if not seen[split]:
            raise FerbenchError(f"{archive}: no '{split}/<class>/' images; the archive needs train/ and test/ folders")
    return files


def _decode_all(
    archive: Path, classes: Sequence[str], max_uncompressed_mb: float, files: int
) -> tuple[pd.DataFrame, np.ndarray]:
    """Decode every entry once; return one row per file and the stacked pixels of decoded rows."""
    rows: list[dict[str, Any]] = []
    pixels: list[np.ndarray] = []
    entries = read_entries(archive, max_uncompressed_mb)
    for entry, data in tqdm(entries, total=files, desc="decode", unit="img", mininterval=1.0):
        row: dict[str, Any] = {"file": entry.name, "folder": entry.split, "class": entry.class_name}
        if entry.class_name is None:
            row["problem"] = "skipped: not in a class folder"
        else:
            try:
                sample = decode_fer(data)
            except UndecodableImage as exc:
                row["problem"] = f"skipped: {exc}" if data is not None else "skipped: unreadable archive member"
            else:
                row.update(
                    label=classes.index(entry.class_name),
                    pixel_hash=hashlib.blake2b(sample.pixels.tobytes(), digest_size=8).hexdigest(),
                    pixel_std=float(sample.pixels.std()),
                    converted=sample.converted,
                    resized=sample.resized,
                    pixel_row=len(pixels),
                )
                pixels.append(sample.pixels)
        rows.append(row)
    frame = pd.DataFrame(rows)
    for column, default in (
        ("problem", ""),
        ("label", -1),
        ("pixel_hash", ""),
        ("pixel_std", np.nan),
        ("converted", False),
        ("resized", False),
        ("pixel_row", -1),
    ):
        if column not in frame:
            frame[column] = default
    frame["problem"] = frame["problem"].fillna("")
    frame = frame.fillna({"label": -1, "pixel_hash": "", "converted": False, "resized": False, "pixel_row": -1})
    frame = frame.astype({"label": int, "pixel_row": int, "converted": bool, "resized": bool})
    stacked = np.stack(pixels) if pixels else np.zeros((0, IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    return frame, stacked


def _flag_quality(frame: pd.DataFrame, policy: Data) -> pd.DataFrame:
    """Add the quality flags and the drop reason (train folder only) to every decoded row."""
    decoded = frame["problem"] == ""
    frame["blank"] = decoded & (frame["pixel_std"] < policy.blank_std)
    by_copy = frame[decoded].groupby(["folder", "pixel_hash"])
    frame["duplicate"] = False
    frame.loc[decoded, "duplicate"] = by_copy["file"].transform("size") > 1
    frame["label_conflict"] = False
    frame.loc[decoded, "label_conflict"] = by_copy["label"].transform("nunique") > 1
    test_hashes = set(frame.loc[decoded & (frame["folder"] == "test"), "pixel_hash"])
    frame["in_test"] = decoded & (frame["folder"] == "train") & frame["pixel_hash"].isin(test_hashes)

    train_folder = decoded & (frame["folder"] == "train")
    reason = pd.Series("", index=frame.index)
    for flag, action, name in (
        ("blank", policy.blanks, "near_blank"),
        ("in_test", policy.test_leakage, "shared_with_test"),
        ("label_conflict", policy.label_conflicts, "label_conflict"),
    ):
        if action == "drop":
            reason[train_folder & frame[flag] & (reason == "")] = name
    if policy.duplicates == "drop":
        remaining = train_folder & (reason == "")
        extra_copy = frame[remaining].groupby(["pixel_hash", "label"]).cumcount() > 0
        reason[extra_copy.index[extra_copy]] = "duplicate"
    frame["dropped"] = reason
    return frame


def prepare_dataset(archive: Path, data: Data, seed: int) -> PreparedData:
    """Decode, check, split: the whole of `prepare` except writing files. `data` is the params' data
    section: the class folders, the val share, the archive bound and what to do with each kind of problem
    image of the Kaggle train folder (the test folder is never altered, so test accuracy stays comparable
    with published FER-2013 figures; its problems are reported all the same)."""
    classes = list(data.classes)
    files = _check_layout(archive, classes, data.max_uncompressed_mb)
    frame, pixels = _decode_all(archive, classes, data.max_uncompressed_mb, files)
    frame = _flag_quality(frame, data)

    decoded = frame["problem"] == ""
    for folder in SPLIT_FOLDERS:
        present = set(frame.loc[decoded & (frame["folder"] == folder), "class"])
        empty = [name for name in classes if name not in present]
        if empty:
            raise FerbenchError(
                f"{archive}: no readable images for class(es) {', '.join(empty)} in '{folder}/'; "
                "fix the archive or remove the class from data.classes"
            )

    frame["split"] = np.where(frame["problem"] != "", "skipped", np.where(frame["dropped"] != "", "dropped", ""))
    kept_train = (frame["split"] == "") & (frame["folder"] == "train")
    frame.loc[(frame["split"] == "") & (frame["folder"] == "test"), "split"] = "test"
    in_val = group_stratified_split(
        frame.loc[kept_train, "label"].to_numpy(),
        frame.loc[kept_train, "pixel_hash"].to_numpy(),
        data.val_fraction,
        seed,
    )
    frame.loc[kept_train, "split"] = np.where(in_val, "val", "train")

    splits: dict[str, Split] = {}
    frame["index"] = -1
    for split in PREPARED_SPLITS:
        rows = frame.index[frame["split"] == split]
        frame.loc[rows, "index"] = np.arange(len(rows))
        splits[split] = Split(
            images=pixels[frame.loc[rows, "pixel_row"].to_numpy()],
            labels=frame.loc[rows, "label"].to_numpy(dtype=np.int64),
        )
    return PreparedData(splits=splits, manifest=frame, summary=summarize(frame, classes))


def summarize(frame: pd.DataFrame, classes: Sequence[str]) -> DataSummary:
    """Counts per split and class, and every quality count, as written to metrics/data.json."""
    decoded = frame[frame["problem"] == ""]
    counts = {}
    for split in PREPARED_SPLITS:
        in_split = frame[frame["split"] == split]
        per_class = in_split["class"].value_counts()
        counts[split] = {"total": len(in_split), **{name: int(per_class.get(name, 0)) for name in classes}}
    folders = {folder: int((frame["folder"] == folder).sum()) for folder in SPLIT_FOLDERS}
    copies = decoded.groupby("pixel_hash")
    duplicated = decoded[copies["file"].transform("size") > 1]
    conflicting = decoded[copies["label"].transform("nunique") > 1]
    shared = decoded[decoded["in_test"]]
    train_hashes = set(decoded.loc[decoded["folder"] == "train", "pixel_hash"])
    test_rows = frame[frame["split"] == "test"]
    test_in_train = int(test_rows["pixel_hash"].isin(train_hashes).sum())
    skipped = frame[frame["problem"] != ""]
    dropped = frame[frame["split"] == "dropped"]["dropped"].value_counts()
    return DataSummary(
        counts=counts,
        archive_files=folders,
        quality=DataQuality(
            duplicate_groups=int(duplicated["pixel_hash"].nunique()),
            duplicate_images=len(duplicated),
            label_conflict_groups=int(conflicting["pixel_hash"].nunique()),
            train_test_shared_groups=int(shared["pixel_hash"].nunique()),
            train_test_shared_images=len(shared),
            test_images_in_train_folder=test_in_train,
            test_leakage_free_images=len(test_rows) - test_in_train,
            near_blank=int(decoded["blank"].sum()),
            skipped=len(skipped),
            converted_to_gray=int(decoded["converted"].sum()),
            resized=int(decoded["resized"].sum()),
            dropped={
                reason: int(dropped.get(reason, 0))
                for reason in ("duplicate", "label_conflict", "near_blank", "shared_with_test")
            },
        ),
        skipped_files=[f"{row.file}: {row.problem.removeprefix('skipped: ')}" for row in skipped.itertuples()],
    )


MANIFEST_COLUMNS = [
    "file",
    "folder",
    "class",
    "label",
    "split",
    "index",
    "pixel_hash",
    "problem",
    "dropped",
    "duplicate",
    "label_conflict",
    "in_test",
    "blank",
    "converted",
    "resized",
]


def write_prepared(result: PreparedData, out_dir: Path) -> None:
    """Write the three npz splits and the manifest (one row per archive file)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for split, data in result.splits.items():
        save_split(out_dir / f"{split}.npz", data)
    write_frame_csv(result.manifest[MANIFEST_COLUMNS], out_dir / MANIFEST_FILE)
