"""A model folder (`models/selected/`, `models/deploy/<candidate>/`, any `--model DIR`): its card and files.

One home for the folder contract, used by the pipeline that writes folders (`deploy`, `select`)
and by serving (the inference core, the app, the predict CLI), which imports this module and
never training, selection or latency code. Model folders are untrusted input (they get
downloaded and shared): `read_card` checks the card's format, fields, classes and runtime, and
`card_file` keeps every file it names inside the folder. The card (`model_card.json`) says what
inference needs: classes, the input (48x48 uint8 grayscale, made by
`ferbench.data.decode.image_to_fer`), the preprocessing and test-time augmentation inside the
model, the temperature that calibrates its probabilities, the runtime and file to load, metrics,
latency and (in `models/selected/`) why it was chosen.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ferbench.errors import FerbenchError

CARD_FILE = "model_card.json"
CARD_FORMAT = "ferbench-model-card/1"
RUNTIMES = {
    "torch_fp32": "torch",
    "onnx_fp32": "onnxruntime",
    "onnx_int8": "onnxruntime",
    "onnx_int8_static": "onnxruntime",
}


def trained_on_synthetic_data(card: Mapping[str, Any]) -> bool:
    """Whether the card says the model learned from the synthetic demo faces (its numbers mean little)."""
    provenance = card.get("provenance")
    return isinstance(provenance, Mapping) and provenance.get("data", {}).get("source") == "synthetic"


def provenance_lines(card: Mapping[str, Any]) -> list[str]:
    """The card's provenance and limitations, for people (nothing for a card without them)."""
    provenance = card.get("provenance")
    if not isinstance(provenance, Mapping):
        return []
    data = provenance.get("data", {})
    source = data.get("source", "unknown")
    dataset = f" ({data['kaggle_dataset']})" if data.get("kaggle_dataset") else ""
    lines = [
        f"- Trained on: {source}{dataset} data, archive SHA-256 {data.get('archive_sha256', 'unknown')}",
        f"- Code: git {provenance.get('git_revision', 'unknown')}; written {provenance.get('created', 'unknown')}",
    ]
    return lines + [f"- Limitation: {text}" for text in card.get("limitations", [])]


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
        lines.append(
            f"- Static int8: activation ranges calibrated on {int8['images']} {int8['split']} images "
            f"({int8['method']}); the preprocessing inside the model stays fp32"
        )
    tta = card["tta"]
    views = (
        (
            f"averages its logits over {tta['views']} views of each face (mirror: {tta['flip']}, shifts of "
            f"{tta['shift_pixels']} px: {tta['shifts']}), inside the exported model"
        )
        if tta["views"] > 1
        else "none"
    )
    lines.append(f"- Test-time augmentation: {views}")
    lines += provenance_lines(card)
    if "metrics" not in card:
        return "\n".join([*lines, ""])
    metrics, latency = card["metrics"], card["latency"]
    lines += [
        f"- Val accuracy {metrics['val_accuracy']:.4f} as deployed, train-val gap {metrics['accuracy_gap']:+.4f}",
        f"- Test accuracy {metrics['test_accuracy']:.4f} as deployed (the checkpoint alone in PyTorch fp32: "
        f"{metrics['test_accuracy_fp32']:.4f}), macro-F1 {metrics['test_macro_f1']:.4f}",
    ]
    if "test_leakage_free_accuracy" in metrics:
        lines.append(
            f"- Leakage-free test accuracy {metrics['test_leakage_free_accuracy']:.4f} (macro-F1 "
            f"{metrics['test_leakage_free_macro_f1']:.4f}) on the {metrics['test_leakage_free_images']} test "
            "images whose pixels do not occur in the Kaggle train folder"
        )
    if "test_per_class_recall" in metrics:
        lines.append(
            "- Per-class test recall: "
            + ", ".join(f"{name} {value:.2f}" for name, value in metrics["test_per_class_recall"].items())
        )
    if "calibration" in card:
        test = card["calibration"]["test"]
        lines.append(
            f"- Calibration: temperature {card['temperature']:.3f} (fitted on val, applied by the inference "
            f"code); test ECE {test['ece']:.4f} -> {test['ece_scaled']:.4f}, test NLL {test['nll']:.4f} -> "
            f"{test['nll_scaled']:.4f}"
        )
    return "\n".join(
        [
            *lines,
            f"- CPU latency, batch 1, {latency['threads']} threads: p50 {latency['p50_ms']:.2f} ms, "
            f"p99 {latency['p99_ms']:.2f} ms ({latency['fps']:.0f} FPS)",
            f"- Agreement with PyTorch fp32 on val: {card['agreement_with_fp32_on_val'][card['variant']]:.4f}",
            *([f"- Selection: {card['selection']['reason']}"] if "selection" in card else []),
            "",
        ]
    )


