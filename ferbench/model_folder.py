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

import hashlib
import json
import math
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ferbench.errors import FerbenchError
from ferbench.provenance import SYNTHETIC_WARNING

CARD_FILE = "model_card.json"
CARD_FORMAT = "ferbench-model-card/1"
MAX_CARD_BYTES = 1 << 20  # a card is a few KB
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


def model_summary(card: Mapping[str, Any]) -> str:
    """One line saying what a model is and what it learned from, for the app and the CLI."""
    line = f"{card['backbone']} ({card['variant']} on {card['runtime']})"
    provenance = card.get("provenance") if isinstance(card.get("provenance"), Mapping) else {}
    data = provenance.get("data", {}) if isinstance(provenance.get("data"), Mapping) else {}
    if trained_on_synthetic_data(card):
        return line + ", trained on synthetic drawn faces (make demo): not for real photos"
    if data.get("source") in ("kaggle", "archive"):
        digest = str(data.get("archive_sha256", ""))[:12]
        line += f", trained on FER-2013 ({data['source']}{', SHA-256 ' + digest + '...' if digest else ''})"
    else:
        line += ", training data not recorded in its card"
    metrics = card.get("metrics") if isinstance(card.get("metrics"), Mapping) else {}
    if isinstance(metrics.get("test_accuracy"), int | float):
        line += f", test accuracy {metrics['test_accuracy']:.1%}"
    if provenance.get("git_revision"):
        line += f", code {provenance['git_revision']}"
    return line


FER2013_CITATION = (
    "Goodfellow, I. J., Erhan, D., Carrier, P. L., Courville, A., Mirza, M., Hamner, B., et al. (2013). "
    "Challenges in Representation Learning: A report on three machine learning contests. ICONIP 2013, "
    "LNCS 8228, 117-124. arXiv:1307.0414"
)
DATA_TERMS = (
    "FER-2013 was made for the ICML 2013 workshop *Challenges in Representation Learning*; its faces were "
    "gathered by Google image searches and labelled by people. It is distributed on Kaggle (`msambare/fer2013`) "
    "with no explicit licence: read the terms on its Kaggle page before you use the data, or a model trained "
    "on it, beyond research."
)
CARD_SECTIONS = (  # the headings of MODEL_CARD.md, in order (the sections of a Hugging Face model card)
    "Model details",
    "Intended use",
    "Out-of-scope use",
    "Training data",
    "Training procedure",
    "Evaluation",
    "Calibration",
    "Latency",
    "Why this model",
    "Limitations and biases",
    "How to reproduce",
    "Data terms and citation",
)
INTENDED_USE = [
    "Research and teaching: benchmarking facial-expression models, studying what FER-2013 models learn.",
    "Demonstrations and prototypes: which of seven posed expression categories a cropped face resembles most, "
    "with calibrated probabilities.",
]
OUT_OF_SCOPE = [
    "Decisions about people: hiring, grading, policing, security, health, credit, insurance or any judgement "
    "of a person's feelings, honesty or character. An expression is not an emotion, and the labels are noisy.",
    "Surveillance or tracking people without their informed consent.",
    "Faces unlike FER-2013's: profile views, heavy occlusion, very low light, infants; the model was not "
    "measured on them.",
]
BIASES = [
    "FER-2013's labels are noisy: the dataset's authors estimate human accuracy on it at 65+-5%, so part of "
    "the remaining error is disagreement between people, and some test labels are wrong.",
    "The classes are imbalanced (disgust is about 1.5% of the images), and the model is much weaker on the "
    "rare and confusable classes (see the per-class table).",
    "The images come from web searches: who appears (age, gender, skin tone, culture of expression) is "
    "neither balanced nor annotated, so accuracy across groups of people is unknown and may differ.",
    "About 8% of the Kaggle test images are pixel copies of train images; the leakage-free figures exclude them.",
]


def _interval(values: Any, style: str = ".1%") -> str:
    """' (95% CI a-b)' for a [low, high] pair, '' when absent."""
    if isinstance(values, list | tuple) and len(values) == 2:
        return f" (95% CI {values[0]:{style}}-{values[1]:{style}})"
    return ""


def _training_lines(training: Mapping[str, Any]) -> list[str]:
    """The params that made the weights, as the checkpoint recorded them."""
    config = training.get("training") if isinstance(training.get("training"), Mapping) else {}
    if not config:
        return [f"- Recorded: {json.dumps(dict(training), sort_keys=True)}"]
    augment = config.get("augment") or {}
    augment_text = ", ".join(f"{key} {value}" for key, value in augment.items()) if augment else "none"
    return [
        f"- {config.get('epochs')} epochs, batch {config.get('batch_size')}, optimizer {config.get('optimizer')}, "
        f"learning rate {config.get('lr')}, weight decay {config.get('weight_decay')}, schedule "
        f"{config.get('scheduler')} (warm-up {config.get('warmup_epochs')} epochs)",
        f"- Label smoothing {config.get('label_smoothing')}, class weighting {config.get('class_weighting')}, "
        f"sampler {config.get('sampler')}, weight EMA {config.get('ema_decay')}, precision {config.get('precision')}",
        f"- Augmentation on the training device: mirror {config.get('flip')}; {augment_text}",
        f"- Trainable: {training.get('trainable', 'all')}; seed {training.get('seed', 'unknown')}",
        f"- Trained with ferbench `{training.get('code_revision', 'not recorded')}`",
        f"- All of it: `provenance.training` in `{CARD_FILE}`",
    ]


