"""CPU latency and faithfulness of backbones at batch 1 in every runtime variant (results and command in
docs/latency.md).

Builds each backbone with its spec from params.yaml and the 7-class head, without pretrained weights
unless `--checkpoint NAME=PATH` gives trained ones. Speed does not depend on the weights; agreement does:
random weights make near-tied logits, so their int8 agreement is a pessimistic bound. `--fit-head N` gives
a random trunk a trained head instead: the head is fitted on the trunk's features of N train images, so
the logits are those of a trained classifier (the closest to a trained CLIP that a machine without its
pretrained weights can have). Exports every variant this machine can build (PyTorch eager, ONNX Runtime
fp32, dynamic and static int8, and OpenVINO fp32 and int8 when it is installed; the int8 ones' ranges measured
on `latency.int8_range_images` train images) and times them on one 48x48 image in interleaved rounds,
so that load changes hit every variant alike. Agreement with PyTorch fp32 is measured on val images of a
prepared folder (`--prepared`, default data/prepared; synthetic faces when there is none). Speed-ups are
against PyTorch eager and against ONNX Runtime fp32 (the steadier reference on a noisy machine) in the
same run; GFLOP/s is the model's work per image over its p50; `ships` marks the variant
`fastest_faithful` picks at `latency.min_agreement`.

Usage: .venv/bin/python scripts/bench_latency.py [--backbones clip_vit_b32 resnet18] [--threads 2]
       [--prepared DIR] [--checkpoint resnet18=PATH ...] [--fit-head 4000]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from ferbench.data.prepared import Split, load_split
from ferbench.models.backbones import build_backbone
from ferbench.models.classifier import ImageClassifier, Standardize, build_head, forward_flops, load_classifier
from ferbench.models.runtimes import agreement, batched_predictions, build_runtimes, fastest_faithful
from ferbench.models.variants import REFERENCE
from ferbench.params import load_params
from ferbench.paths import PREPARED_DIR
from ferbench.schema import Params
from ferbench.shipping.latency import range_sample_from_params, timing
from ferbench.training.embeddings import compute_embeddings
from ferbench.training.engine import Batches, Checkpointing, TrainingData, fit
from ferbench.training.settings import backbone_spec


def prepared_folder(path: Path | None, scratch: Path) -> tuple[Path, str]:
    """The prepared folder to measure int8 ranges and judge on: the given one, data/prepared, or synthetic faces."""
    if path is not None:
        return path, str(path)
    if (PREPARED_DIR / "val.npz").is_file():
        return PREPARED_DIR, str(PREPARED_DIR)
    from ferbench.constants import FER2013_CLASSES
    from ferbench.data.prepare import prepare_dataset, write_prepared
    from ferbench.data.synthetic import write_synthetic_archive

    counts = {"train": dict.fromkeys(FER2013_CLASSES, 60), "test": dict.fromkeys(FER2013_CLASSES, 10)}
    write_synthetic_archive(scratch / "faces.zip", counts, seed=0)
    data = load_params().data.model_copy(update={"val_fraction": 0.5})
    write_prepared(prepare_dataset(scratch / "faces.zip", data, 0), scratch / "prepared")
    return scratch / "prepared", "synthetic faces"


def model_for(
    name: str, params: Params, checkpoints: dict[str, Path], head_images: int, prepared: Path
) -> tuple[torch.nn.Module, str]:
    spec = backbone_spec(params, name)
    if name in checkpoints:
        return load_classifier(spec, checkpoints[name], 7), f"trained ({checkpoints[name]})"
    torch.manual_seed(0)
    backbone = build_backbone(spec.model_copy(update={"pretrained": False, "weights": None}))
    if not head_images:
        return ImageClassifier(backbone, build_head(backbone.feature_dim, 7)).eval(), "random weights"
    head, val_accuracy = fitted_head(backbone, params, prepared, head_images)
    return ImageClassifier(backbone, head).eval(), f"random trunk, head fitted on {head_images} train images " + (
        f"(val accuracy {val_accuracy:.3f})"
    )


def sample(split: Split, count: int, seed: int = 0) -> Split:
    """`count` images of a split drawn at random (a prepared split is ordered by class: its first images are
    all angry)."""
    chosen = np.sort(np.random.default_rng(seed).permutation(len(split))[:count])
    return Split(split.images[chosen], split.labels[chosen])


def fitted_head(backbone, params: Params, prepared: Path, count: int) -> tuple[torch.nn.Module, float]:
    """A standardised linear head trained, with the feature_extract recipe, on the frozen trunk's features
    of `count` train images (and judged on 1,000 val images)."""
    cpu = torch.device("cpu")
    splits = {}
    for name, size in (("train", count), ("val", 1000)):
        split = sample(load_split(prepared / f"{name}.npz"), size)  # prepared splits are ordered by class
        splits[name] = Batches(torch.from_numpy(split.images), torch.from_numpy(split.labels))
    features = compute_embeddings(backbone, splits, False, params.embed.batch_size, cpu)
    data = {
        name: Batches(torch.from_numpy(features[name].astype("float32")), splits[name].labels, features=True)
        for name in splits
    }
    train = data["train"].inputs[0]
    head = torch.nn.Sequential(Standardize(train.mean(0), train.std(0)), build_head(backbone.feature_dim, 7))
    recipe = params.feature_extract.recipe.model_copy(update={"flip": False})
    with tempfile.TemporaryDirectory() as scratch:
        result = fit(head, TrainingData(data["train"], data["val"], 7), recipe, Checkpointing(Path(scratch) / "h.pt"))
    return head.eval(), result.best_val_accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--backbones",
        nargs="+",
        default=["clip_vit_b32", "resnet18"],
        help="names under params.yaml: backbones (default: clip_vit_b32 resnet18)",
    )
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for every runtime (default 2)")
    parser.add_argument("--runs", type=int, default=100, help="timed runs per variant and round (default 100)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median round counts")
    parser.add_argument(
        "--prepared",
        type=Path,
        default=None,
        help="prepared folder (train.npz for ranges, val.npz for agreement); default "
        "data/prepared, else generated synthetic faces",
    )
    parser.add_argument("--agreement-images", type=int, default=1000, help="val images judged, drawn at random (1000)")
    parser.add_argument(
        "--fit-head",
        type=int,
        default=0,
        metavar="N",
        help="give each backbone without --checkpoint a head trained on its random trunk's features of N train "
        "images (default 0: random head)",
    )
    parser.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="trained checkpoint for a backbone (repeatable); default: random weights",
    )
    args = parser.parse_args()
    checkpoints = {}
    for item in args.checkpoint:
        name, separator, path = item.partition("=")
        if not separator or not Path(path).is_file():
            parser.error(f"--checkpoint {item!r}: use NAME=PATH with an existing checkpoint file")
        checkpoints[name] = Path(path)
    torch.set_num_threads(args.threads)
    params = load_params()
    with tempfile.TemporaryDirectory() as scratch:
        prepared, source = prepared_folder(args.prepared, Path(scratch))
        ranges = range_sample_from_params(params, load_split(prepared / "train.npz"))
        val = load_split(prepared / "val.npz")
        judged = sample(val, args.agreement_images, seed=1).images
        print(
            f"CPU, batch 1, {args.threads} threads, {args.runs} runs x {args.rounds} rounds (median round); "
            f"static int8 ranges measured on {len(ranges.images)} train images ({ranges.method}); "
            f"agreement with torch fp32 on {len(judged)} random val images of {source}"
        )
        print(
            f"{'backbone':<14} {'GFLOPs':>7} {'variant':<17} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'FPS':>7}"
            f" {'x eager':>8} {'x ORT32':>8} {'GFLOP/s':>8} {'agreement':>9}"
        )
        for name in args.backbones:
            model, weights = model_for(name, params, checkpoints, args.fit_head, prepared)
            gflops = forward_flops(model) / 1e9
            folder = Path(scratch) / name
            runtimes = build_runtimes(model, folder, args.threads, ranges)
            reference = batched_predictions(runtimes[REFERENCE], judged)
            agreements = {
                variant: agreement(reference, batched_predictions(runtime, judged))
                for variant, runtime in runtimes.items()
            }
            image = judged[:1]
            rounds: dict[str, list[dict[str, float]]] = {variant: [] for variant in runtimes}
            for _ in range(args.rounds):
                for variant in runtimes:
                    call = runtimes[variant].logits
                    rounds[variant].append(timing(lambda call=call, image=image: call(image), 10, args.runs))
            results = {
                variant: sorted(rows, key=lambda row: row["p50_ms"])[len(rows) // 2] for variant, rows in rounds.items()
            }
            ships = fastest_faithful(
                {variant: results[variant]["p50_ms"] for variant in runtimes}, agreements, params.latency.min_agreement
            )
            eager, ort = results[REFERENCE]["p50_ms"], results["onnx_fp32"]["p50_ms"]
            print(f"# {name}: {weights}")
            for variant, result in results.items():
                p50 = result["p50_ms"]
                mark = "  <- ships" if variant == ships else ""
                print(
                    f"{name:<14} {gflops:>7.2f} {variant:<17} {p50:>8.2f} {result['p90_ms']:>8.2f} "
                    f"{result['p99_ms']:>8.2f} {result['fps']:>7.1f} {eager / p50:>7.2f}x {ort / p50:>7.2f}x "
                    f"{gflops / (p50 / 1000):>8.0f} {agreements[variant]:>9.4f}{mark}"
                )


if __name__ == "__main__":
    main()
