"""Classification metrics from labels and predictions (no extra dependency)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ferbench.errors import FerbenchError


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """Rows are true classes, columns predicted classes."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    return matrix


def classification_metrics(labels: np.ndarray, predictions: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class recall and F1, and the confusion matrix."""
    matrix = confusion_matrix(labels, predictions, len(classes))
    true_positive = np.diag(matrix).astype(np.float64)
    support = matrix.sum(axis=1)
    predicted = matrix.sum(axis=0)
    recall = np.divide(true_positive, support, out=np.zeros_like(true_positive), where=support > 0)
    precision = np.divide(true_positive, predicted, out=np.zeros_like(true_positive), where=predicted > 0)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros_like(true_positive), where=denominator > 0)
    present = support > 0
    return {
        "accuracy": float(true_positive.sum() / max(len(labels), 1)),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_class_recall": {name: float(value) for name, value in zip(classes, recall, strict=True)},
        "per_class_f1": {name: float(value) for name, value in zip(classes, f1, strict=True)},
        "confusion_matrix": matrix.tolist(),
    }


def wilson_interval(successes: int, total: int) -> list[float]:
    """95% Wilson score interval of a proportion (accuracy, recall): honest near 0 and 1 and for small
    classes, where the normal approximation is not (SciPy's, through its binomial test). Imported here: SciPy's
    statistics take a second to import, and only deploy's model card asks for intervals."""
    if total <= 0:
        return [0.0, 1.0]
    from scipy.stats import binomtest

    interval = binomtest(successes, total).proportion_ci(confidence_level=0.95, method="wilson")
    return [float(interval.low), float(interval.high)]


def macro_f1_interval(
    labels: np.ndarray, predictions: np.ndarray, num_classes: int, rounds: int = 1000, seed: int = 0
) -> list[float]:
    """95% percentile-bootstrap interval of macro-F1 (images resampled with replacement; vectorised over
    rounds through per-round confusion counts)."""
    if len(labels) == 0:
        return [0.0, 0.0]
    rng = np.random.default_rng(seed)
    cell = labels.astype(np.int64) * num_classes + predictions.astype(np.int64)
    counts = np.stack(
        [np.bincount(cell[rng.integers(0, len(cell), len(cell))], minlength=num_classes**2) for _ in range(rounds)]
    ).reshape(rounds, num_classes, num_classes)
    true_positive = np.diagonal(counts, axis1=1, axis2=2).astype(np.float64)
    support, predicted = counts.sum(axis=2), counts.sum(axis=1)
    denominator = support + predicted  # F1 = 2 TP / (support + predicted)
    f1 = np.divide(2 * true_positive, denominator, out=np.zeros_like(true_positive), where=denominator > 0)
    present = support > 0
    scores = (f1 * present).sum(axis=1) / np.maximum(present.sum(axis=1), 1)
    low, high = np.percentile(scores, [2.5, 97.5])
    return [float(low), float(high)]


def evaluation_report(labels: np.ndarray, predictions: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """What a model card says about one test set: accuracy and macro-F1 with 95% intervals, and per class
    the images, recall (with its interval) and F1."""
    scores = classification_metrics(labels, predictions, classes)
    matrix = np.asarray(scores["confusion_matrix"])
    support = matrix.sum(axis=1)
    return {
        "images": len(labels),
        "accuracy": scores["accuracy"],
        "accuracy_ci95": wilson_interval(int(np.trace(matrix)), len(labels)),
        "macro_f1": scores["macro_f1"],
        "macro_f1_ci95": macro_f1_interval(labels, predictions, len(classes)),
        "per_class": {
            name: {
                "images": int(support[index]),
                "recall": scores["per_class_recall"][name],
                "recall_ci95": wilson_interval(int(matrix[index, index]), int(support[index])),
                "f1": scores["per_class_f1"][name],
            }
            for index, name in enumerate(classes)
        },
    }


def read_metrics(path: Path) -> dict[str, Any]:
    """A metrics JSON written by an earlier stage; missing means that stage has not run."""
    if not path.is_file():
        raise FerbenchError(f"{path}: not found; run `dvc repro` (the stage that writes it has not run)")
    return json.loads(path.read_text())


def write_json(path: Path, record: Mapping[str, Any]) -> None:
    """Write a metrics or details JSON (indented, newline-terminated), creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, default=_plain) + "\n")


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")