def _evaluation_lines(card: Mapping[str, Any]) -> list[str]:
    metrics = card["metrics"]
    lines = [
        "| test set | images | accuracy | macro-F1 |",
        "|---|---|---|---|",
        f"| FER-2013 test folder | {metrics.get('test_images', '')} | {metrics['test_accuracy']:.1%}"
        f"{_interval(metrics.get('test_accuracy_ci95'))} | {metrics['test_macro_f1']:.3f}"
        f"{_interval(metrics.get('test_macro_f1_ci95'), '.3f')} |",
    ]
    if "test_leakage_free_accuracy" in metrics:
        lines.append(
            f"| leakage-free (no pixel copy in the train folder) | {metrics['test_leakage_free_images']} | "
            f"{metrics['test_leakage_free_accuracy']:.1%}{_interval(metrics.get('test_leakage_free_accuracy_ci95'))} "
            f"| {metrics['test_leakage_free_macro_f1']:.3f}"
            f"{_interval(metrics.get('test_leakage_free_macro_f1_ci95'), '.3f')} |"
        )
    lines += [
        "",
        f"Validation accuracy {metrics['val_accuracy']:.1%} as shipped; train-val gap {metrics['accuracy_gap']:+.3f}; "
        f"the checkpoint alone in PyTorch fp32: {metrics['test_accuracy_fp32']:.1%} on test. Intervals: Wilson "
        "for accuracy and recall, a 1,000-round bootstrap over images for macro-F1.",
    ]
    per_class = metrics.get("test_per_class")
    if isinstance(per_class, Mapping):
        lines += ["", "| class | test images | recall | F1 |", "|---|---|---|---|"]
        lines += [
            f"| {name} | {row['images']} | {row['recall']:.1%}{_interval(row.get('recall_ci95'))} | {row['f1']:.3f} |"
            for name, row in per_class.items()
        ]
    return lines


