"""The GPU path in one command: the original study's backbones through ferbench's own training engine on a
GPU, their speed, a short real-data run, and the wall time the full protocol would take there.

Two steps (README, "On a GPU"):

    .venv/bin/python scripts/gpu_check.py prepare   # here: the wheels a GPU image lacks, compact real data in .gpu/
    bash scripts/gpu_check.sh                       # there: installs the wheels, runs `gpu_check.py run`

`prepare` downloads the wheels of the pure-Python packages ferbench needs that a CUDA image with torch,
torchvision, timm, transformers and onnxruntime usually lacks (pydantic and what it needs), and writes
`.gpu/data/`: a train subset and the whole val and test split of the prepared FER-2013 (compressed npz),
with the full split sizes; it prints every size against the 64 MiB a device call may carry.

`run` writes `gpu_check.json` and `gpu_check.md` to `--out`:
- per backbone (params.yaml's and params-gpu.yaml's, at their input size, weights random: speed does not
  depend on them, and a machine without network cannot fetch them): fine-tune throughput (images/s) and
  peak GPU memory at the protocol's batch size through `ferbench.training.engine.fit` (on-device
  augmentation, bf16 autocast, the protocol's optimizer and loss); frozen-feature (embed) throughput
  through `compute_embeddings`; achieved TFLOP/s from the model's FLOP count (a training step is about
  three forward passes) and its share of the GPU's dense bf16 peak;
- the distillation step of params-gpu.yaml's student: its training images/s with the teachers' cached soft
  labels and with the teachers run on every batch (`distill.targets: online`);
- a short real-data run: resnet18 (random init) fine-tuned on the carried FER-2013 subset for
  `--real-epochs`, its val and test accuracy, and the ONNX export of the GPU-trained model agreeing with
  PyTorch on the CPU;
- the projected wall time of `dvc repro` with params.yaml (the original study's protocol) and with
  params-gpu.yaml, stage by stage, from those throughputs.
Every step that fails is recorded with its error and the others still run. With `--device cpu` and tiny
sizes the same code runs in seconds (tests/test_gpu_check.py), so the check cannot rot between GPU loans.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ferbench.data.prepared import PREPARED_SPLITS, Split, load_split
from ferbench.models.backbones import build_backbone
from ferbench.models.classifier import ImageClassifier, build_head, forward_flops
from ferbench.models.export import export_onnx, onnx_logits, onnx_session
from ferbench.params import load_params, load_params_with
from ferbench.paths import PREPARED_DIR, PROJECT_ROOT
from ferbench.schema import Params
from ferbench.specs import BackboneSpec
from ferbench.training.embeddings import compute_embeddings
from ferbench.training.engine import Batches, Checkpointing, Distillation, TrainingData, fit, predict_logits
from ferbench.training.settings import backbone_spec, resolve_device, tune_for
from ferbench.training.teachers import CachedTargets, OnlineTargets

DEVICE_CALL_LIMIT_MIB = 64  # what one call of the GPU machine may carry: working tree and carried folders
WHEELS = ("pydantic", "pydantic-core", "annotated-types", "typing-inspection", "typing-extensions")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
DEFAULT_TRAIN_SUBSET = 12_000  # with all of val and test, about 47 MiB compressed
COUNTS_FILE = "counts.json"
# Dense bf16 tensor-core peaks (TFLOP/s) from the vendors' data sheets, matched on the device name.
BF16_PEAK_TFLOPS = {"H200": 989.4, "H100": 989.4, "A100": 312.0, "L40S": 362.1, "L4": 121.0, "A10": 125.0}


def project_params() -> tuple[Params, Params]:
    """params.yaml (the original study's protocol) and params.yaml with params-gpu.yaml merged in."""
    protocol = load_params(PROJECT_ROOT / "params.yaml")
    return protocol, load_params_with(PROJECT_ROOT / "params.yaml", PROJECT_ROOT / "params-gpu.yaml")


# ---------------------------------------------------------------------------------------------------- prepare


def mib(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 2**20


def download_wheels(folder: Path) -> None:
    """The wheels of WHEELS at the versions installed here, for CPython 3.12 on x86-64 Linux."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in WHEELS:
        version = importlib.metadata.version(name)
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"]
        command += ["--python-version", "3.12", "--implementation", "cp", "-d", str(folder), f"{name}=={version}"]
        command += [part for platform_tag in PLATFORMS for part in ("--platform", platform_tag)]
        subprocess.run(command, check=True)


def write_compact_data(prepared: Path, folder: Path, train_images: int, seed: int) -> dict[str, Any]:
    """A random train subset and all of val and test, compressed, with the full split sizes."""
    folder.mkdir(parents=True, exist_ok=True)
    counts: dict[str, Any] = {}
    for name in PREPARED_SPLITS:
        split = load_split(prepared / f"{name}.npz")
        counts[name] = len(split)
        if name == "train" and train_images < len(split):
            keep = np.sort(np.random.default_rng(seed).permutation(len(split))[:train_images])
            split = Split(split.images[keep], split.labels[keep])
        with (folder / f"{name}.npz").open("wb") as handle:
            np.savez_compressed(handle, images=split.images, labels=split.labels)
    counts["train_carried"] = min(train_images, counts["train"])
    counts["source"] = str(prepared)
    (folder / COUNTS_FILE).write_text(json.dumps(counts, indent=2) + "\n")
    return counts


def working_tree_mib() -> float:
    """Tracked files and untracked ones git does not ignore: what a device call sends besides `carry`."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    paths = [PROJECT_ROOT / name for name in listed.stdout.splitlines()]
    return sum(path.stat().st_size for path in paths if path.is_file()) / 2**20


def prepare(args: argparse.Namespace) -> None:
    prepared = args.prepared or next(
        (
            path
            for path in (PROJECT_ROOT / "runs/real-cpu" / PREPARED_DIR, PROJECT_ROOT / PREPARED_DIR)
            if path.is_dir()
        ),
        None,
    )
    if prepared is None or not (prepared / "train.npz").is_file():
        raise SystemExit(
            "gpu_check: error: no prepared FER-2013 found (runs/real-cpu/data/prepared, data/prepared); run "
            "`make real` (or `dvc repro prepare`) first, or pass --prepared DIR"
        )
    out = args.out
    if not args.skip_wheels:
        download_wheels(out / "wheels")
    counts = write_compact_data(prepared, out / "data", args.train_images, args.seed)
    print(
        f"gpu_check: {prepared}: train {counts['train']:,} (carrying {counts['train_carried']:,}), "
        f"val {counts['val']:,}, test {counts['test']:,}"
    )
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        print(f"  {path.relative_to(out.parent)}  {mib(path):6.2f} MiB")
    carried, tree = mib(out), working_tree_mib()
    print(
        f"gpu_check: {out.name} {carried:.1f} MiB + working tree {tree:.1f} MiB = {carried + tree:.1f} MiB "
        f"of the {DEVICE_CALL_LIMIT_MIB} MiB a device call may carry"
    )
    if carried + tree > DEVICE_CALL_LIMIT_MIB:
        raise SystemExit(f"gpu_check: error: too large to carry; lower --train-images (now {args.train_images})")


# ---------------------------------------------------------------------------------------------------- run


class Report:
    """The JSON record; `step` runs one part and records its error instead of stopping the check."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {"errors": {}}

    def step(self, name: str, work: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        print(f"gpu_check: {name} ...", flush=True)
        try:
            result = work()
        except Exception as exc:  # any failure of one part: recorded, and the check goes on
            last = traceback.format_exception_only(type(exc), exc)[-1].strip()
            self.data["errors"][name] = last[:500]
            print(f"gpu_check: {name} failed: {last[:500]}", flush=True)
            return None
        print(f"gpu_check: {name} done in {time.perf_counter() - start:.1f} s", flush=True)
        return result


def environment(device: torch.device) -> dict[str, Any]:
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": str(device),
        "date": time.strftime("%Y-%m-%d"),
    }
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        info |= {
            "gpu": properties.name,
            "gpu_memory_gib": round(properties.total_memory / 2**30, 1),
            "capability": f"{properties.major}.{properties.minor}",
            "cuda": torch.version.cuda,
            "bf16_peak_tflops": next((peak for key, peak in BF16_PEAK_TFLOPS.items() if key in properties.name), None),
        }
    else:
        info |= {"gpu": None, "bf16_peak_tflops": None}
    return info


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_split(split: Split, count: int, device: torch.device) -> Batches:
    return Batches(torch.from_numpy(split.images[:count]).to(device), torch.from_numpy(split.labels[:count]).to(device))


def classifier(spec: BackboneSpec, device: torch.device) -> ImageClassifier:
    torch.manual_seed(0)
    backbone = build_backbone(spec)
    return ImageClassifier(backbone, build_head(backbone.feature_dim, 7)).to(device)


def measure_backbone(spec: BackboneSpec, protocol: Params, data: dict[str, Split], args: argparse.Namespace) -> dict:
    """Fine-tune and embed throughput of one backbone, its peak GPU memory and its achieved TFLOP/s."""
    device, batch = args.device, args.batch_size or protocol.finetune.batch_size
    model = classifier(spec, device)
    flops = forward_flops(model)
    recipe = protocol.finetune.model_copy(update={"epochs": 1, "batch_size": batch})
    check = device_split(data["val"], 2 * batch, device)
    warm_up = device_split(data["train"], 3 * batch, device)  # cuDNN's algorithm search, the allocator
    timed = device_split(data["train"], args.steps * batch, device)
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as folder:
        scratch = Path(folder)
        fit(model, TrainingData(warm_up, check, 7), recipe, Checkpointing(scratch / "warm.pt"), description="warm-up")
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        training = TrainingData(timed, check, 7)
        result = fit(model, training, recipe, Checkpointing(scratch / "m.pt"), description=spec.name)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    del model
    embed_images = device_split(data["train"], args.embed_images, device)
    backbone = build_backbone(spec)
    compute_embeddings(backbone, {"train": device_split(data["train"], 64, device)}, False, 64, device)  # warm-up
    sync(device)
    start = time.perf_counter()
    compute_embeddings(backbone, {"train": embed_images}, False, protocol.embed.batch_size, device)
    embed_ips = len(embed_images) / (time.perf_counter() - start)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    train_ips = result.train_images_per_second
    return {
        "input_size": backbone.input_size,
        "parameters_m": round(sum(p.numel() for p in backbone.trunk.parameters()) / 1e6, 1),
        "gflops_per_image": round(flops / 1e9, 3),
        "batch_size": batch,
        "finetune_images_per_second": round(train_ips, 1),
        "finetune_tflops": round(3 * flops * train_ips / 1e12, 2),
        "peak_memory_gib": None if peak is None else round(peak, 2),
        "embed_images_per_second": round(embed_ips, 1),
        "embed_tflops": round(flops * embed_ips / 1e12, 2),
    }


def measure_named(name: str, protocol: Params, gpu_preset: Params, data: dict[str, Split], args) -> dict:
    """`measure_backbone` for a backbone of params.yaml or params-gpu.yaml, without its weights."""
    spec = backbone_spec(protocol if name in protocol.backbones else gpu_preset, name)
    spec = spec.model_copy(update={"pretrained": False, "weights": None})
    if args.input_size:
        spec = spec.model_copy(update={"input_size": args.input_size})
    return measure_backbone(spec, protocol, data, args)


def measure_distillation(student: str, gpu_preset: Params, data: dict[str, Split], args: argparse.Namespace) -> dict:
    """A distilled student's training speed on the device (params-gpu.yaml's recipe and batch): with the
    teachers' cached soft labels (a lookup per step) and with online ones (every teacher runs on each batch),
    through `fit` like `distill@<student>`."""
    device = args.device
    recipe = gpu_preset.student_for(student).recipe
    batch = args.batch_size or recipe.batch_size
    recipe = recipe.model_copy(update={"epochs": 1, "batch_size": batch, "warmup_epochs": 0.0})
    names = args.distill_teachers or list(gpu_preset.distill.teachers)
    teachers = []
    for name in names:
        spec = backbone_spec(gpu_preset, name).model_copy(update={"pretrained": False, "weights": None})
        if args.input_size:
            spec = spec.model_copy(update={"input_size": args.input_size})
        teachers.append(classifier(spec, device).eval())
    spec = backbone_spec(gpu_preset, student).model_copy(update={"pretrained": False, "weights": None})
    check = device_split(data["val"], 2 * batch, device)
    timed = device_split(data["train"], args.steps * batch, device)
    warm_up = device_split(data["train"], 3 * batch, device)
    temperature, weight = gpu_preset.distill.temperature, gpu_preset.distill.kd_weight

    def uniform(split: Batches) -> CachedTargets:  # cached soft labels: one row per image of the split
        return CachedTargets(torch.full((len(split), 7), 1 / 7, device=device))

    result: dict[str, Any] = {"student": student, "teachers": names, "batch_size": batch}
    for mode in ("cached", "online"):
        online = OnlineTargets(teachers, temperature, bf16=True)
        distillation = Distillation(uniform(timed) if mode == "cached" else online, weight, temperature)
        model = classifier(spec, device)
        warm = Distillation(uniform(warm_up) if mode == "cached" else online, weight, temperature)
        with tempfile.TemporaryDirectory(prefix="gpu-check-distill-") as folder:
            scratch = Path(folder)
            fit(
                model,
                TrainingData(warm_up, check, 7, warm),
                recipe,
                Checkpointing(scratch / "warm.pt"),
                description="warm-up",
            )
            timing = fit(
                model,
                TrainingData(timed, check, 7, distillation),
                recipe,
                Checkpointing(scratch / "s.pt"),
                description=f"distill {mode}",
            )
        result[f"{mode}_images_per_second"] = round(timing.train_images_per_second, 1)
    return result


def real_data_run(protocol: Params, data: dict[str, Split], args: argparse.Namespace) -> dict:
    """resnet18 fine-tuned on the carried FER-2013 subset on the device; its ONNX export judged on the CPU."""
    device = args.device
    spec = backbone_spec(protocol, "resnet18").model_copy(
        update={"pretrained": False, "weights": None, "input_size": args.input_size}
    )
    model = classifier(spec, device)
    recipe = protocol.finetune.model_copy(update={"epochs": args.real_epochs})
    train = device_split(data["train"], args.real_train_images or len(data["train"]), device)
    val, test = (device_split(data[name], len(data[name]), device) for name in ("val", "test"))
    images = data["test"].images[: args.onnx_images]
    with tempfile.TemporaryDirectory(prefix="gpu-check-real-") as folder:
        scratch = Path(folder)
        start = time.perf_counter()
        training = TrainingData(train, val, 7)
        result = fit(model, training, recipe, Checkpointing(scratch / "resnet18.pt"), description="real")
        seconds = time.perf_counter() - start
        test_accuracy = float((predict_logits(model, test, 512).argmax(1) == test.labels).float().mean())
        model = model.float().cpu().eval()
        with torch.no_grad():
            reference = model(torch.from_numpy(images)).numpy()
        exported = onnx_logits(onnx_session(export_onnx(model, scratch / "model.onnx"), threads=4), images)
    return {
        "backbone": "resnet18 (random init: no weights can be fetched on the device)",
        "input_size": model.preprocess.input_size,
        "train_images": len(train),
        "epochs": args.real_epochs,
        "seconds": round(seconds, 1),
        "best_epoch": result.best_epoch,
        "val_accuracy": round(result.best_val_accuracy, 4),
        "test_accuracy_last_epoch": round(test_accuracy, 4),
        "onnx_images": len(images),
        "onnx_agreement_with_torch_cpu": float((exported.argmax(1) == reference.argmax(1)).mean()),
        "onnx_max_abs_logit_difference": float(np.abs(exported - reference).max()),
    }


def project(params: Params, speeds: dict[str, dict], counts: dict[str, int]) -> dict[str, Any]:
    """Seconds per stage of `dvc repro` with `params` from the measured speeds: training images over the
    fine-tune throughput (the frozen-trunk speed for `trainable: head`), and every evaluation pass over the
    embed throughput. CPU stages (latency, deploy, select, report), process start-up and torch.compile are
    not included; the head on cached features takes seconds."""
    train, val, test = counts["train"], counts["val"], counts["test"]
    views = 1 + int(params.tta.flip) + params.tta.shifts
    stages: dict[str, float | None] = {}

    def training(name: str, epochs: int, frozen_trunk: bool) -> float | None:
        speed = speeds.get(name)
        if speed is None:
            return None
        step = speed["embed_images_per_second"] if frozen_trunk else speed["finetune_images_per_second"]
        evaluation = epochs * val + train + val + test + views * (val + test)
        return epochs * train / step + evaluation / speed["embed_images_per_second"]

    for name in params.backbones:
        speed = speeds.get(name)
        embedded = (2 if params.feature_extract.flip else 1) * train + val + test
        stages[f"embed@{name}"] = None if speed is None else embedded / speed["embed_images_per_second"]
        stages[f"finetune@{name}"] = training(name, params.finetune_for(name).epochs, False)
    for name in params.train.candidates:
        run = params.train_for(name)
        stages[f"train@{name}"] = training(name, run.epochs, run.trainable == "head")
    for name in params.distill.teachers:
        speed = speeds.get(name)
        every_view = views * (train + val + test)  # the teacher over every image in every TTA view, once
        stages[f"teach@{name}"] = None if speed is None else every_view / speed["embed_images_per_second"]
    for name in params.distill.students:  # cached soft labels: a student trains at its own speed
        stages[f"distill@{name}"] = training(name, params.student_for(name).epochs, False)
    known = [seconds for seconds in stages.values() if seconds is not None]
    return {
        "stages_minutes": {name: None if s is None else round(s / 60, 1) for name, s in stages.items()},
        "total_minutes": round(sum(known) / 60, 1),
        "complete": len(known) == len(stages),
    }


def markdown(report: dict[str, Any]) -> str:
    env = report.get("environment", {})
    lines = [
        f"# ferbench GPU check: {env.get('gpu') or env.get('device')}",
        "",
        f"{env.get('date')}, torch {env.get('torch')}, CUDA {env.get('cuda', '-')}, Python {env.get('python')}; "
        f"dense bf16 peak {env.get('bf16_peak_tflops') or 'unknown'} TFLOP/s. Command: `bash scripts/gpu_check.sh`.",
        "",
        "| backbone | px | params M | GFLOP/img | fine-tune img/s | TFLOP/s (% peak) | peak GiB | embed img/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    peak = env.get("bf16_peak_tflops")
    for name, row in report.get("backbones", {}).items():
        if row is None:
            lines.append(f"| {name} | failed: {report['errors'].get('backbone ' + name, '')} |  |  |  |  |  |  |")
            continue
        share = f" ({100 * row['finetune_tflops'] / peak:.0f}%)" if peak else ""
        lines.append(
            f"| {name} | {row['input_size']} | {row['parameters_m']} | {row['gflops_per_image']} | "
            f"{row['finetune_images_per_second']:,.0f} | {row['finetune_tflops']}{share} | "
            f"{row['peak_memory_gib'] if row['peak_memory_gib'] is not None else '-'} | "
            f"{row['embed_images_per_second']:,.0f} |"
        )
    real = report.get("real_data")
    if real:
        lines += [
            "",
            f"Real data: {real['backbone']} at {real['input_size']} px, {real['train_images']:,} FER-2013 train "
            f"images, {real['epochs']} epochs in {real['seconds']} s: val {real['val_accuracy']:.1%} (best epoch "
            f"{real['best_epoch']}), test {real['test_accuracy_last_epoch']:.1%}; ONNX export on the CPU agrees "
            f"on {real['onnx_agreement_with_torch_cpu']:.2%} of {real['onnx_images']} test images (max logit "
            f"difference {real['onnx_max_abs_logit_difference']:.2g}).",
        ]
    for row in report.get("distillation") or []:
        if row:
            lines += [
                "",
                f"Distillation, {row['student']} from {', '.join(row['teachers'])} (batch {row['batch_size']}): "
                f"{row['cached_images_per_second']:,.0f} images/s with cached soft labels, "
                f"{row['online_images_per_second']:,.0f} with the teachers run on every batch.",
            ]
    for key, title in (("protocol", "params.yaml (the original study)"), ("gpu_preset", "params-gpu.yaml")):
        projection = report.get("projection", {}).get(key)
        if projection:
            lines += [
                "",
                f"Projected GPU time of `dvc repro` with {title}: {projection['total_minutes']} min"
                + ("" if projection["complete"] else " (some stages could not be measured)"),
            ]
    if report.get("errors"):
        lines += ["", "Failed steps: " + "; ".join(f"{name}: {error}" for name, error in report["errors"].items())]
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    args.device = resolve_device(args.device)
    tune_for(args.device)
    report = Report()
    report.data["environment"] = environment(args.device)
    protocol, gpu_preset = project_params()
    data = {name: load_split(args.data / f"{name}.npz") for name in PREPARED_SPLITS}
    counts_file = args.data / COUNTS_FILE
    counts = json.loads(counts_file.read_text()) if counts_file.is_file() else {n: len(s) for n, s in data.items()}
    report.data["data"] = {name: counts[name] for name in PREPARED_SPLITS} | {"carried_train": len(data["train"])}
    names = args.backbones or list(dict.fromkeys([*protocol.backbones, *gpu_preset.backbones]))
    speeds: dict[str, dict | None] = {}
    for name in names:
        speeds[name] = report.step(
            f"backbone {name}", lambda name=name: measure_named(name, protocol, gpu_preset, data, args)
        )
    report.data["backbones"] = speeds
    report.data["distillation"] = [
        report.step(f"distillation {name}", partial(measure_distillation, name, gpu_preset, data, args))
        for name in gpu_preset.distill.students
    ]
    report.data["real_data"] = report.step("real-data run", partial(real_data_run, protocol, data, args))
    measured = {name: row for name, row in speeds.items() if row is not None}
    report.data["projection"] = {
        "protocol": report.step("projection, params.yaml", partial(project, protocol, measured, counts)),
        "gpu_preset": report.step("projection, params-gpu.yaml", partial(project, gpu_preset, measured, counts)),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(json.dumps(report.data, indent=2) + "\n")
    (args.out / "gpu_check.md").write_text(markdown(report.data))
    print(markdown(report.data))
    return 1 if report.data["errors"] else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    making = commands.add_parser("prepare", help="here: the wheels and the compact real data, in .gpu/")
    making.add_argument("--prepared", type=Path, help="a prepared folder (default: runs/real-cpu's, else data/'s)")
    making.add_argument("--out", type=Path, default=PROJECT_ROOT / ".gpu", help="where (default .gpu, git-ignored)")
    making.add_argument("--train-images", type=int, default=DEFAULT_TRAIN_SUBSET, help="train images to carry")
    making.add_argument("--seed", type=int, default=0, help="which train subset")
    making.add_argument("--skip-wheels", action="store_true", help="the data only (the tests use it)")
    checking = commands.add_parser("run", help="there: the check itself")
    checking.add_argument("--data", type=Path, default=PROJECT_ROOT / ".gpu" / "data", help="the carried data")
    checking.add_argument("--out", type=Path, default=Path("gpu-check"), help="where the JSON and markdown go")
    checking.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu for a dry run")
    checking.add_argument("--backbones", nargs="+", help="names (default: params.yaml's and params-gpu.yaml's)")
    checking.add_argument("--input-size", type=int, help="override every input size (dry runs)")
    checking.add_argument("--batch-size", type=int, help="fine-tune batch (default: params.yaml's finetune)")
    checking.add_argument("--steps", type=int, default=30, help="timed fine-tune steps per backbone")
    checking.add_argument("--embed-images", type=int, default=4096, help="images timed through the frozen trunk")
    checking.add_argument("--distill-teachers", nargs="+", help="teachers to time (default: params-gpu.yaml's)")
    checking.add_argument("--real-epochs", type=int, default=8, help="epochs of the real-data run")
    checking.add_argument("--real-train-images", type=int, help="train images of the real-data run (default all)")
    checking.add_argument("--onnx-images", type=int, default=1000, help="test images the ONNX export is judged on")
    args = parser.parse_args()
    if args.command == "prepare":
        prepare(args)
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
