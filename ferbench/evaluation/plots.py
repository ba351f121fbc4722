"""Plots written as data files for `dvc plots show` and as seaborn PNGs for people."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

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
    """A seaborn heatmap of a confusion matrix, rows normalised to recall, with counts annotated."""
    totals = matrix.sum(axis=1, keepdims=True)
    normalised = np.divide(matrix, totals, out=np.zeros(matrix.shape, dtype=float), where=totals > 0)
    figure, axes = plt.subplots(figsize=(6.5, 5.5))
    sns.heatmap(
        normalised,
        annot=matrix,
        fmt="d",
        cmap="Blues",
        vmin=0,
        vmax=1,
        xticklabels=classes,
        yticklabels=classes,
        ax=axes,
        cbar_kws={"label": "share of the true class"},
    )
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title)
    figure.tight_layout()
    png_path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(png_path, dpi=110)
    plt.close(figure)
