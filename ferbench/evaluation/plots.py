"""Plots written as data files for `dvc plots show` and as PNGs for people.

The confusion matrix, which every training stage draws, is plain matplotlib: seaborn (and the SciPy statistics it
imports) would add about two seconds to the start of each of those processes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ferbench.files import write_frame_csv


def save_class_distribution(
    counts: Mapping[str, Mapping[str, int]], classes: Sequence[str], csv_path: Path, png_path: Path
) -> pd.DataFrame:
    """Write images per class and split: long-format CSV (class, split, count) and a bar chart."""
    frame = pd.DataFrame(
        [
            {"class": name, "split": split, "count": int(per_class[name])}
            for split, per_class in counts.items()
            for name in classes
        ]
    )
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    write_frame_csv(frame, csv_path)
    import seaborn as sns

    sns.set_theme(style="whitegrid")
    figure, axes = plt.subplots(figsize=(8, 4.5))
    sns.barplot(data=frame, x="class", y="count", hue="split", ax=axes)
    axes.set_title("Images per class and split")
    axes.set_xlabel("")
    figure.tight_layout()
    png_path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(png_path, dpi=110)
    plt.close(figure)
    return frame


def save_confusion_matrix(matrix: np.ndarray, classes: Sequence[str], png_path: Path, title: str) -> None:
    """A heatmap of a confusion matrix, rows normalised to recall, with counts annotated."""
    totals = matrix.sum(axis=1, keepdims=True)
    normalised = np.divide(matrix, totals, out=np.zeros(matrix.shape, dtype=float), where=totals > 0)
    figure, axes = plt.subplots(figsize=(6.5, 5.5))
    image = axes.imshow(normalised, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    figure.colorbar(image, ax=axes, label="share of the true class")
    for (row, column), count in np.ndenumerate(matrix):
        colour = "white" if normalised[row, column] > 0.6 else "black"  # readable on dark and light cells
        axes.text(column, row, str(count), ha="center", va="center", color=colour, fontsize=9)
    axes.set_xticks(range(len(classes)), classes, rotation=90)
    axes.set_yticks(range(len(classes)), classes)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title)
    figure.tight_layout()
    png_path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(png_path, dpi=110)
    plt.close(figure)