def card_markdown(card: Mapping[str, Any]) -> str:
    """The card for people, in the sections of a Hugging Face model card; the same for every folder the
    pipeline ships (sections without data in the card say so)."""
    spec, tta = card["spec"], card["tta"]
    provenance = card.get("provenance") if isinstance(card.get("provenance"), Mapping) else {}
    data = provenance.get("data", {}) if isinstance(provenance.get("data"), Mapping) else {}
    synthetic = trained_on_synthetic_data(card)
    lines = [f"# Model card: {card['backbone']} ({card['variant']})", ""]
    if synthetic:
        lines += [f"> **{SYNTHETIC_WARNING}**", ""]
    lines += [
        f"{model_summary(card)}.",
        "",
        "## Model details",
        "",
        f"- Network: `{spec['source']}` `{spec['model']}` (pretrained weights: {spec['pretrained']}) with a linear "
        f"head over {len(card['classes'])} classes, in output order: {', '.join(card['classes'])}",
        "- Input: uint8 grayscale faces, batch x 48 x 48, framed as FER-2013 frames its faces and made by "
        f"`ferbench.data.decode.image_to_fer`; the model resizes to {card['preprocessing']['input_size']} px, "
        f"{'repeats to 3 channels' if card['preprocessing']['channels'] == 3 else 'keeps one channel'} and "
        "normalises inside the graph",
        f"- Runtime: {card['runtime']}, file `{card['files']['model']}`"
        + (
            f" (SHA-256 `{card['sha256'][card['files']['model']]}`)"
            if card["files"]["model"] in card.get("sha256", {})
            else ""
        ),
        "- Test-time augmentation: "
        + (
            f"logits averaged over {tta['views']} views (mirror {tta['flip']}, {tta['shifts']} shifts of "
            f"{tta['shift_pixels']} px), inside the exported graph"
            if tta["views"] > 1
            else "none"
        ),
        f"- Probabilities: softmax of the logits divided by the temperature {card['temperature']:.3f} (fitted on val)",
        f"- Code: ferbench revision `{provenance.get('git_revision', 'unknown')}`; folder written "
        f"{provenance.get('created', 'unknown')}; code licence MIT",
    ]
    if "int8_calibration" in card:
        int8 = card["int8_calibration"]
        lines.append(
            f"- Static int8: activation ranges calibrated on {int8['images']} {int8['split']} images "
            f"({int8['method']}); the preprocessing inside the model stays fp32"
        )
    lines += ["", "## Intended use", "", *[f"- {text}" for text in INTENDED_USE]]
    lines += ["", "## Out-of-scope use", "", *[f"- {text}" for text in OUT_OF_SCOPE]]
    images = data.get("images") if isinstance(data.get("images"), Mapping) else {}
    split = ", ".join(f"{name} {count:,}" for name, count in images.items()) if images else "not recorded"
    source_text = (
        "synthetic drawn faces generated by `ferbench.data.synthetic` (`make demo`)"
        if synthetic
        else f"FER-2013 ({data.get('source', 'unknown')} source"
        + (f", Kaggle `{data['kaggle_dataset']}`" if data.get("kaggle_dataset") else "")
        + ")"
    )
    lines += [
        "",
        "## Training data",
        "",
        f"- {source_text}; archive SHA-256 `{data.get('archive_sha256', 'unknown')}`",
        f"- Images after the quality checks (duplicates and conflicts dropped): {split}. Val is held out of the "
        "Kaggle train folder, stratified; test is the Kaggle test folder",
        "",
        "## Training procedure",
        "",
        *_training_lines(provenance.get("training", {}) if isinstance(provenance.get("training"), Mapping) else {}),
    ]
    if "metrics" in card:
        lines += ["", "## Evaluation", "", *_evaluation_lines(card)]
    if "calibration" in card:
        test = card["calibration"]["test"]
        lines += [
            "",
            "## Calibration",
            "",
            f"Temperature {card['temperature']:.3f}, fitted on val. Test expected calibration error "
            f"({card['calibration'].get('ece_bins', 15)} bins) {test['ece']:.4f} before and {test['ece_scaled']:.4f} "
            f"after scaling; test negative log-likelihood {test['nll']:.4f} -> {test['nll_scaled']:.4f}.",
        ]
    if "latency" in card:
        latency = card["latency"]
        lines += [
            "",
            "## Latency",
            "",
            f"p50 {latency['p50_ms']:.2f} ms, p99 {latency['p99_ms']:.2f} ms ({latency['fps']:.0f} images/s) per "
            f"face at batch 1 on {latency['threads']} CPU threads of "
            f"{latency.get('machine', 'an unrecorded machine')}, "
            "model call only (face detection is extra); agreement with PyTorch fp32 on val: "
            f"{card['agreement_with_fp32_on_val'][card['variant']]:.2%}.",
        ]
    if "selection" in card:
        lines += ["", "## Why this model", "", card["selection"]["reason"]]
    lines += [
        "",
        "## Limitations and biases",
        "",
        *[f"- {text}" for text in card.get("limitations", [])],
        *([] if synthetic else [f"- {text}" for text in BIASES]),
        "",
        "## How to reproduce",
        "",
        f"Check out ferbench at `{provenance.get('git_revision', 'unknown')}`, then `make real` (the CPU preset "
        "on FER-2013; Kaggle credentials, or a local zip: docs/real-data.md). The folder is "
        "`runs/real-cpu/models/selected/`."
        if not synthetic
        else "`make demo`; the folder is `demo/models/selected/`.",
        "",
        "## Data terms and citation",
        "",
        DATA_TERMS,
        "",
        f"FER-2013: {FER2013_CITATION}.",
        "",
    ]
    return "\n".join(lines)


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
    if path.stat().st_size > MAX_CARD_BYTES:
        raise FerbenchError(f"{path}: not a model card (a regular file of at most {MAX_CARD_BYTES:,} bytes)")
    try:
        card = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise FerbenchError(
            f"{path}: not a readable model card ({reason}); re-export the model with `dvc repro select`"
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
        if role == "model" or role in card["files"]:  # a released folder carries no checkpoint
            card_file(folder, card, role)
    checksums = card.get("sha256", {})
    if not isinstance(checksums, dict) or not all(
        isinstance(value, str) and len(value) == 64 for value in checksums.values()
    ):
        raise FerbenchError(f"{path}: the card's sha256 must map file names to SHA-256 hex digests")
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


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checksums(folder: Path, files: Mapping[str, str]) -> dict[str, str]:
    """The card's `sha256`: each named file's digest, so a damaged or swapped file is caught at load."""
    return {name: file_sha256(Path(folder) / name) for name in sorted(set(files.values()))}


def verified_file(folder: Path, card: Mapping[str, Any], role: str) -> Path:
    """`card_file` for `role`, present, and matching the card's SHA-256 when the card records one."""
    path = card_file(folder, card, role)
    if not path.is_file():
        raise FerbenchError(f"{path}: the {role} file the card names is missing; copy the whole model folder")
    expected = card.get("sha256", {}).get(card["files"][role])
    if expected is not None and file_sha256(path) != expected:
        raise FerbenchError(
            f"{path}: its SHA-256 differs from the card's; the file is damaged or was replaced: copy the model "
            "folder again"
        )
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
        "test_accuracy_ci95": metrics["test_accuracy_ci95"],
        "test_accuracy_fp32": metrics["test_accuracy_fp32"],
        "test_macro_f1": metrics["test_macro_f1"],
        "test_macro_f1_ci95": metrics["test_macro_f1_ci95"],
        "test_leakage_free_accuracy": metrics["test_leakage_free_accuracy"],
        "test_leakage_free_accuracy_ci95": metrics["test_leakage_free_accuracy_ci95"],
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
