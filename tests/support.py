"""Helpers the tests share (imported as `tests.support`; the fixtures are in conftest.py): small archives and
model folders built in temporary folders, settings from params.yaml read when first asked for; nothing is
downloaded."""

from __future__ import annotations

import atexit
import functools
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ferbench.constants import FER2013_CLASSES
from ferbench.data.synthetic import write_synthetic_archive
from ferbench.params import load_overrides, load_params, merge_overrides
from ferbench.schema import NO_AUGMENT, Augment, CandidateTraining, Data, FeatureExtract, Params, Recipe
from ferbench.serving.faces import YUNET_FILE as YUNET_CACHE_NAME
from ferbench.serving.faces import cache_folder
from ferbench.specs import BackboneSpec, TTAConfig
from ferbench.training.settings import RunSettings
from ferbench.workflow.workspace import commit_all, local_path, python_env, remote_folder

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# This machine's real files, where it has them: the FER-2013 zip named by the git-ignored params-local.yaml
# (data.archive), and a YuNet model in ferbench's cache (where the app keeps its download). Absent: tests skip.
REAL_ARCHIVE = local_path("data", "archive") or PROJECT_ROOT / "params-local.yaml: data.archive"
YUNET_FILE = cache_folder() / YUNET_CACHE_NAME
needs_yunet = pytest.mark.skipif(not YUNET_FILE.is_file(), reason=f"{YUNET_FILE} not present (YuNet face detector)")


def cache_yunet(cache: Path) -> bool:
    """Put the local YuNet file where `ferbench.serving.faces` caches its download (point $FERBENCH_CACHE at
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
        from ferbench.serving.faces import Face

        boxes = self.frames[min(self.calls, len(self.frames) - 1)]
        self.calls += 1
        return [Face(tuple(box)) for box in boxes]

    def window(self, face, align: bool):
        from ferbench.serving.faces import box_window

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


SMALL_COUNTS = {
    "train": dict.fromkeys(FER2013_CLASSES, 40),
    "test": dict.fromkeys(FER2013_CLASSES, 12),
}


DVC_TIMEOUT_S = 1200  # the longest call, the end-to-end first `dvc repro`: about 5 min, alone or under `make test`


def dvc_env() -> dict[str, str]:
    """This interpreter's DVC, without its usage-report daemon (tests never touch the network)."""
    return {**python_env(), "DVC_NO_ANALYTICS": "1"}


def run_dvc(workspace: Path, *args: str, timeout: float = DVC_TIMEOUT_S) -> subprocess.CompletedProcess:
    """Run DVC in `workspace`, whatever it answers; a call that hangs fails the test instead of stalling the
    suite."""
    return subprocess.run(
        [sys.executable, "-m", "dvc", *args],
        cwd=workspace,
        env=dvc_env(),
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
    )


def dvc(workspace: Path, *args: str, timeout: float = DVC_TIMEOUT_S) -> str:
    """Run DVC and return its output; a failed call fails the test."""
    result = run_dvc(workspace, *args, timeout=timeout)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def link_or_copy(source: str, target: str) -> None:
    """Large files (models, prepared data, resume states, the DVC cache) as hard links: DVC removes a stage's
    outputs before it reruns it and every stage writes new files, so neither copy ever writes into them."""
    if os.path.getsize(source) >= 1 << 20 and f"{os.sep}.git{os.sep}" not in source:
        os.link(source, target)
    else:
        shutil.copy2(source, target)


def copy_workspace(workspace: Path, copy: Path) -> Path:
    """A copy of `workspace` with its own git history, DVC cache and local remote (large files hard-linked)."""
    shutil.copytree(workspace, copy, symlinks=True, copy_function=link_or_copy)
    if remote_folder(workspace).is_dir():
        shutil.copytree(remote_folder(workspace), remote_folder(copy), copy_function=link_or_copy)
    config = copy / ".dvc/config"  # committed, so that a git clone of the copy fetches from the copy's remote
    config.write_text(config.read_text().replace(str(remote_folder(workspace)), str(remote_folder(copy))))
    commit_all(copy, "its own remote")
    return copy


def changed_stages(workspace: Path) -> set[str]:
    """The stages `dvc status` names as changed."""
    status = dvc(workspace, "status")
    return {line.rstrip(":") for line in status.splitlines() if line and not line.startswith((" ", "\t"))}


def ran_stages(output: str) -> set[str]:
    """The stages a `dvc repro` or `dvc exp run` output says it ran."""
    return set(re.findall(r"Running stage '([^']+)'", output))


