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
