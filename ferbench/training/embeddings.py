"""The frozen-feature cache of the `embed` stage: every prepared split (and mirrored train images)
through a backbone's frozen trunk once, stored as float16 in `data/features/<backbone>.npz`, so
that `feature_extract` trains heads without ever running the trunk again.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ferbench.data.prepared import PREPARED_SPLITS, load_split
from ferbench.errors import FerbenchError
from ferbench.models.backbones import Backbone
from ferbench.models.classifier import frozen_extractor
from ferbench.records import EmbeddingRecord, validated
from ferbench.training.distributed import SINGLE, Group, gather_rows, rank_slice
from ferbench.training.engine import Batches, inference_autocast

FEATURE_VIEWS = ("original", "mirrored")


def load_device_splits(prepared_dir: Path, device: torch.device) -> dict[str, Batches]:
    """All prepared splits as uint8 image tensors on `device` (about 80 MB for FER-2013)."""
    splits = {}
    for name in PREPARED_SPLITS:
        split = load_split(prepared_dir / f"{name}.npz")
        splits[name] = Batches(torch.from_numpy(split.images).to(device), torch.from_numpy(split.labels).to(device))
    return splits


@torch.no_grad()
def compute_embeddings(
    backbone: Backbone,
    splits: Mapping[str, Batches],
    flip: bool,
    batch_size: int,
    device: torch.device,
    group: Group = SINGLE,
) -> dict[str, np.ndarray]:
    """Features of every split once (and of mirrored train images when `flip`), float16 V x N x D.

    With a data-parallel `group`, each rank embeds its contiguous block of every split and the
    blocks are gathered in rank order, so every rank returns the same arrays in the same order."""
    extractor = frozen_extractor(backbone).to(device)
    jobs = [
        (name, view) for name in splits for view in FEATURE_VIEWS if view == "original" or (flip and name == "train")
    ]
    blocks = {name: rank_slice(len(splits[name]), group) for name in splits}
    total = sum(math.ceil((blocks[name].stop - blocks[name].start) / batch_size) for name, _ in jobs)
    features: dict[str, list[np.ndarray]] = {name: [] for name in splits}
    with tqdm(total=total, desc="embed", unit="batch", mininterval=2.0, disable=not group.is_main) as progress:
        for name, view in jobs:
            images = splits[name].inputs[blocks[name]]
            chunks = []
            for start in range(0, len(images), batch_size):
                batch = images[start : start + batch_size]
                if view == "mirrored":
                    batch = batch.flip(-1)
                with inference_autocast(device):
                    chunks.append(extractor(batch).float().cpu())
                progress.update()
            block = torch.cat(chunks) if chunks else torch.zeros((0, backbone.feature_dim))
            if group.enabled:
                block = gather_rows(block.to(device), group).cpu()
            features[name].append(block.numpy().astype(np.float16))
    arrays = {name: np.stack(views) for name, views in features.items()}
    arrays.update({f"{name}_labels": splits[name].labels.cpu().numpy() for name in splits})
    return arrays


def save_embeddings(path: Path, arrays: Mapping[str, np.ndarray], record: EmbeddingRecord) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        np.savez(handle, metadata=np.array(record.model_dump_json()), **arrays)


def load_embeddings(path: Path, device: torch.device) -> tuple[dict[str, Batches], EmbeddingRecord]:
    """Cached features as Batches on the device, and what made them."""
    if not path.is_file():
        raise FerbenchError(f"{path}: features not found; run `dvc repro` (the embed stage writes them)")
    rerun = f"-f embed@{path.stem}"
    with np.load(path, allow_pickle=False) as arrays:
        try:
            metadata = json.loads(str(arrays["metadata"]))
        except (KeyError, ValueError) as exc:
            raise FerbenchError(f"{path}: no readable metadata; rerun `dvc repro {rerun}`") from exc
        record = validated(EmbeddingRecord, metadata, str(path), rerun)
        splits = {
            name: Batches(
                torch.from_numpy(arrays[name].astype(np.float32)).to(device),
                torch.from_numpy(arrays[f"{name}_labels"]).to(device),
                features=True,
            )
            for name in PREPARED_SPLITS
        }
    return splits, record
