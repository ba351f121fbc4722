"""The report's plots: each writes its data file (for `dvc plots show`) where it has one, and a seaborn PNG
of a table that `report_tables` built."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.ticker import LogLocator, MaxNLocator, NullFormatter, ScalarFormatter

from ferbench.files import write_frame_csv
from ferbench.shipping.report_tables import CURVE_STAGES


def _save(figure: plt.Figure, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_benchmark(long: pd.DataFrame, baseline: tuple[str, float], csv_path: Path, png_path: Path) -> None:
    """Test accuracy per backbone (`accuracy_bars`): frozen extractor and fine-tuned (the benchmark), the
    candidates' final training and the shipped model, each bar labelled with its value, and the accuracy of
    always answering the most frequent class (`baseline`)."""
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    write_frame_csv(long, csv_path)
    sns.set_theme(style="whitegrid")
    figure, axes = plt.subplots(figsize=(9, 4.8))
    sns.barplot(data=long, x="backbone", y="test_accuracy", hue="mode", ax=axes)
    for bars in axes.containers:
        axes.bar_label(bars, fmt="%.3f", fontsize=7, padding=2)
    axes.axhline(baseline[1], color="black", linestyle="--", linewidth=1)
    axes.annotate(
        f"chance: always '{baseline[0]}' ({baseline[1]:.1%})",
        (0, baseline[1]),
        xycoords=("axes fraction", "data"),
        xytext=(4, 4),
        textcoords="offset points",
        fontsize=9,
    )
    axes.set_ylim(0, 1)
    axes.set_title("Test accuracy: frozen features, fine-tuned (benchmark), final training, shipped")
    axes.set_xlabel("")
    axes.legend(fontsize=8, loc="upper left", ncols=4)
    _save(figure, png_path)


def plot_learning_curves(curves: pd.DataFrame, csv_path: Path, png_path: Path) -> None:
    """Accuracy and loss per epoch of every run, train and val overlaid in one panel per stage and
    metric, the kept (best-on-val) epoch marked."""
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    write_frame_csv(curves, csv_path)
    sns.set_theme(style="whitegrid")
    stages = [stage for stage in CURVE_STAGES if stage in set(curves["stage"])]
    figure, grid = plt.subplots(len(stages), 2, figsize=(11, 3.4 * len(stages)), squeeze=False)
    backbones = sorted(set(curves["backbone"]))
    palette = dict(zip(backbones, sns.color_palette(n_colors=len(backbones)), strict=True))
    for row, stage in enumerate(stages):
        for column, metric in enumerate(("accuracy", "loss")):
            axes = grid[row][column]
            subset = curves[curves["stage"] == stage]
            for (backbone, split), line in subset.groupby(["backbone", "split"]):
                axes.plot(
                    line["epoch"],
                    line[metric],
                    color=palette[backbone],
                    linestyle="-" if split == "train" else "--",
                    label=f"{backbone} {split}",
                )
                best = line[line["best"]]
                if split == "val" and len(best):
                    axes.plot(best["epoch"], best[metric], marker="*", markersize=13, color=palette[backbone])
            axes.set_title(f"{stage}: {metric}")
            axes.set_xlabel("epoch")
            axes.xaxis.set_major_locator(MaxNLocator(integer=True))
            if column == 1:
                axes.legend(fontsize=8, loc="upper right")
    figure.suptitle("Learning curves (solid train, dashed val, star: the kept epoch)", y=1.0)
    _save(figure, png_path)


def plot_accuracy_latency(points: pd.DataFrame, shipped: pd.DataFrame, csv_path: Path, png_path: Path) -> None:
    """What ships (stars: each candidate's final model as deployed, val accuracy against CPU p50) over every
    runtime variant of the fine-tune benchmark (faded; unfaithful variants crossed out), the Pareto front of
    the faithful benchmark variants and the latency budget."""
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    write_frame_csv(
        pd.concat([points.assign(kind="benchmark"), shipped.assign(kind="shipped", faithful=True)]), csv_path
    )
    sns.set_theme(style="whitegrid")
    figure, axes = plt.subplots(figsize=(8.5, 5.2))
    faithful = points[points["faithful"]]
    sns.scatterplot(
        data=faithful, x="latency_ms", y="val_accuracy", hue="variant", style="backbone", s=60, alpha=0.6, ax=axes
    )
    unfaithful = points[~points["faithful"]]
    if len(unfaithful):
        axes.scatter(
            unfaithful["latency_ms"],
            unfaithful["val_accuracy"],
            marker="x",
            color="grey",
            s=40,
            label="unfaithful to fp32 (never ships)",
        )
    front = points[points["pareto"]].sort_values("latency_ms")
    axes.plot(front["latency_ms"], front["val_accuracy"], color="grey", linestyle=":", label="benchmark Pareto front")
    axes.scatter(
        shipped["latency_ms"],
        shipped["val_accuracy"],
        marker="*",
        s=320,
        color="gold",
        edgecolor="black",
        zorder=5,
        label="shipped (final training)",
    )
    for _, point in shipped.iterrows():
        axes.annotate(
            point["backbone"] + (" (selected)" if point["selected"] else ""),
            (point["latency_ms"], point["val_accuracy"]),
            textcoords="offset points",
            xytext=(8, 4),
            fontsize=9,
            weight="bold" if point["selected"] else "normal",
        )
    budget = points["budget_ms"].iloc[0]
    if budget is not None and not pd.isna(budget):
        axes.axvline(budget, color="red", linestyle="--", linewidth=1, label=f"budget {budget:g} ms")
    axes.set_xscale("log")
    axes.xaxis.set_major_locator(LogLocator(base=10, subs=(1, 2, 5)))  # 0.5, 1, 2, 5 ms: labels within a decade
    axes.xaxis.set_major_formatter(ScalarFormatter())
    axes.xaxis.set_minor_formatter(NullFormatter())
    axes.set_xlabel("CPU latency, batch 1, p50 (ms, log scale)")
    axes.set_ylabel("val accuracy")
    axes.set_title("Accuracy against CPU latency: shipped models and the benchmark's runtime variants")
    axes.legend(fontsize=7, loc="best")
    _save(figure, png_path)


def plot_per_class(table: pd.DataFrame, csv_path: Path, png_path: Path) -> None:
    """Test F1 per class of every candidate."""
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    write_frame_csv(table, csv_path)
    sns.set_theme(style="whitegrid")
    figure, axes = plt.subplots(figsize=(8, 4.5))
    sns.barplot(data=table, x="class", y="f1", hue="candidate", ax=axes)
    axes.set_ylim(0, 1)
    axes.set_xlabel("")
    axes.set_ylabel("test F1")
    axes.set_title("Candidates: test F1 per class")
    _save(figure, png_path)


def plot_confident_mistakes(mistakes: pd.DataFrame, images: np.ndarray, png_path: Path) -> None:
    """A grid of the shipped model's most confident mistakes: the test face, true and predicted class."""
    columns = 4
    rows = max(1, -(-len(mistakes) // columns))
    figure, grid = plt.subplots(rows, columns, figsize=(2.3 * columns, 2.6 * rows), squeeze=False)
    for axes in grid.flat:
        axes.axis("off")
    for axes, (_, mistake) in zip(grid.flat, mistakes.iterrows(), strict=False):
        axes.imshow(images[int(mistake["index"])], cmap="gray", vmin=0, vmax=255)
        axes.set_title(
            f"#{int(mistake['index'])} true {mistake['actual']}\nsaid {mistake['predicted']} "
            f"({mistake['confidence']:.0%})",
            fontsize=9,
        )
    if mistakes.empty:
        grid[0][0].text(0, 0.5, "no mistakes on test", fontsize=12)
    figure.suptitle("Shipped model: most confident mistakes on test", y=1.0)
    _save(figure, png_path)


def plot_reliability(reliability: pd.DataFrame, temperature: float, png_path: Path) -> None:
    """The shipped model's reliability diagram on test: accuracy against confidence per bin, before and
    after temperature scaling, with the diagonal of perfect calibration."""
    sns.set_theme(style="whitegrid")
    figure, axes = plt.subplots(figsize=(6.5, 5))
    counts = axes.twinx()  # how many test images each bin holds (after scaling), behind the curves
    width = float(np.diff(reliability["bin_center"]).min()) if len(reliability) > 1 else 0.05
    bars = counts.bar(reliability["bin_center"], reliability["count_after"], width=width * 0.9, color="grey", alpha=0.2)
    counts.bar_label(bars, labels=[str(int(n)) if n else "" for n in reliability["count_after"]], fontsize=6)
    counts.set_ylabel("test images per bin (after scaling)")
    counts.grid(False)
    axes.set_zorder(counts.get_zorder() + 1)
    axes.patch.set_visible(False)
    axes.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfectly calibrated")
    for name, label in (("before", "before (T = 1)"), ("after", f"after (T = {temperature:.2f})")):
        filled = reliability[reliability[f"count_{name}"] > 0]
        axes.plot(filled[f"confidence_{name}"], filled[f"accuracy_{name}"], marker="o", label=label)
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.set_xlabel("confidence (mean of the bin)")
    axes.set_ylabel("accuracy")
    axes.set_title("Selected model as shipped: test reliability")
    axes.legend(loc="upper left")
    _save(figure, png_path)
