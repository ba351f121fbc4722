"""The shipped model: `models/selected/` with its checkpoint, deployment export and model card.

The card (`model_card.json`) is what inference reads: classes, the input the model takes
(48x48 uint8 grayscale, made by `ferbench.data.decode.image_to_fer`), the preprocessing inside
the model, test-time augmentation (inside the exported graph too), the temperature that
calibrates its probabilities, the runtime and file to load, metrics, latency and why it was
chosen.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from torch import nn

from ferbench.calibration import calibration_report, reliability_table
from ferbench.data.classes import IMAGE_SIZE
from ferbench.data.prepared import Split
from ferbench.errors import FerbenchError
from ferbench.latency import (
    ONNX_FILES,
    Calibration,
    agreement,
    batched_logits,
    build_runtimes,
    fastest_faithful,
    set_threads,
)
from ferbench.metrics import classification_metrics
from ferbench.models.backbones import BackboneSpec
from ferbench.models.checkpoint import save_checkpoint
from ferbench.models.classifier import TTAClassifier, TTAConfig, load_classifier, with_tta
from ferbench.models.export import export_int8_static, export_onnx, quantize_int8

CARD_FILE = "model_card.json"
CARD_FORMAT = "ferbench-model-card/1"
RUNTIMES = {"torch_fp32": "torch", "onnx_fp32": "onnxruntime", "onnx_int8": "onnxruntime",
            "onnx_int8_static": "onnxruntime"}  # fmt: skip


def write_model_folder(
    folder: Path, spec: BackboneSpec, model: nn.Module, classes: Sequence[str], variant: str,
    checkpoint: Path | None = None, exported: Path | None = None, tta: TTAConfig | None = None,
    temperature: float = 1.0, int8_calibration: Calibration | None = None, **card_fields: Any,
) -> dict[str, Any]:  # fmt: skip
    """A deployable folder: the model file of `variant` (copied from `exported`, or exported now from
    `model`, which already carries `tta`'s wrapper when it has more than one view; static int8 needs
    `int8_calibration`), the checkpoint (given, or saved from the classifier), and the card with
    `card_fields` added."""
    if variant not in RUNTIMES:
        raise FerbenchError(f"unknown deployment variant {variant!r}; use one of {', '.join(RUNTIMES)}")
    if variant == "onnx_int8_static" and int8_calibration is None:
        raise FerbenchError("onnx_int8_static: a static int8 model needs its calibration images (train split)")
    folder.mkdir(parents=True, exist_ok=True)
    files = {"checkpoint": "model.pt", "model": ONNX_FILES.get(variant, "model.pt")}
    classifier = model.model if isinstance(model, TTAClassifier) else model
    if checkpoint is not None:
        shutil.copyfile(checkpoint, folder / files["checkpoint"])
    else:
        save_checkpoint(folder / files["checkpoint"], classifier, backbone=spec.name)
    if variant in ONNX_FILES:
        if exported is not None:
            shutil.copyfile(exported, folder / files["model"])
        elif variant == "onnx_int8_static":
            export_int8_static(model, folder / files["model"], int8_calibration.images, int8_calibration.method)
        else:
            fp32 = export_onnx(model, folder / ONNX_FILES["onnx_fp32"])
            if variant == "onnx_int8":
                quantize_int8(fp32, folder / files["model"])
                fp32.unlink()
    card = {
        "format": CARD_FORMAT,
        "backbone": spec.name,
        "spec": asdict(spec),
        "classes": list(classes),
        "input": {"dtype": "uint8", "shape": ["batch", IMAGE_SIZE, IMAGE_SIZE], "color": "grayscale",
                  "made_by": "ferbench.data.decode.image_to_fer (ITU-R 601 luma, bilinear resize to 48x48)"},
        "preprocessing": {"inside_model": True, "resize": "bilinear", "input_size": classifier.preprocess.input_size,
                          "channels": classifier.preprocess.channels, "scale": "1/255",
                          "mean": classifier.preprocess.mean.flatten().tolist(),
                          "std": classifier.preprocess.std.flatten().tolist()},
        "tta": (tta or TTAConfig()).to_card() | {"inside_model": True},
        "temperature": temperature,
        "runtime": RUNTIMES[variant],
        "variant": variant,
        "files": files,
        **({"int8_calibration": {"split": "train", "images": len(int8_calibration.images),
                                 "method": int8_calibration.method}} if variant == "onnx_int8_static" else {}),
        **card_fields,
    }  # fmt: skip
    (folder / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n")
    (folder / "MODEL_CARD.md").write_text(card_markdown(card))
    return card


@dataclass
class Deployment:
    """What `write_selected` produced: the card, and the shipped model's test reliability table (per
    confidence bin: count, mean confidence and accuracy, before and after temperature scaling)."""

    card: dict[str, Any]
    reliability: pd.DataFrame


def write_selected(
    folder: Path, spec: BackboneSpec, checkpoint: Path, classes: Sequence[str], val: Split, test: Split,
    leakage_free: np.ndarray, latency: Mapping[str, Any], selection: Mapping[str, Any], trained: Mapping[str, Any],
    threads: int, min_agreement: float, tta: TTAConfig | None = None, int8_calibration: Calibration | None = None,
) -> Deployment:  # fmt: skip
    """Export the selected checkpoint (with `tta`'s views inside the graph when given), keep its fastest
    faithful variant, fit its temperature on val, re-measure it on test, write the card."""
    set_threads(threads)
    shipped = with_tta(load_classifier(spec, checkpoint, len(classes)), tta)
    timings_key = "tta" if tta is not None and tta.enabled else None
    shutil.rmtree(folder, ignore_errors=True)
    with tempfile.TemporaryDirectory() as scratch:
        runtimes = build_runtimes(shipped, Path(scratch), threads, int8_calibration)
        val_logits = {name: batched_logits(runtime, val.images) for name, runtime in runtimes.items()}
        reference = val_logits["torch_fp32"].argmax(1)
        agreements = {name: agreement(reference, logits.argmax(1)) for name, logits in val_logits.items()}
        # the latency stage's timings (same architecture; on the TTA views when shipping TTA), this checkpoint's
        # own agreement
        measured = {name: {"p50_ms": _timings(_variant(latency, name), timings_key)["p50_ms"], "agreement": share}
                    for name, share in agreements.items()}  # fmt: skip
        variant = fastest_faithful(measured, min_agreement)
        test_logits = batched_logits(runtimes[variant], test.images)
        exported = Path(scratch) / ONNX_FILES[variant] if variant in ONNX_FILES else None
        probabilities = calibration_report({"val": (val_logits[variant], val.labels),
                                            "test": (test_logits, test.labels)})  # fmt: skip
        predictions = test_logits.argmax(1)
        deployed_test = classification_metrics(test.labels, predictions, classes)
        leakage_free_test = classification_metrics(test.labels[leakage_free], predictions[leakage_free], classes)
        card = write_model_folder(
            folder, spec, shipped, classes, variant, checkpoint=checkpoint, exported=exported, tta=tta,
            temperature=probabilities["temperature"], int8_calibration=int8_calibration,
            agreement_with_fp32_on_val=agreements,
            metrics={
                "val_accuracy": float((val_logits[variant].argmax(1) == val.labels).mean()),
                "train_accuracy": trained["train"]["accuracy"],
                "accuracy_gap": trained["overfitting"]["accuracy_gap"],
                "test_accuracy_fp32": trained["test"]["accuracy"],
                "test_accuracy": deployed_test["accuracy"],
                "test_macro_f1": deployed_test["macro_f1"],
                "test_leakage_free_accuracy": leakage_free_test["accuracy"],
                "test_leakage_free_macro_f1": leakage_free_test["macro_f1"],
                "test_leakage_free_images": int(leakage_free.sum()),
                "test_per_class_recall": deployed_test["per_class_recall"],
            },
            calibration=probabilities,
            latency={"threads": latency["threads"], "batch_size": 1,
                     **_timings(latency["variants"][variant], timings_key)},
            selection={"criterion": selection["criterion"], "reason": selection["reason"]},
        )  # fmt: skip
    before = reliability_table(test_logits, test.labels)
    after = reliability_table(test_logits, test.labels, probabilities["temperature"])
    reliability = pd.DataFrame({"bin_center": (before["bin_lower"] + before["bin_upper"]) / 2})
    for name, table in (("before", before), ("after", after)):
        for column in ("count", "confidence", "accuracy"):
            reliability[f"{column}_{name}"] = table[column]
    return Deployment(card, reliability)


def _variant(latency: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    """The latency stage's record of one variant (an error naming the fix when it was not measured)."""
    if name not in latency["variants"]:
        raise FerbenchError(f"metrics/latency: no timings for {name}; rerun `dvc repro` (the latency stage times "
                            "every variant the select stage may ship)")  # fmt: skip
    return latency["variants"][name]


def _timings(variant: Mapping[str, Any], key: str | None) -> dict[str, Any]:
    """A latency variant's batch-1 timings, or those on the TTA views."""
    timings = variant if key is None else variant.get(key)
    if timings is None:
        raise FerbenchError("metrics/latency: no timings with TTA; rerun `dvc repro` (the latency stage times "
                            "the TTA views when params.yaml: tta has more than one)")  # fmt: skip
    return {name: value for name, value in timings.items() if name.endswith("_ms") or name in ("fps", "views")}


def card_markdown(card: Mapping[str, Any]) -> str:
    """The card for people (the metric lines only when the card has them)."""
    lines = [
        f"# Model card: {card['backbone']} ({card['variant']})",
        "",
        f"- Backbone: `{card['spec']['source']}` `{card['spec']['model']}` (pretrained: {card['spec']['pretrained']})",
        f"- Classes (output order): {', '.join(card['classes'])}",
        "- Input: uint8 grayscale faces, batch x 48 x 48, made by `ferbench.data.decode.image_to_fer`; the model "
        f"itself resizes to {card['preprocessing']['input_size']} px, "
        f"{'repeats to 3 channels' if card['preprocessing']['channels'] == 3 else 'keeps one channel'} and normalises",
        f"- Runtime: {card['runtime']}, file `{card['files']['model']}` (checkpoint `{card['files']['checkpoint']}`)",
    ]
    if "int8_calibration" in card:
        int8 = card["int8_calibration"]
        lines.append(f"- Static int8: activation ranges calibrated on {int8['images']} {int8['split']} images "
                     f"({int8['method']}); the preprocessing inside the model stays fp32")  # fmt: skip
    tta = card["tta"]
    views = (f"averages its logits over {tta['views']} views of each face (mirror: {tta['flip']}, shifts of "
             f"{tta['shift_pixels']} px: {tta['shifts']}), inside the exported model") if tta["views"] > 1 else "none"
    lines.append(f"- Test-time augmentation: {views}")
    if "metrics" not in card:
        return "\n".join([*lines, ""])
    metrics, latency = card["metrics"], card["latency"]
    lines += [
        f"- Val accuracy {metrics['val_accuracy']:.4f} as deployed, train-val gap {metrics['accuracy_gap']:+.4f}",
        f"- Test accuracy {metrics['test_accuracy']:.4f} as deployed (the checkpoint alone in PyTorch fp32: "
        f"{metrics['test_accuracy_fp32']:.4f}), macro-F1 {metrics['test_macro_f1']:.4f}",
    ]  # fmt: skip
    if "test_leakage_free_accuracy" in metrics:
        lines.append(f"- Leakage-free test accuracy {metrics['test_leakage_free_accuracy']:.4f} (macro-F1 "
                     f"{metrics['test_leakage_free_macro_f1']:.4f}) on the {metrics['test_leakage_free_images']} test "
                     "images whose pixels do not occur in the Kaggle train folder")  # fmt: skip
    if "test_per_class_recall" in metrics:
        lines.append("- Per-class test recall: " + ", ".join(f"{name} {value:.2f}" for name, value
                                                             in metrics["test_per_class_recall"].items()))  # fmt: skip
    if "calibration" in card:
        test = card["calibration"]["test"]
        lines.append(f"- Calibration: temperature {card['temperature']:.3f} (fitted on val, applied by the inference "
                     f"code); test ECE {test['ece']:.4f} -> {test['ece_scaled']:.4f}, test NLL {test['nll']:.4f} -> "
                     f"{test['nll_scaled']:.4f}")  # fmt: skip
    return "\n".join([
        *lines,
        f"- CPU latency, batch 1, {latency['threads']} threads: p50 {latency['p50_ms']:.2f} ms, "
        f"p99 {latency['p99_ms']:.2f} ms ({latency['fps']:.0f} FPS)",
        f"- Agreement with PyTorch fp32 on val: {card['agreement_with_fp32_on_val'][card['variant']]:.4f}",
        f"- Selection: {card['selection']['reason']}",
        "",
    ])  # fmt: skip


CARD_FIELDS: dict[str, type | tuple[type, ...]] = {"backbone": str, "spec": dict, "classes": list, "runtime": str,
                                                   "variant": str, "files": dict}  # fmt: skip


def read_card(folder: Path) -> dict[str, Any]:
    """Load and check a model card, which is untrusted input (model folders get downloaded and shared):
    every error is one line naming the folder and the fix."""
    path = Path(folder) / CARD_FILE
    if not path.is_file():
        raise FerbenchError(f"{path}: no model card; run `dvc repro` (the select stage writes models/selected/) "
                            "or pass the folder of a selected model")  # fmt: skip
    try:
        card = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FerbenchError(f"{path}: not a readable model card ({exc}); re-export the model with "
                            "`dvc repro select`") from exc  # fmt: skip
    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT:
        found = card.get("format") if isinstance(card, dict) else type(card).__name__
        raise FerbenchError(f"{path}: unknown model card format {found!r} (expected {CARD_FORMAT})")
    for key, kind in CARD_FIELDS.items():
        if not isinstance(card.get(key), kind):
            raise FerbenchError(f"{path}: the card's {key!r} is missing or not a {getattr(kind, '__name__', kind)}; "
                                "re-export the model with `dvc repro select`")  # fmt: skip
    classes = card["classes"]
    if not classes or not all(isinstance(name, str) and name for name in classes) or len(set(classes)) != len(classes):
        raise FerbenchError(f"{path}: the card's classes must be distinct non-empty names, got {classes!r}")
    if card["runtime"] not in set(RUNTIMES.values()):
        raise FerbenchError(f"{path}: unknown runtime {card['runtime']!r}; use one of "
                            f"{', '.join(sorted(set(RUNTIMES.values())))}")  # fmt: skip
    for role in ("model", "checkpoint"):
        card_file(folder, card, role)
    temperature = card.setdefault("temperature", 1.0)
    if isinstance(temperature, bool) or not isinstance(temperature, int | float) or not (
        math.isfinite(temperature) and temperature > 0
    ):
        raise FerbenchError(f"{path}: temperature is {temperature!r}; a model card needs a positive number "
                            "(re-export the model with `dvc repro select`)")  # fmt: skip
    return card


def card_file(folder: Path, card: Mapping[str, Any], role: str) -> Path:
    """The file the card names for `role` ("model" or "checkpoint"): a plain name inside the folder, never
    an absolute path or one that climbs out of it (a shared model folder must not open other files)."""
    name = card["files"].get(role)
    folder = Path(folder)
    if not isinstance(name, str) or not name or Path(name).is_absolute() or ".." in Path(name).parts:
        raise FerbenchError(f"{folder / CARD_FILE}: files.{role} is {name!r}; it must name a file inside the model "
                            "folder (no absolute path, no '..')")  # fmt: skip
    path = folder / name
    if not path.resolve().is_relative_to(folder.resolve()):
        raise FerbenchError(f"{folder / CARD_FILE}: files.{role} {name!r} leads outside the model folder")
    return path
