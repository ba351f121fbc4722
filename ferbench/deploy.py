"""The shipped model: `models/selected/` with its checkpoint, deployment export and model card.

The card (`model_card.json`) is what inference reads: classes, the input the model takes
(48x48 uint8 grayscale, made by `ferbench.data.decode.image_to_fer`), the preprocessing inside
the model, the runtime and file to load, metrics, latency and why it was chosen.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ferbench.data.classes import IMAGE_SIZE
from ferbench.data.prepared import Split
from ferbench.errors import FerbenchError
from ferbench.latency import (
    ONNX_FILES,
    agreement,
    batched_predictions,
    build_runtimes,
    fastest_faithful,
    set_threads,
)
from ferbench.metrics import classification_metrics
from ferbench.models.backbones import BackboneSpec
from ferbench.models.checkpoint import save_checkpoint
from ferbench.models.classifier import ImageClassifier, load_classifier
from ferbench.models.export import export_onnx, quantize_int8

CARD_FILE = "model_card.json"
CARD_FORMAT = "ferbench-model-card/1"
RUNTIMES = {"torch_fp32": "torch", "onnx_fp32": "onnxruntime", "onnx_int8": "onnxruntime"}


def write_model_folder(
    folder: Path, spec: BackboneSpec, model: ImageClassifier, classes: Sequence[str], variant: str,
    checkpoint: Path | None = None, exported: Path | None = None, **card_fields: Any,
) -> dict[str, Any]:  # fmt: skip
    """A deployable folder: the model file of `variant` (copied from `exported`, or exported now), the
    checkpoint (given, or saved from `model`), and the card with `card_fields` added."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {"checkpoint": "model.pt", "model": ONNX_FILES.get(variant, "model.pt")}
    if checkpoint is not None:
        shutil.copyfile(checkpoint, folder / files["checkpoint"])
    else:
        save_checkpoint(folder / files["checkpoint"], model, backbone=spec.name)
    if variant in ONNX_FILES:
        if exported is not None:
            shutil.copyfile(exported, folder / files["model"])
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
        "preprocessing": {"inside_model": True, "resize": "bilinear", "input_size": model.preprocess.input_size,
                          "channels": 3, "scale": "1/255",
                          "mean": model.preprocess.mean.flatten().tolist(),
                          "std": model.preprocess.std.flatten().tolist()},
        "runtime": RUNTIMES[variant],
        "variant": variant,
        "files": files,
        **card_fields,
    }  # fmt: skip
    (folder / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n")
    (folder / "MODEL_CARD.md").write_text(card_markdown(card))
    return card


def write_selected(
    folder: Path, spec: BackboneSpec, checkpoint: Path, classes: Sequence[str], val: Split, test: Split,
    latency: Mapping[str, Any], selection: Mapping[str, Any], trained: Mapping[str, Any], threads: int,
    min_agreement: float,
) -> dict[str, Any]:  # fmt: skip
    """Export the selected checkpoint, keep its fastest faithful variant, re-measure it on test, write the card."""
    set_threads(threads)
    model = load_classifier(spec, checkpoint, len(classes))
    shutil.rmtree(folder, ignore_errors=True)
    with tempfile.TemporaryDirectory() as scratch:
        runtimes = build_runtimes(model, Path(scratch), threads)
        reference = batched_predictions(runtimes["torch_fp32"], val.images)
        agreements = {"torch_fp32": 1.0}
        for name in ("onnx_fp32", "onnx_int8"):
            agreements[name] = agreement(reference, batched_predictions(runtimes[name], val.images))
        # the latency stage's timings (same architecture), this checkpoint's own agreement
        measured = {name: {"p50_ms": latency["variants"][name]["p50_ms"], "agreement": share}
                    for name, share in agreements.items()}  # fmt: skip
        variant = fastest_faithful(measured, min_agreement)
        deployed_test = classification_metrics(test.labels, batched_predictions(runtimes[variant], test.images),
                                               classes)  # fmt: skip
        exported = Path(scratch) / ONNX_FILES[variant] if variant in ONNX_FILES else None
        return write_model_folder(
            folder, spec, model, classes, variant, checkpoint=checkpoint, exported=exported,
            agreement_with_fp32_on_val=agreements,
            metrics={
                "val_accuracy": trained["val"]["accuracy"],
                "train_accuracy": trained["train"]["accuracy"],
                "accuracy_gap": trained["overfitting"]["accuracy_gap"],
                "test_accuracy_fp32": trained["test"]["accuracy"],
                "test_accuracy": deployed_test["accuracy"],
                "test_macro_f1": deployed_test["macro_f1"],
            },
            latency={"threads": latency["threads"], "batch_size": 1, **latency["variants"][variant]},
            selection={"criterion": selection["criterion"], "reason": selection["reason"]},
        )  # fmt: skip


def card_markdown(card: Mapping[str, Any]) -> str:
    """The card for people (the metric lines only when the card has them)."""
    lines = [
        f"# Model card: {card['backbone']} ({card['variant']})",
        "",
        f"- Backbone: `{card['spec']['source']}` `{card['spec']['model']}` (pretrained: {card['spec']['pretrained']})",
        f"- Classes (output order): {', '.join(card['classes'])}",
        "- Input: uint8 grayscale faces, batch x 48 x 48, made by `ferbench.data.decode.image_to_fer`; the model "
        f"itself resizes to {card['preprocessing']['input_size']} px, repeats to 3 channels and normalises",
        f"- Runtime: {card['runtime']}, file `{card['files']['model']}` (checkpoint `{card['files']['checkpoint']}`)",
    ]
    if "metrics" not in card:
        return "\n".join([*lines, ""])
    metrics, latency = card["metrics"], card["latency"]
    return "\n".join([
        *lines,
        f"- Val accuracy {metrics['val_accuracy']:.4f}, train-val gap {metrics['accuracy_gap']:+.4f}",
        f"- Test accuracy {metrics['test_accuracy']:.4f} as deployed ({metrics['test_accuracy_fp32']:.4f} in PyTorch "
        f"fp32), macro-F1 {metrics['test_macro_f1']:.4f}",
        f"- CPU latency, batch 1, {latency['threads']} threads: p50 {latency['p50_ms']:.2f} ms, "
        f"p99 {latency['p99_ms']:.2f} ms ({latency['fps']:.0f} FPS)",
        f"- Agreement with PyTorch fp32 on val: {card['agreement_with_fp32_on_val'][card['variant']]:.4f}",
        f"- Selection: {card['selection']['reason']}",
        "",
    ])  # fmt: skip


def read_card(folder: Path) -> dict[str, Any]:
    """Load and check a model card; errors name the folder and the fix."""
    path = Path(folder) / CARD_FILE
    if not path.is_file():
        raise FerbenchError(f"{path}: no model card; run `dvc repro` (the select stage writes models/selected/) "
                            "or pass the folder of a selected model")  # fmt: skip
    card = json.loads(path.read_text())
    if card.get("format") != CARD_FORMAT:
        raise FerbenchError(f"{path}: unknown model card format {card.get('format')!r} (expected {CARD_FORMAT})")
    return card
