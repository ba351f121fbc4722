"""Deploying a trained model: exporting it in every runtime variant, keeping the fastest faithful one
and writing the model folder (`ferbench.model_folder` holds the folder's contract: the card and
its files)."""

from __future__ import annotations

import json
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
from ferbench.constants import IMAGE_SIZE
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
from ferbench.metrics import evaluation_report
from ferbench.model_folder import CARD_FILE, CARD_FORMAT, RUNTIMES, card_markdown, checksums
from ferbench.models.backbones import BackboneSpec
from ferbench.models.checkpoint import save_checkpoint
from ferbench.models.classifier import TTAClassifier, TTAConfig, load_classifier, with_tta
from ferbench.models.export import export_int8_static, export_onnx, quantize_int8


def write_model_folder(
    folder: Path,
    spec: BackboneSpec,
    model: nn.Module,
    classes: Sequence[str],
    variant: str,
    checkpoint: Path | None = None,
    exported: Path | None = None,
    tta: TTAConfig | None = None,
    temperature: float = 1.0,
    int8_calibration: Calibration | None = None,
    **card_fields: Any,
) -> dict[str, Any]:
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
        "input": {
            "dtype": "uint8",
            "shape": ["batch", IMAGE_SIZE, IMAGE_SIZE],
            "color": "grayscale",
            "made_by": "ferbench.data.decode.image_to_fer (ITU-R 601 luma, bilinear resize to 48x48)",
        },
        "preprocessing": {
            "inside_model": True,
            "resize": "bilinear",
            "input_size": classifier.preprocess.input_size,
            "channels": classifier.preprocess.channels,
            "scale": "1/255",
            "mean": classifier.preprocess.mean.flatten().tolist(),
            "std": classifier.preprocess.std.flatten().tolist(),
        },
        "tta": (tta or TTAConfig()).to_card() | {"inside_model": True},
        "temperature": temperature,
        "runtime": RUNTIMES[variant],
        "variant": variant,
        "files": files,
        "sha256": checksums(folder, files),
        **(
            {
                "int8_calibration": {
                    "split": "train",
                    "images": len(int8_calibration.images),
                    "method": int8_calibration.method,
                }
            }
            if variant == "onnx_int8_static"
            else {}
        ),
        **card_fields,
    }
    (folder / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n")
    (folder / "MODEL_CARD.md").write_text(card_markdown(card))
    return card


@dataclass
class Deployment:
    """What `deploy_candidate` produced: the card, the model's test reliability table (per
    confidence bin: count, mean confidence and accuracy, before and after temperature scaling) and
    its test predictions (image index, true and predicted class, calibrated confidence)."""

    card: dict[str, Any]
    reliability: pd.DataFrame
    test_predictions: pd.DataFrame


def deploy_candidate(
    folder: Path,
    spec: BackboneSpec,
    checkpoint: Path,
    classes: Sequence[str],
    val: Split,
    test: Split,
    leakage_free: np.ndarray,
    latency: Mapping[str, Any],
    trained: Mapping[str, Any],
    threads: int,
    min_agreement: float,
    tta: TTAConfig | None = None,
    int8_calibration: Calibration | None = None,
    card_fields: Mapping[str, Any] | None = None,
) -> Deployment:
    """Decide once how a trained candidate ships: export the checkpoint (with `tta`'s views inside the
    graph when given) in every variant, keep its fastest faithful one (this checkpoint's own agreement
    on val, the latency stage's timings of the architecture), fit its temperature on val, measure it
    on test, and write the model folder with its card. `select` ranks candidates on these numbers and
    ships the chosen folder as it is."""
    set_threads(threads)
    shipped = with_tta(load_classifier(spec, checkpoint, len(classes)), tta)
    timings_key = "tta" if tta is not None and tta.enabled else None
    shutil.rmtree(folder, ignore_errors=True)
    with tempfile.TemporaryDirectory() as scratch:
        runtimes = build_runtimes(shipped, Path(scratch), threads, int8_calibration)
        val_logits = {name: batched_logits(runtime, val.images) for name, runtime in runtimes.items()}
        reference = val_logits["torch_fp32"].argmax(1)
        agreements = {name: agreement(reference, logits.argmax(1)) for name, logits in val_logits.items()}
        measured = {
            name: {"p50_ms": _timings(_variant(latency, name), timings_key)["p50_ms"], "agreement": share}
            for name, share in agreements.items()
        }
        variant = fastest_faithful(measured, min_agreement)
        test_logits = batched_logits(runtimes[variant], test.images)
        exported = Path(scratch) / ONNX_FILES[variant] if variant in ONNX_FILES else None
        probabilities = calibration_report(
            {"val": (val_logits[variant], val.labels), "test": (test_logits, test.labels)}
        )
        predictions = test_logits.argmax(1)
        deployed_test = evaluation_report(test.labels, predictions, classes)
        leakage_free_test = evaluation_report(test.labels[leakage_free], predictions[leakage_free], classes)
        card = write_model_folder(
            folder,
            spec,
            shipped,
            classes,
            variant,
            checkpoint=checkpoint,
            exported=exported,
            tta=tta,
            temperature=probabilities["temperature"],
            int8_calibration=int8_calibration,
            agreement_with_fp32_on_val=agreements,
            metrics={
                "val_accuracy": float((val_logits[variant].argmax(1) == val.labels).mean()),
                "train_accuracy": trained["train"]["accuracy"],
                "accuracy_gap": trained["overfitting"]["accuracy_gap"],
                "test_accuracy_fp32": trained["test"]["accuracy"],
                "test_images": deployed_test["images"],
                "test_accuracy": deployed_test["accuracy"],
                "test_accuracy_ci95": deployed_test["accuracy_ci95"],
                "test_macro_f1": deployed_test["macro_f1"],
                "test_macro_f1_ci95": deployed_test["macro_f1_ci95"],
                "test_leakage_free_accuracy": leakage_free_test["accuracy"],
                "test_leakage_free_accuracy_ci95": leakage_free_test["accuracy_ci95"],
                "test_leakage_free_macro_f1": leakage_free_test["macro_f1"],
                "test_leakage_free_macro_f1_ci95": leakage_free_test["macro_f1_ci95"],
                "test_leakage_free_images": leakage_free_test["images"],
                "test_per_class": deployed_test["per_class"],
            },
            calibration=probabilities,
            latency={
                **({"machine": latency["machine"]} if "machine" in latency else {}),
                "threads": latency["threads"],
                "batch_size": 1,
                **_timings(latency["variants"][variant], timings_key),
            },
            **(card_fields or {}),
        )
    before = reliability_table(test_logits, test.labels)
    after = reliability_table(test_logits, test.labels, probabilities["temperature"])
    reliability = pd.DataFrame({"bin_center": (before["bin_lower"] + before["bin_upper"]) / 2})
    for name, table in (("before", before), ("after", after)):
        for column in ("count", "confidence", "accuracy"):
            reliability[f"{column}_{name}"] = table[column]
    scaled = test_logits / probabilities["temperature"]
    confidence = np.exp(scaled - scaled.max(1, keepdims=True))
    confidence = confidence.max(1) / confidence.sum(1)
    test_predictions = pd.DataFrame(
        {
            "index": np.arange(len(test.labels)),
            "actual": [classes[i] for i in test.labels],
            "predicted": [classes[i] for i in predictions],
            "confidence": confidence,
        }
    )
    return Deployment(card, reliability, test_predictions)


def _variant(latency: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    """The latency stage's record of one variant (an error naming the fix when it was not measured)."""
    if name not in latency["variants"]:
        raise FerbenchError(
            f"reports/details/latency: no timings for {name}; rerun `dvc repro` (the latency stage times "
            "every variant the select stage may ship)"
        )
    return latency["variants"][name]


def _timings(variant: Mapping[str, Any], key: str | None) -> dict[str, Any]:
    """A latency variant's batch-1 timings, or those on the TTA views."""
    timings = variant if key is None else variant.get(key)
    if timings is None:
        raise FerbenchError(
            "reports/details/latency: no timings with TTA; rerun `dvc repro` (the latency stage times "
            "the TTA views when params.yaml: tta has more than one)"
        )
    return {name: value for name, value in timings.items() if name.endswith("_ms") or name in ("fps", "views")}