CARD_FIELDS: dict[str, type | tuple[type, ...]] = {
    "backbone": str,
    "spec": dict,
    "classes": list,
    "runtime": str,
    "variant": str,
    "files": dict,
}


def read_card(folder: Path) -> dict[str, Any]:
    """Load and check a model card, which is untrusted input (model folders get downloaded and shared):
    every error is one line naming the folder and the fix."""
    path = Path(folder) / CARD_FILE
    if not path.is_file():
        raise FerbenchError(
            f"{path}: no model card; run `dvc repro` (the select stage writes models/selected/) "
            "or pass the folder of a selected model"
        )
    try:
        card = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FerbenchError(
            f"{path}: not a readable model card ({exc}); re-export the model with `dvc repro select`"
        ) from exc
    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT:
        found = card.get("format") if isinstance(card, dict) else type(card).__name__
        raise FerbenchError(f"{path}: unknown model card format {found!r} (expected {CARD_FORMAT})")
    for key, kind in CARD_FIELDS.items():
        if not isinstance(card.get(key), kind):
            raise FerbenchError(
                f"{path}: the card's {key!r} is missing or not a {getattr(kind, '__name__', kind)}; "
                "re-export the model with `dvc repro select`"
            )
    classes = card["classes"]
    if not classes or not all(isinstance(name, str) and name for name in classes) or len(set(classes)) != len(classes):
        raise FerbenchError(f"{path}: the card's classes must be distinct non-empty names, got {classes!r}")
    if card["runtime"] not in set(RUNTIMES.values()):
        raise FerbenchError(
            f"{path}: unknown runtime {card['runtime']!r}; use one of {', '.join(sorted(set(RUNTIMES.values())))}"
        )
    for role in ("model", "checkpoint"):
        card_file(folder, card, role)
    temperature = card.setdefault("temperature", 1.0)
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, int | float)
        or not (math.isfinite(temperature) and temperature > 0)
    ):
        raise FerbenchError(
            f"{path}: temperature is {temperature!r}; a model card needs a positive number "
            "(re-export the model with `dvc repro select`)"
        )
    return card


def card_file(folder: Path, card: Mapping[str, Any], role: str) -> Path:
    """The file the card names for `role` ("model" or "checkpoint"): a plain name inside the folder, never
    an absolute path or one that climbs out of it (a shared model folder must not open other files)."""
    name = card["files"].get(role)
    folder = Path(folder)
    if not isinstance(name, str) or not name or Path(name).is_absolute() or ".." in Path(name).parts:
        raise FerbenchError(
            f"{folder / CARD_FILE}: files.{role} is {name!r}; it must name a file inside the model "
            "folder (no absolute path, no '..')"
        )
    path = folder / name
    if not path.resolve().is_relative_to(folder.resolve()):
        raise FerbenchError(f"{folder / CARD_FILE}: files.{role} {name!r} leads outside the model folder")
    return path


def deployment_summary(card: Mapping[str, Any]) -> dict[str, Any]:
    """What a deployed folder's card says it ships (`select`'s record in metrics/selection.json)."""
    metrics, calibration = card["metrics"], card["calibration"]
    return {
        "variant": card["variant"],
        "runtime": card["runtime"],
        "file": card["files"]["model"],
        "tta_views": card["tta"]["views"],
        "val_accuracy": metrics["val_accuracy"],
        "test_accuracy": metrics["test_accuracy"],
        "test_accuracy_fp32": metrics["test_accuracy_fp32"],
        "test_macro_f1": metrics["test_macro_f1"],
        "test_leakage_free_accuracy": metrics["test_leakage_free_accuracy"],
        "test_leakage_free_images": metrics["test_leakage_free_images"],
        "temperature": card["temperature"],
        "test_ece": calibration["test"]["ece"],
        "test_ece_scaled": calibration["test"]["ece_scaled"],
        "test_nll": calibration["test"]["nll"],
        "test_nll_scaled": calibration["test"]["nll_scaled"],
        "agreement_with_fp32_on_val": card["agreement_with_fp32_on_val"][card["variant"]],
        "latency_p50_ms": card["latency"]["p50_ms"],
    }


def ship_selected(deployed: Path, folder: Path, selection: Mapping[str, Any]) -> dict[str, Any]:
    """Copy the chosen candidate's deployed folder to `folder` as it is, with why it was chosen added
    to its card."""
    card = read_card(deployed)
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(deployed, folder)
    card["selection"] = {"criterion": selection["criterion"], "reason": selection["reason"]}
    (folder / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n")
    (folder / "MODEL_CARD.md").write_text(card_markdown(card))
    return card
