"""Distillation, measured: the same student trained on the same schedule with the teachers' soft labels
cached on the clean images (`distill.targets: cached`), computed on every augmented batch (`online`),
or without teachers (`none`), on a workspace's real data and teachers. Results: docs/results.md.

    .venv/bin/python scripts/bench_distill.py runs/real-cpu --modes cached online --epochs 30

The workspace must have run `dvc repro` up to its teachers (`teach@<teacher>` for the cached soft labels,
their checkpoints for the online ones). Each mode trains from the same seed with the workspace's params
(`distill.students.<student>` merged into `train`, `distill.temperature` and `kd_weight`; a warm-started
student starts from its teacher's weights in every mode, `none` too), then prints val
and test accuracy (with the TTA views too), leakage-free test accuracy, and the training time per epoch.
Modes run one after another (never two timed runs at once: on 2 cores they slow each other several-fold).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from ferbench.data.prepared import leakage_free_test_mask
from ferbench.models.backbones import build_backbone
from ferbench.models.classifier import ImageClassifier, build_head, with_tta
from ferbench.params import load_params
from ferbench.schema import Params
from ferbench.training.embeddings import load_device_splits
from ferbench.training.engine import Checkpointing, TrainingData, fit, mixed_precision, predict_logits
from ferbench.training.settings import backbone_spec
from ferbench.training.teachers import load_teaching, warm_start_weights

MODES = ("cached", "online", "none")


def student_model(params: Params, name: str) -> ImageClassifier:
    backbone = build_backbone(backbone_spec(params, name))
    return ImageClassifier(backbone, build_head(backbone.feature_dim, len(params.data.classes)))


def accuracy(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    hits = logits.argmax(1) == labels
    return float((hits if mask is None else hits[mask]).float().mean())


def run_mode(mode: str, params: Params, workspace: Path, student: str, epochs: int | None, scratch: Path) -> dict:
    """Train the student once in `mode` and measure it."""
    device = torch.device("cpu")
    prepared = workspace / "data/prepared"
    splits = load_device_splits(prepared, device)
    recipe = params.student_for(student).recipe
    if epochs is not None:
        recipe = recipe.model_copy(update={"epochs": epochs, "warmup_epochs": min(recipe.warmup_epochs, epochs / 2)})
    distillation = None
    if mode != "none":
        teaching = load_teaching(params, prepared, student, root=workspace, targets=mode)
        distillation = teaching.distillation(splits["train"], device, mixed_precision(recipe.precision, device))
    torch.manual_seed(params.seed)
    model = student_model(params, student)
    initial = warm_start_weights(params, student, workspace)  # every mode starts where the pipeline's student does
    if initial is not None:
        model.load_state_dict(initial)
    model = model.to(device)
    data = TrainingData(splits["train"], splits["val"], len(params.data.classes), distillation)
    start = time.perf_counter()
    result = fit(model, data, recipe, Checkpointing(scratch / f"{mode}.pt"), description=f"{student} {mode}")
    seconds = time.perf_counter() - start
    model.load_state_dict(torch.load(scratch / f"{mode}.pt", weights_only=True)["state_dict"])
    views = with_tta(model, params.tta)
    leakage_free = torch.from_numpy(leakage_free_test_mask(prepared, len(splits["test"])))
    row = {"mode": mode, "epochs": recipe.epochs, "warm_start": initial is not None, "best_epoch": result.best_epoch}
    for split in ("val", "test"):
        labels = splits[split].labels
        plain = predict_logits(model, splits[split], recipe.eval_batch_size)
        averaged = predict_logits(views, splits[split], max(1, recipe.eval_batch_size // 2))
        row[split] = accuracy(plain, labels)
        row[f"{split}_tta"] = accuracy(averaged, labels)
        if split == "test":
            row["test_leakage_free"] = accuracy(plain, labels, leakage_free)
    row["train_seconds_per_epoch"] = round(len(splits["train"]) / result.train_images_per_second, 1)
    row["wall_seconds"] = round(seconds, 1)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workspace", type=Path, help="a workspace that ran its teachers (e.g. runs/real-cpu)")
    parser.add_argument("--student", help="a backbone under distill.students (default: the first)")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=["cached", "online"], help="what to compare")
    parser.add_argument("--epochs", type=int, help="epochs per run (default: the student's schedule)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    parser.add_argument("--out", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    params = load_params(args.workspace / "params.yaml")
    student = args.student or next(iter(params.distill.students), None)
    if student is None:
        parser.error(f"{args.workspace}/params.yaml has no distill.students")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-distill-") as scratch:  # the runs' checkpoints, then gone
        for mode in args.modes:
            rows.append(run_mode(mode, params, args.workspace, student, args.epochs, Path(scratch)))
            print(json.dumps(rows[-1]), flush=True)
    print(f"\n{student}, teachers {', '.join(params.distill.teachers)}; {torch.get_num_threads()} threads")
    print("| targets | epochs | val | val TTA | test | test TTA | leakage-free test | s/epoch |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['mode']} | {row['epochs']} | {row['val']:.4f} | {row['val_tta']:.4f} | {row['test']:.4f} | "
            f"{row['test_tta']:.4f} | {row['test_leakage_free']:.4f} | {row['train_seconds_per_epoch']} |"
        )
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