def e2e_overrides() -> dict:
    """`make demo`'s overrides (params-demo.yaml), made quicker for the end-to-end tests' `dvc repro`."""
    quicker = {
        "device": "cpu",  # as the sweep test pins its experiments to (`auto` is the CPU here too)
        "backbones": {"resnet18": {"input_size": 32}, "resnet34": {"input_size": 32}},  # small inputs: time
        "data": {"synthetic": SMALL_COUNTS},
        "feature_extract": {"epochs": 5},
        "finetune": {"epochs": 1},  # nothing here asserts how well it learns either
        "train": {"epochs": 2},  # and the student's; nothing here asserts how well they learn
        # the stages' share of the cores (tests/conftest.py), fewer timed runs, ONNX Runtime's variants only
        # (OpenVINO's conversion and NNCF's ranges would double what latency and deploy take here; test_latency
        # and test_inference cover them)
        "latency": {
            "threads": int(os.environ["OMP_NUM_THREADS"]),
            "warmup": 2,
            "runs": 10,
            "int8_range_images": 32,
            "variants": ["onnx_fp32", "onnx_int8", "onnx_int8_static"],
        },
    }
    return merge_overrides(load_overrides(PROJECT_ROOT / "params-demo.yaml"), quicker)


def synthetic_prepared(
    root: Path, train_per_class: int, test_per_class: int, seed: int, val_fraction: float = 0.15
) -> Path:
    """`root/prepared`: the prepare stage's output for a synthetic archive of that many faces per class."""
    from ferbench.data.prepare import prepare_dataset, write_prepared

    counts = {
        "train": dict.fromkeys(FER2013_CLASSES, train_per_class),
        "test": dict.fromkeys(FER2013_CLASSES, test_per_class),
    }
    write_synthetic_archive(root / "fer.zip", counts, seed=seed)
    result = prepare_dataset(root / "fer.zip", data_section(val_fraction=val_fraction, max_uncompressed_mb=64.0), 0)
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
    folder: Path,
    variant: str = "onnx_fp32",
    tta: object = None,
    temperature: float = 1.0,
    *,
    metrics: dict | None = None,
    latency: dict | None = None,
    calibration: dict | None = None,
    provenance: dict | None = None,
    selection: dict | None = None,
    agreement_with_fp32_on_val: dict | None = None,
    limitations: Sequence[str] = (),
    int8_ranges: object = None,
) -> Path:
    """A deployable model folder (card + export) of resnet18 at 48 px with random weights, optionally
    with test-time augmentation (a TTAConfig) inside, a calibration temperature and the card sections given
    (as the card's JSON has them)."""
    import torch

    from ferbench.models.backbones import build_backbone
    from ferbench.models.card import CardLatency, CardMetrics, Provenance, Selection
    from ferbench.models.classifier import ImageClassifier, build_head, with_tta
    from ferbench.models.variants import VARIANTS
    from ferbench.records import TemperatureScaling
    from ferbench.shipping.deploy import CardSections, FolderSources, write_model_folder

    def typed(kind, value):
        return kind.model_validate(value) if value is not None else None

    torch.manual_seed(0)
    spec = backbone_spec("resnet18", "torchvision", "resnet18", input_size=48)
    backbone = build_backbone(spec)
    model = ImageClassifier(backbone, build_head(backbone.feature_dim, len(FER2013_CLASSES))).eval()
    sections = CardSections(
        tta=tta,
        temperature=temperature,
        agreement_with_fp32_on_val=agreement_with_fp32_on_val,
        metrics=typed(CardMetrics, metrics),
        calibration=typed(TemperatureScaling, calibration),
        latency=typed(CardLatency, latency),
        provenance=typed(Provenance, provenance),
        limitations=limitations,
        selection=typed(Selection, selection),
    )
    # static int8 depends on its range images; an unknown variant is left to write_model_folder's error
    reusable = int8_ranges is None and variant in VARIANTS and bool(VARIANTS[variant].files)
    exported = _EXPORTS.get((variant, repr(tta))) if reusable else None
    sources = FolderSources(exported=exported, int8_ranges=int8_ranges)
    write_model_folder(folder, spec, with_tta(model, tta), list(FER2013_CLASSES), variant, sections, sources)
    if reusable and exported is None:
        exported = Path(tempfile.mkdtemp(dir=_exports_folder(), prefix=f"{variant}-"))
        for name in VARIANTS[variant].files:
            shutil.copyfile(folder / name, exported / name)
        _EXPORTS[(variant, repr(tta))] = exported
    return folder


# The untrained model's files exported once per test process for each variant and TTA (the weights are seeded,
# so every export is the same), copied into each later folder: an ONNX export takes seconds.
_EXPORTS: dict[tuple[str, str], Path] = {}


@functools.cache
def _exports_folder() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="ferbench-test-exports-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


# The project's params.yaml, read once through the real loader: tests build their settings from it, so no
# test repeats a default that params.yaml holds.
@functools.cache
def project_params() -> Params:
    """params.yaml as the real loader reads it, read on first use (not when a test module is imported)."""
    return load_params(PROJECT_ROOT / "params.yaml")


def data_section(**changes: object) -> Data:
    """params.yaml's `data` section with `changes` (e.g. val_fraction=0.5)."""
    return project_params().data.model_copy(update=changes)


def recipe(**changes: object) -> Recipe:
    """A training recipe: params.yaml's `finetune` section (the original study's) with `changes`; augment
    takes a mapping of the strengths that differ from none."""
    if isinstance(changes.get("augment"), Mapping):
        changes["augment"] = augment(**changes["augment"])
    return Recipe(**{**project_params().finetune.model_dump(), "augment": NO_AUGMENT}).model_copy(update=changes)


