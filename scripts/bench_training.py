"""Benchmarks of the training engine (results and commands in docs/benchmarks.md).

  feature-cost   embedding once + 20 head epochs, against one forward pass over all images
                 (mirrored copies included) and against the naive 20 passes through the frozen trunk
  overhead       training-step time with the on-device input pipeline (index uint8, the recipe's
                 augmentation from --recipe: flip, affine warp, erasing; resize, normalise) against
                 batches already augmented and preprocessed on the device
  throughput     training images/s per backbone at its native input size (meant for a GPU machine)

Data: --prepared DIR (data/prepared of a real run), else synthetic faces generated in memory.
Usage: .venv/bin/python scripts/bench_training.py {feature-cost,overhead,throughput} [options]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ferbench.constants import FER2013_CLASSES
from ferbench.data.synthetic import render_face
from ferbench.models.backbones import build_backbone
from ferbench.models.classifier import ImageClassifier, Standardize, build_head, frozen_extractor
from ferbench.params import load_overrides, load_params
from ferbench.paths import PROJECT_ROOT
from ferbench.schema import Augment, Params, validate_params
from ferbench.specs import BackboneSpec
from ferbench.training.augment import augment_images, random_hflip
from ferbench.training.embeddings import compute_embeddings, load_device_splits
from ferbench.training.engine import Batches, Checkpointing, TrainingData, fit, mixed_precision
from ferbench.training.settings import backbone_spec, resolve_device
from ferbench.workflow.workspace import merged_params

SCRATCH = Path(tempfile.mkdtemp(prefix="ferbench-bench-"))  # checkpoints the timed runs write and nobody reads

SEED_BACKBONES = ("resnet18", "vgg16", "densenet121", "vit_b_16", "clip_vit_b32")


def project_params() -> Params:
    return load_params(PROJECT_ROOT / "params.yaml")


def bench_spec(source: str, model: str, input_size: int | None) -> BackboneSpec:
    return BackboneSpec(name="bench", source=source, model=model, pretrained=False, weights=None, input_size=input_size)


def synthetic_splits(per_class: int, device: torch.device) -> dict[str, Batches]:
    rng = np.random.default_rng(0)
    splits = {}
    for name, count in (("train", per_class), ("val", per_class // 8), ("test", per_class // 4)):
        labels = np.repeat(np.arange(7), count)
        images = np.stack([render_face(FER2013_CLASSES[c], rng) for c in labels])
        splits[name] = Batches(torch.from_numpy(images).to(device), torch.from_numpy(labels).to(device))
    return splits


def get_splits(args: argparse.Namespace, device: torch.device) -> dict[str, Batches]:
    return load_device_splits(args.prepared, device) if args.prepared else synthetic_splits(args.per_class, device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def feature_cost(args: argparse.Namespace) -> None:
    device = resolve_device(args.device)
    splits = get_splits(args, device)
    backbone = build_backbone(bench_spec("torchvision", args.backbone, args.input_size))
    extractor = frozen_extractor(backbone).to(device)
    images = sum(len(s) for s in splits.values()) + len(splits["train"])
    start = time.perf_counter()
    arrays = compute_embeddings(backbone, splits, flip=True, batch_size=256, device=device)
    sync(device)
    embed_seconds = time.perf_counter() - start
    features = {
        name: Batches(torch.from_numpy(arrays[name].astype(np.float32)).to(device), splits[name].labels, features=True)
        for name in splits
    }
    train_features = features["train"].inputs.flatten(0, 1)
    head = torch.nn.Sequential(
        Standardize(train_features.mean(0), train_features.std(0)), build_head(backbone.feature_dim, 7)
    ).to(device)
    config = project_params().feature_extract.recipe.model_copy(update={"epochs": 20, "batch_size": 256, "lr": 1e-3})
    start = time.perf_counter()
    data = TrainingData(features["train"], features["val"], 7)
    fit(head, data, config, Checkpointing(SCRATCH / "head.pt"), description="head")
    sync(device)
    head_seconds = time.perf_counter() - start
    # The naive way: every epoch runs the frozen trunk on every (randomly mirrored) train batch.
    naive_head = build_head(backbone.feature_dim, 7).to(device)
    optimizer = torch.optim.Adam(naive_head.parameters(), 1e-3)
    start = time.perf_counter()
    for index in torch.randperm(len(splits["train"]), device=device).split(256):
        with torch.no_grad():
            feats = extractor(random_hflip(splits["train"].inputs[index]))
        loss = torch.nn.functional.cross_entropy(naive_head(feats), splits["train"].labels[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        for index in torch.arange(len(splits["val"]), device=device).split(256):
            naive_head(extractor(splits["val"].inputs[index]))
    sync(device)
    naive_epoch = time.perf_counter() - start
    forward_pass = embed_seconds  # embedding is exactly one forward pass over every image it needs
    print(f"{args.backbone} @ {backbone.input_size}px on {device}, {images} images incl. mirrored train copies")
    print(f"  one forward pass over all images (the embed stage): {forward_pass:.1f} s")
    print(f"  20 head epochs on cached features:                  {head_seconds:.1f} s")
    print(
        f"  feature-extraction benchmark total:                 {forward_pass + head_seconds:.1f} s "
        f"= {(forward_pass + head_seconds) / forward_pass:.2f}x one forward pass"
    )
    print(
        f"  naive 20 epochs through the frozen trunk (1 timed): {20 * naive_epoch:.1f} s "
        f"= {20 * naive_epoch / forward_pass:.1f}x one forward pass"
    )


def recipe_augmentation(path: Path | None) -> tuple[bool, Augment]:
    """The flip and augment settings of the train section, with an overrides file merged in (None: params.yaml's,
    the original study's flip only)."""
    overrides = load_overrides(path) if path is not None else {}
    params = validate_params(json.loads(json.dumps(merged_params(PROJECT_ROOT, overrides))))
    return params.train.flip, params.train.augment


def overhead(args: argparse.Namespace) -> None:
    device = resolve_device(args.device)
    splits = get_splits(args, device)
    torch.manual_seed(0)
    flip, augment = recipe_augmentation(args.recipe)
    bf16 = mixed_precision(args.precision, device)
    backbone = build_backbone(bench_spec(args.source, args.backbone, args.input_size))
    model = ImageClassifier(backbone, build_head(backbone.feature_dim, 7)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), 1e-4)
    train = splits["train"]
    batches = list(torch.randperm(len(train), device=device).split(args.batch_size))[: args.steps]
    batches = [b for b in batches if len(b) == args.batch_size]
    with torch.no_grad():
        ready = [model.preprocess(augment_images(train.inputs[b], flip, augment)) for b in batches]

    def step(inputs: torch.Tensor, labels: torch.Tensor, full: bool) -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = (model(inputs) if full else model.head(model.trunk(inputs))).float()
        loss = torch.nn.functional.cross_entropy(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    model.train()
    timings = {"pipeline": [], "ready": []}
    for _ in range(args.rounds):
        for mode in ("ready", "pipeline"):
            sync(device)
            start = time.perf_counter()
            for index, prepared in zip(batches, ready, strict=True):
                if mode == "pipeline":
                    step(augment_images(train.inputs[index], flip, augment), train.labels[index], full=True)
                else:
                    step(prepared, train.labels[index], full=False)
            sync(device)
            timings[mode].append((time.perf_counter() - start) / len(batches))
    pipeline, ready_time = min(timings["pipeline"]), min(timings["ready"])
    recipe = f"augmentation of {args.recipe}" if args.recipe else "flip only"
    print(
        f"{args.backbone} @ {backbone.input_size}px, batch {args.batch_size}, {len(batches)} steps x "
        f"{args.rounds} rounds on {device}, {'bf16' if bf16 else 'fp32'}, {recipe} (best round)"
    )
    print(f"  step with batches already on the device: {1000 * ready_time:.1f} ms")
    print(f"  step with the on-device input pipeline:  {1000 * pipeline:.1f} ms")
    print(f"  input-pipeline overhead: {100 * (pipeline / ready_time - 1):+.1f}%")


def throughput(args: argparse.Namespace) -> None:
    device = resolve_device(args.device)
    splits = get_splits(args, device)
    params = project_params()
    for name in args.backbones:
        spec = backbone_spec(params, name).model_copy(update={"pretrained": False, "weights": None})
        torch.manual_seed(0)
        backbone = build_backbone(spec)
        model = ImageClassifier(backbone, build_head(backbone.feature_dim, 7)).to(device)
        config = params.finetune.model_copy(update={"epochs": 1, "batch_size": args.batch_size, "lr": 1e-4})
        train = splits["train"]
        subset = Batches(train.inputs[: args.steps * args.batch_size], train.labels[: args.steps * args.batch_size])
        tiny_val = Batches(splits["val"].inputs[:64], splits["val"].labels[:64])
        warm_up = Batches(subset.inputs[: args.batch_size * 2], subset.labels[: args.batch_size * 2])
        checkpointing = Checkpointing(SCRATCH / "model.pt")
        fit(model, TrainingData(warm_up, tiny_val, 7), config, checkpointing, description=f"{name} warm-up")
        result = fit(model, TrainingData(subset, tiny_val, 7), config, checkpointing, description=name)
        print(
            f"{name} @ {backbone.input_size}px, batch {args.batch_size}, on {device}: "
            f"{result.train_images_per_second:.0f} training images/s"
        )
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["feature-cost", "overhead", "throughput"])
    parser.add_argument("--prepared", type=Path, help="data/prepared folder of a real run (default: synthetic)")
    parser.add_argument("--per-class", type=int, default=200, help="synthetic train images per class")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--backbone", default="resnet18", help="model for feature-cost (torchvision) and overhead")
    parser.add_argument("--source", default="torchvision", help="overhead: the backbone's library (e.g. ferbench)")
    parser.add_argument("--input-size", type=int, default=64, help="input size for feature-cost and overhead")
    parser.add_argument(
        "--recipe",
        type=Path,
        help="overhead: take flip/augment from this overrides file's train "
        "section (e.g. params-cpu.yaml); default: flip only",
    )
    parser.add_argument("--precision", default="auto", help="overhead: auto | bf16 | fp32 (as params.yaml)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20, help="training steps timed (overhead, throughput)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating timing rounds (overhead)")
    parser.add_argument("--backbones", nargs="+", default=list(SEED_BACKBONES), help="throughput: params names")
    args = parser.parse_args()
    {"feature-cost": feature_cost, "overhead": overhead, "throughput": throughput}[args.command](args)


if __name__ == "__main__":
    main()