def augment(**strengths: float) -> Augment:
    """No augmentation but the given strengths."""
    return NO_AUGMENT.model_copy(update={name: float(value) for name, value in strengths.items()})


def backbone_spec(
    name: str,
    source: str,
    model: str,
    pretrained: bool = False,
    weights: str | None = None,
    input_size: int | None = None,
) -> BackboneSpec:
    return BackboneSpec(
        name=name, source=source, model=model, pretrained=pretrained, weights=weights, input_size=input_size
    )


def tta(flip: bool = False, shifts: int = 0, shift_pixels: int = 2) -> TTAConfig:
    return TTAConfig(flip=flip, shifts=shifts, shift_pixels=shift_pixels)


def card_metrics(**changes: object) -> dict:
    """A deployed card's metrics, every field set (for hand-made model folders)."""
    per_class = {name: {"images": 10, "recall": 0.6, "recall_ci95": [0.3, 0.85], "f1": 0.6} for name in FER2013_CLASSES}
    metrics = {
        "val_accuracy": 0.63,
        "train_accuracy": 0.7,
        "accuracy_gap": 0.07,
        "test_accuracy_fp32": 0.625,
        "test_images": 7178,
        "test_accuracy": 0.6244,
        "test_accuracy_ci95": [0.613, 0.636],
        "test_macro_f1": 0.6,
        "test_macro_f1_ci95": [0.58, 0.62],
        "test_leakage_free_accuracy": 0.6131,
        "test_leakage_free_accuracy_ci95": [0.601, 0.625],
        "test_leakage_free_macro_f1": 0.58,
        "test_leakage_free_macro_f1_ci95": [0.56, 0.6],
        "test_leakage_free_images": 6610,
        "test_per_class": per_class,
    }
    return {**metrics, **changes}


def card_latency(**changes: object) -> dict:
    """A deployed card's latency record."""
    return {
        "threads": 2,
        "batch_size": 1,
        "p50_ms": 12.5,
        "p90_ms": 13.0,
        "p99_ms": 14.0,
        "mean_ms": 12.7,
        "fps": 80.0,
        **changes,
    }


def card_calibration() -> dict:
    """A deployed card's calibration record."""
    split = {"ece": 0.1, "nll": 1.2, "ece_scaled": 0.05, "nll_scaled": 1.1}
    return {"temperature": 1.0, "fitted_on": "val", "ece_bins": 15, "val": split, "test": split}


def card_provenance(source: str = "archive", **changes: object) -> dict:
    """A card's provenance: where the data came from, the code revision, the params of the weights."""
    data = {"source": source, "archive_sha256": "0" * 64, "archive_bytes": 1000, "images": {"train": 10, "test": 5}}
    training = {"seed": 42, "training": {"epochs": 3}, "trainable": "all", "code_revision": "abc1234"}
    return {
        "data": data,
        "git_revision": "abc1234",
        "created": "2026-12-01T00:00:00+00:00",
        "training": training,
        "shipping": {"select.tta": "auto", "select.tta_min_gain": 0.003, "latency.min_agreement": 0.99},
        **changes,
    }


def train(model, train_data, val_data, recipe, num_classes: int, checkpoint: Path, **options):
    """`ferbench.training.engine.fit` on two splits, keeping the best weights in `checkpoint`; `resume`
    (a ResumeFile) and the parallel settings go to their bundles, the rest (log_epoch, description) as is."""
    from ferbench.training.engine import Checkpointing, Parallel, TrainingData, fit

    parallel = {key: options.pop(key) for key in ("group", "seed", "sync_batchnorm") if key in options}
    checkpointing = Checkpointing(checkpoint, options.pop("checkpoint_metadata", {}), options.pop("resume", None))
    data = TrainingData(train_data, val_data, num_classes)
    return fit(model, data, recipe, checkpointing, Parallel(**parallel), **options)


def run_settings(prepared: Path, views: TTAConfig | None = None, seed: int = 0) -> RunSettings:
    """What a training stage shares, on the CPU, one process, for a prepared folder."""
    return RunSettings(list(FER2013_CLASSES), torch.device("cpu"), seed, prepared, False, views or tta())


def feature_extract_section(**changes: object) -> FeatureExtract:
    """params.yaml's feature_extract section with `changes`."""
    return project_params().feature_extract.model_copy(update=changes)


def candidate_training(**changes: object) -> CandidateTraining:
    """params.yaml's train section (no candidate's overrides) with `changes`; augment as in `recipe`."""
    if isinstance(changes.get("augment"), Mapping):
        changes["augment"] = augment(**changes["augment"])
    section = CandidateTraining(**project_params().train.model_dump(exclude={"candidates"}))
    return section.model_copy(update=changes)


def predict_whole_images(paths: Sequence[Path], model: Path, *options: object) -> int:
    """The predict CLI on whole images (no face detection), one thread: its exit status."""
    from ferbench.serving import predict

    return predict.main(
        [*map(str, paths), "--model", str(model), "--whole-image", "--threads", "1", *map(str, options)]
    )
