"""The comparison report: plots (data files for `dvc plots show` and seaborn PNGs), the summary
metrics and the Markdown report, all built from what the other stages wrote to `reports/details/`,
their DVCLive curves and the shipped model's test predictions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.ticker import LogLocator, MaxNLocator, NullFormatter, ScalarFormatter

from ferbench.errors import FerbenchError
from ferbench.evaluation.metrics import confusion_matrix, read_metrics, write_json
from ferbench.evaluation.plots import save_confusion_matrix
from ferbench.files import write_frame_csv
from ferbench.paths import stage_curves, stage_details

BENCHMARK_STAGES = ("feature_extract", "finetune")
FINAL_STAGES = ("train", "distill")  # the candidates' longer training and the distilled students
CURVE_STAGES = (*BENCHMARK_STAGES, *FINAL_STAGES)
MISTAKES_SHOWN = 16


@dataclass
class ReportInputs:
    """Where the report reads: the stages' details files, their DVCLive curves, the shipped model's
    test predictions and reliability table, the prepared test images and the data's provenance."""

    details: Path
    live: Path
    selected_predictions: Path
    reliability: Path
    test_images: Path
    provenance: Path


@dataclass
class ReportOutputs:
    """Where the report writes: plot data and PNGs, the summary metrics and the Markdown report."""

    plots: Path
    summary: Path
    markdown: Path


def collect(details: Path, backbones: Sequence[str], final: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    """Every record the report needs, read once (`final`: the names each of FINAL_STAGES trained)."""
    return {
        "data": read_metrics(details / "data.json"),
        "benchmark": {
            stage: {name: read_metrics(stage_details(stage, name, details)) for name in backbones}
            for stage in BENCHMARK_STAGES
        },
        "final": {
            stage: {name: read_metrics(stage_details(stage, name, details)) for name in final.get(stage, ())}
            for stage in FINAL_STAGES
        },
        "latency": {name: read_metrics(stage_details("latency", name, details)) for name in backbones},
        "selection": read_metrics(details / "selection.json"),
    }


def majority_baseline(data: Mapping[str, Any]) -> tuple[str, float]:
    """The class a constant guess would pick (the most frequent in train) and its test accuracy."""
    counts = data["counts"]
    classes = [name for name in counts["train"] if name != "total"]
    majority = max(classes, key=lambda name: counts["train"][name])
    return majority, counts["test"][majority] / max(counts["test"]["total"], 1)


def learning_curves(live: Path, runs: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> pd.DataFrame:
    """Per-epoch train/val accuracy and loss of every benchmarked and trained model (its DVCLive
    files), one row per run, split and epoch; `best` marks the epoch whose weights were kept."""
    frames = []
    for stage, records in runs.items():
        for name, record in records.items():
            for split in ("train", "val"):
                columns = {}
                for metric in ("accuracy", "loss"):
                    path = stage_curves(stage, name, live) / "plots" / "metrics" / split / f"{metric}.tsv"
                    if not path.is_file():
                        raise FerbenchError(f"{path}: not found; run `dvc repro {stage}@{name}`")
                    curve = pd.read_csv(path, sep="\t")
                    columns["epoch"] = curve["step"] + 1
                    columns[metric] = curve[metric]
                frame = pd.DataFrame(columns)
                frame.insert(0, "run", f"{stage}@{name}")
                frame.insert(1, "stage", stage)
                frame.insert(2, "backbone", name)
                frame.insert(3, "split", split)
                frame["best"] = frame["epoch"] == record["best_epoch"]
                frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def benchmark_table(data: Mapping[str, Any]) -> pd.DataFrame:
    """One row per backbone: accuracy as frozen extractor and fine-tuned, latency, size."""
    rows = []
    for name, latency in data["latency"].items():
        variants = latency["variants"]
        fastest = latency["fastest_faithful"]
        row = {"backbone": name}
        for stage in BENCHMARK_STAGES:
            metrics = data["benchmark"][stage][name]
            row[f"{stage}_val"] = metrics["val"]["accuracy"]
            row[f"{stage}_test"] = metrics["test"]["accuracy"]
            row[f"{stage}_test_leakage_free"] = metrics.get("test_leakage_free", {}).get("accuracy")
        row["finetune_test_tta"] = data["benchmark"]["finetune"][name].get("tta", {}).get("test", {}).get("accuracy")
        row.update(
            {
                "torch_fp32_p50_ms": variants["torch_fp32"]["p50_ms"],
                "fastest_variant": fastest,
                "fastest_p50_ms": variants[fastest]["p50_ms"],
                "gflops": latency["gflops"],
                "parameters_m": latency["parameters_m"],
            }
        )
        rows.append(row)
    return pd.DataFrame(rows)


def final_runs(data: Mapping[str, Any]) -> list[tuple[str, str, Mapping[str, Any]]]:
    """(stage, name, details) of every candidate's longer training and every distilled student."""
    return [(stage, name, metrics) for stage, runs in data["final"].items() for name, metrics in runs.items()]


def candidate_table(data: Mapping[str, Any], shipping: Mapping[str, str]) -> pd.DataFrame:
    """One row per trained model (`train@` candidates, `distill@` students); `shipping`: select.candidates,
    whose runs carry their selection rank and score."""
    ranking = {entry["name"]: entry for entry in data["selection"]["ranking"]}
    rows = []
    for stage, name, metrics in final_runs(data):
        entry = ranking.get(name, {}) if shipping.get(name) == stage else {}
        tta = metrics.get("tta", {})
        calibration = metrics.get("calibration", {})
        rows.append(
            {
                "model": f"{stage}@{name}",
                "trainable": metrics.get("trainable"),
                "val": metrics["val"]["accuracy"],
                "val_tta": tta.get("val", {}).get("accuracy"),
                "test": metrics["test"]["accuracy"],
                "test_tta": tta.get("test", {}).get("accuracy"),
                "test_leakage_free": metrics.get("test_leakage_free", {}).get("accuracy"),
                "test_macro_f1": metrics["test"]["macro_f1"],
                "train": metrics["train"]["accuracy"],
                "test_ece": calibration.get("test", {}).get("ece"),
                "test_ece_scaled": calibration.get("test", {}).get("ece_scaled"),
                "accuracy_gap": metrics["overfitting"]["accuracy_gap"],
                "loss_gap": metrics["overfitting"]["loss_gap"],
                "best_epoch": metrics["best_epoch"],
                "epochs": metrics["epochs"],
                "score": entry.get("score"),
                "rank": entry.get("rank"),
                "excluded": entry.get("excluded"),
            }
        )
    return pd.DataFrame(rows)


def per_class_table(data: Mapping[str, Any], classes: Sequence[str]) -> pd.DataFrame:
    """Test recall and F1 per class of every candidate (PyTorch fp32, no TTA), long format."""
    rows = []
    for stage, name, metrics in final_runs(data):
        test = metrics["test"]
        if "per_class_f1" not in test:
            raise FerbenchError(
                f"reports/details/{stage}/{name}.json: no per-class F1; rerun `dvc repro {stage}@{name}`"
            )
        for label in classes:
            rows.append(
                {
                    "candidate": f"{stage}@{name}",
                    "class": label,
                    "recall": test["per_class_recall"][label],
                    "f1": test["per_class_f1"][label],
                    "test_images": data["data"]["counts"]["test"][label],
                }
            )
    return pd.DataFrame(rows)


def variant_points(data: Mapping[str, Any], budget_ms: float | None) -> pd.DataFrame:
    """Every runtime variant of every fine-tuned backbone: CPU p50 and val accuracy, whether it is
    faithful to fp32 (agreement on val), whether it is on the Pareto front of the faithful variants (no
    other faithful variant is both at least as fast and at least as accurate, and better in one) and
    within the latency budget."""
    rows = []
    for name, latency in data["latency"].items():
        for variant, result in latency["variants"].items():
            rows.append(
                {
                    "backbone": name,
                    "variant": variant,
                    "latency_ms": result["p50_ms"],
                    "val_accuracy": result["val_accuracy"],
                    "agreement": result["agreement"],
                    "faithful": result["agreement"] >= latency["min_agreement"],
                    "fastest_faithful": variant == latency["fastest_faithful"],
                }
            )
    points = pd.DataFrame(rows)
    faithful = points["faithful"].to_numpy()
    latency, accuracy = points["latency_ms"].to_numpy(), points["val_accuracy"].to_numpy()
    dominated = [
        bool(
            np.any(
                faithful
                & (latency <= latency[i])
                & (accuracy >= accuracy[i])
                & ((latency < latency[i]) | (accuracy > accuracy[i]))
            )
        )
        for i in range(len(points))
    ]
    points["pareto"] = faithful & ~np.array(dominated)  # an unfaithful variant never ships, so never leads
    points["within_budget"] = True if budget_ms is None else points["latency_ms"] <= budget_ms
    points["budget_ms"] = budget_ms
    return points


def shipped_points(data: Mapping[str, Any]) -> pd.DataFrame:
    """What each candidate ships (select's ranking): the final model's val accuracy as deployed and its CPU p50."""
    return pd.DataFrame(
        [
            {
                "backbone": entry["name"],
                "variant": "shipped (final model)",
                "latency_ms": entry["latency_ms"],
                "val_accuracy": entry["val_accuracy"],
                "selected": entry["name"] == data["selection"]["selected"],
            }
            for entry in data["selection"]["ranking"]
        ]
    )


def _save(figure: plt.Figure, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_benchmark(
    table: pd.DataFrame, data: Mapping[str, Any], baseline: tuple[str, float], csv_path: Path, png_path: Path
) -> None:
    """Test accuracy per backbone: frozen extractor and fine-tuned (the benchmark), the candidates' final
    training and the shipped model, each bar labelled with its value, and the accuracy of always
    answering the most frequent class."""
    long = table.melt(
        id_vars="backbone",
        value_vars=[f"{stage}_test" for stage in BENCHMARK_STAGES],
        var_name="mode",
        value_name="test_accuracy",
    )
    long["mode"] = long["mode"].str.removesuffix("_test")
    final = [
        {"backbone": name, "mode": "final" if stage == "train" else "distilled", "test_accuracy": m["test"]["accuracy"]}
        for stage, name, m in final_runs(data)
    ]
    selection = data["selection"]
    shipped = {
        "backbone": selection["selected"],
        "mode": "shipped",
        "test_accuracy": selection["deployment"]["test_accuracy"],
    }
    long = pd.concat([long, pd.DataFrame([*final, shipped])], ignore_index=True)
    long.insert(0, "model", long["backbone"] + " " + long["mode"])
    long["chance"] = baseline[1]
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


def confident_mistakes(predictions: pd.DataFrame, count: int = MISTAKES_SHOWN) -> pd.DataFrame:
    """The shipped model's wrong test answers it was surest of, most confident first."""
    wrong = predictions[predictions["actual"] != predictions["predicted"]]
    return wrong.sort_values(["confidence", "index"], ascending=[False, True]).head(count)


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


def _markdown(frame: pd.DataFrame, formats: Mapping[str, str]) -> str:
    """A pipe table (pandas' `to_markdown`), each column of `formats` formatted with its spec, missing cells empty."""

    def cell(value: Any, spec: str | None) -> str:
        if value is None or (isinstance(value, float) and np.isnan(value)):
            return ""
        return format(value, spec) if spec else str(value)

    text = pd.DataFrame(
        {column: [cell(value, formats.get(column)) for value in frame[column]] for column in frame.columns}
    )
    return text.to_markdown(index=False, disable_numparse=True)


# Published FER-2013 results on the same Kaggle test folder (public + private test, 7,178 images), and the
# popular `fer` package, for the report's comparison table: (what, test accuracy, where it comes from).
REFERENCES: tuple[tuple[str, str, str], ...] = (
    ("Human accuracy (estimated)", "65% +- 5", "Goodfellow et al. 2013, arXiv:1307.0414"),
    ("The original study: CLIP ViT-B/32, 30 epochs", "62.4%", "the study this pipeline reproduces"),
    ("mini-Xception (the model of the `fer` package)", "66%", "Arriaga et al. 2017, arXiv:1710.07557"),
    ("VGG-style CNN from scratch, tuned schedule (single model)", "73.3%", "Khaireddin & Chen 2021, arXiv:2105.03588"),
    ("Ensemble of 8 CNNs", "75.2%", "Pramerdorfer & Kampel 2016, arXiv:1612.02903"),
)


def distillation_section(data: Mapping[str, Any]) -> list[str]:
    """Each distilled student beside its teachers and beside its backbone trained on the labels alone on the
    same schedule (`train@<backbone>`, when it is a candidate too): the gain distillation buys."""
    lines: list[str] = []
    for name, student in data["final"]["distill"].items():
        record = student["distillation"]
        rows = [
            {
                "model": f"teacher {teacher['stage']}@{teacher['name']}",
                "views": str(teacher["views"]),
                "val": teacher["val_accuracy"],
                "test": teacher["test_accuracy"],
            }
            for teacher in record["teachers"]
        ]
        rows.append(
            {"model": "teachers together", "val": record["ensemble"]["val"], "test": record["ensemble"]["test"]}
        )
        runs = [(f"distill@{name} (student)", student)]
        baseline = data["final"]["train"].get(name)
        if baseline is not None:
            what = "its starting point" if record.get("warm_start") else "same schedule, labels only"
            runs.append((f"train@{name} ({what})", baseline))
        for label, metrics in runs:
            rows.append(
                {
                    "model": label,
                    "views": "1",
                    "val": metrics["val"]["accuracy"],
                    "test": metrics["test"]["accuracy"],
                    "test_tta": metrics.get("tta", {}).get("test", {}).get("accuracy"),
                    "test_leakage_free": metrics["test_leakage_free"]["accuracy"],
                    "test_macro_f1": metrics["test"]["macro_f1"],
                }
            )
        start = (
            f"started from the weights of `{record['warm_start']}` and "
            if record.get("warm_start")
            else "started at random and "
        )
        lines += [
            f"## Distillation: {name}",
            "",
            f"`distill@{name}` {start}learned from the labels and from its teachers' soft labels (kd_weight "
            f"{record['kd_weight']:g}, temperature {record['temperature']:g}, {record['targets']} targets); the "
            "teachers' accuracies are over their views (view-averaged logits).",
            "",
            _markdown(
                pd.DataFrame(rows),
                dict.fromkeys(("val", "test", "test_tta", "test_leakage_free", "test_macro_f1"), ".4f"),
            ),
            "",
        ]
        if baseline is not None:
            gain = {split: student[split]["accuracy"] - baseline[split]["accuracy"] for split in ("val", "test")}
            gain["test_leakage_free"] = (
                student["test_leakage_free"]["accuracy"] - baseline["test_leakage_free"]["accuracy"]
            )
            classes = list(student["test"]["per_class_recall"])
            recall = pd.DataFrame(
                {
                    "class": classes,
                    f"distill@{name}": [student["test"]["per_class_recall"][label] for label in classes],
                    f"train@{name}": [baseline["test"]["per_class_recall"][label] for label in classes],
                }
            )
            versus = (
                f"Against `train@{name}`, whose weights it started from (so the gain is that of the student's "
                "further epochs and its teachers together; `scripts/bench_distill.py --modes none` separates them)"
                if record.get("warm_start")
                else "Gain from distillation on the same schedule"
            )
            lines += [
                f"{versus}: val {gain['val']:+.4f}, test {gain['test']:+.4f}, "
                f"leakage-free test {gain['test_leakage_free']:+.4f}. Test recall per class:",
                "",
                _markdown(recall, dict.fromkeys(recall.columns[1:], ".3f")),
                "",
            ]
    return lines


def _ci(interval: Sequence[float], style: str = ".4f") -> str:
    return f"95% CI {interval[0]:{style}}-{interval[1]:{style}}"


def references_section(deployment: Mapping[str, Any], selected: str) -> list[str]:
    """The shipped model beside published results and the `fer` package on the same test folder."""
    ours = f"**{deployment['test_accuracy']:.1%}** ({_ci(deployment['test_accuracy_ci95'], '.1%')})"
    rows = [f"| **{selected}, as shipped** | {ours} | this report |"]
    rows += [f"| {what} | {accuracy} | {source} |" for what, accuracy, source in REFERENCES]
    return [
        "## Beside published results (FER-2013 test folder)",
        "",
        "| model | test accuracy | source |",
        "|---|---|---|",
        *rows,
        "",
        "Published figures are the authors' own, on the same 7,178 test images with their own training; the "
        "leakage-free figure above has no published counterpart.",
        "",
    ]


def _views(count: int) -> str:
    return f"test-time augmentation over {count} views" if count > 1 else "no test-time augmentation"


def data_section(data: Mapping[str, Any], provenance: Mapping[str, Any], baseline: tuple[str, float]) -> list[str]:
    """Where the data came from, images per class and split, and what the quality checks found."""
    counts = pd.DataFrame(data["counts"])
    counts = counts.loc[[name for name in counts.index if name != "total"] + ["total"]]  # the total last
    counts.index.name = "class"
    counts = counts.reset_index()
    quality = data["quality"]
    test_total = int(data["counts"]["test"]["total"])
    source = provenance.get("source", "unknown")
    digest = provenance.get("archive_sha256")
    return [
        "## Data",
        "",
        f"Source: `{source}`"
        + (f" (Kaggle dataset `{provenance['kaggle_dataset']}`)" if source == "kaggle" else "")
        + (f", archive SHA-256 `{digest[:16]}...` ({provenance.get('archive_bytes', 0):,} bytes)" if digest else "")
        + f"; {data['archive_files']['train']} train-folder and {data['archive_files']['test']} test-folder files.",
        "",
        _markdown(counts, {}),
        "",
        f"Quality checks: {quality['duplicate_images']} duplicate images in {quality['duplicate_groups']} groups, "
        f"{quality['label_conflict_groups']} groups with conflicting labels, {quality['near_blank']} near-blank, "
        f"{quality['skipped']} undecodable files skipped, {sum(quality['dropped'].values())} images dropped "
        f"({', '.join(f'{why} {n}' for why, n in quality['dropped'].items())}). Leakage: "
        f"{quality['test_images_in_train_folder']} of the {test_total} test images share their pixels "
        f"with {quality['train_test_shared_images']} images of the Kaggle train folder "
        f"({quality['train_test_shared_groups']} groups); the leakage-free test figures use the other "
        f"{quality['test_leakage_free_images']}.",
        "",
        f"Chance: always answering the most frequent train class ('{baseline[0]}') scores "
        f"{baseline[1]:.4f} on test; a uniform guess 1/{len(data['counts']['test']) - 1}.",
        "",
    ]


def results_markdown(
    data: Mapping[str, Any],
    provenance: Mapping[str, Any],
    tables: Mapping[str, pd.DataFrame],
    mistakes: pd.DataFrame,
    plots_link: str,
) -> str:
    selection = data["selection"]
    deployment = selection["deployment"]
    benchmark, candidates, points = tables["benchmark"], tables["candidates"], tables["points"]
    baseline = majority_baseline(data["data"])
    leakage_free_images = deployment["test_leakage_free_images"]
    accuracy = ".4f"
    accuracy_columns = dict.fromkeys([c for c in benchmark.columns if c.startswith(BENCHMARK_STAGES)], accuracy)
    per_class = tables["per_class"].pivot_table(index="class", columns="candidate", values=["recall", "f1"], sort=False)
    per_class.columns = [f"{candidate} {metric}" for metric, candidate in per_class.columns]
    per_class = per_class[sorted(per_class.columns)].reset_index()
    per_class.insert(1, "test images", tables["per_class"].groupby("class", sort=False)["test_images"].first().values)
    front = points[points["pareto"]].sort_values("latency_ms")
    budget = points["budget_ms"].iloc[0]
    return "\n".join(
        [
            "# ferbench results",
            "",
            "Written by the `report` stage from `reports/details/` and the DVCLive curves; regenerate with "
            "`dvc repro`.",
            "",
            *data_section(data["data"], provenance, baseline),
            "## Benchmark: every backbone, frozen feature extractor and fine-tuned",
            "",
            _markdown(
                benchmark,
                {
                    **accuracy_columns,
                    "torch_fp32_p50_ms": ".2f",
                    "fastest_p50_ms": ".2f",
                    "gflops": ".2f",
                    "parameters_m": ".1f",
                },
            ),
            "",
            "Latency: CPU, batch 1, p50 of the fine-tuned model; `fastest_variant` is the fastest runtime "
            "that agrees with PyTorch fp32 on the required share of val. `*_test_leakage_free`: accuracy on the "
            f"{leakage_free_images} test images whose pixels do not occur in the Kaggle train folder; "
            "`finetune_test_tta`: with test-time augmentation.",
            "",
            "## Accuracy against latency: what ships, and every runtime variant",
            "",
            "Shipped (each candidate's final model as deployed, val accuracy and CPU p50): "
            + ", ".join(
                f"{entry['name']} ({entry['latency_ms']:.2f} ms, {entry['val_accuracy']:.4f})"
                for entry in selection["ranking"]
            )
            + ". The benchmark: "
            f"{len(points)} variants of {points['backbone'].nunique()} fine-tuned backbones, "
            f"{int(points['faithful'].sum())} of them faithful to fp32 (agreement on val); on the Pareto front of "
            "the faithful ones (no other faithful variant is both at least as fast and at least as accurate on "
            "val): "
            + ", ".join(
                f"{row.backbone} {row.variant} ({row.latency_ms:.2f} ms, {row.val_accuracy:.4f})"
                for row in front.itertuples()
            )
            + "."
            + (
                f" Latency budget (`select.latency_budget_ms`): {budget:g} ms; "
                f"{int(points['within_budget'].sum())} variants are within it."
                if budget is not None and not pd.isna(budget)
                else " No latency budget set (`select.latency_budget_ms: null`)."
            ),
            "",
            "## Candidates: final training and selection",
            "",
            _markdown(
                candidates,
                {
                    "val": accuracy,
                    "val_tta": accuracy,
                    "test": accuracy,
                    "test_tta": accuracy,
                    "test_leakage_free": accuracy,
                    "test_macro_f1": accuracy,
                    "train": accuracy,
                    "test_ece": accuracy,
                    "test_ece_scaled": accuracy,
                    "accuracy_gap": "+.4f",
                    "loss_gap": "+.4f",
                    "score": accuracy,
                },
            ),
            "",
            "`_tta`: with test-time augmentation; `test_ece` / `test_ece_scaled`: expected calibration error "
            "(15 bins) before / after a temperature fitted on val; `best_epoch`: the epoch whose weights were "
            "kept (best val accuracy).",
            "",
            *distillation_section(data),
            "### Per class (test, PyTorch fp32, no test-time augmentation)",
            "",
            _markdown(per_class, dict.fromkeys(per_class.columns[2:], ".3f")),
            "",
            f"**Selected: {selection['selected']}** (criterion `{selection['criterion']['name']}`). "
            f"{selection['reason']}.",
            "",
            f"Shipped as `{deployment['file']}` ({deployment['variant']}, {deployment['runtime']}, "
            f"{_views(deployment['tta_views'])}): test accuracy **{deployment['test_accuracy']:.4f}** "
            f"({_ci(deployment['test_accuracy_ci95'])}; the checkpoint alone in PyTorch fp32: "
            f"{deployment['test_accuracy_fp32']:.4f}), macro-F1 {deployment['test_macro_f1']:.4f} "
            f"({_ci(deployment['test_macro_f1_ci95'])}); leakage-free test accuracy "
            f"**{deployment['test_leakage_free_accuracy']:.4f}** "
            f"({_ci(deployment['test_leakage_free_accuracy_ci95'])}) "
            f"on {deployment['test_leakage_free_images']} images; agreement with fp32 on val "
            f"{deployment['agreement_with_fp32_on_val']:.4f}; CPU p50 {deployment['latency_p50_ms']:.2f} ms.",
            "",
            f"Calibration (temperature {deployment['temperature']:.3f}, fitted on val and applied by the app and "
            "the CLI): "
            f"test ECE {deployment['test_ece']:.4f} -> {deployment['test_ece_scaled']:.4f}, test NLL "
            f"{deployment['test_nll']:.4f} -> {deployment['test_nll_scaled']:.4f}.",
            "",
            *references_section(deployment, selection["selected"]),
            "### Most confident mistakes of the shipped model (test)",
            "",
            _markdown(
                mistakes[["index", "actual", "predicted", "confidence"]].rename(columns={"index": "test image"}),
                {"confidence": ".3f"},
            )
            if len(mistakes)
            else "None: the shipped model answers every test image correctly.",
            "",
            f"![confident mistakes]({plots_link}/confident_mistakes.png)",
            "",
            "## Plots",
            "",
            f"![benchmark]({plots_link}/benchmark_accuracy.png)",
            f"![learning curves]({plots_link}/learning_curves.png)",
            f"![accuracy vs latency]({plots_link}/accuracy_latency.png)",
            f"![per class]({plots_link}/per_class.png)",
            f"![selected confusion]({plots_link}/selected_confusion.png)",
            f"![reliability]({plots_link}/reliability.png)",
            "",
        ]
    )


def summary_metrics(data: Mapping[str, Any], benchmark: pd.DataFrame) -> dict[str, Any]:
    """The benchmark's headline: the best backbone on val in each benchmark and the chance level
    (what ships, and why, is `select`'s headline in metrics/selection.json)."""
    best = {}
    for stage in BENCHMARK_STAGES:
        row = benchmark.loc[benchmark[f"{stage}_val"].idxmax()]
        best[stage] = {
            "backbone": row["backbone"],
            "val_accuracy": row[f"{stage}_val"],
            "test_accuracy": row[f"{stage}_test"],
        }
    return {"best_on_val": best, "chance_test_accuracy": majority_baseline(data["data"])[1]}


def write_report(
    inputs: ReportInputs,
    outputs: ReportOutputs,
    backbones: Sequence[str],
    final: Mapping[str, Sequence[str]],
    shipping: Mapping[str, str],
    classes: Sequence[str],
    budget_ms: float | None,
) -> dict[str, Any]:
    """Write every report output; return the summary metrics. `final`: the names each of FINAL_STAGES
    trained; `shipping`: select.candidates (name -> stage)."""
    data = collect(inputs.details, backbones, final)
    selection = data["selection"]
    selected = selection["selected"]
    plots = outputs.plots
    tables = {
        "benchmark": benchmark_table(data),
        "candidates": candidate_table(data, shipping),
        "per_class": per_class_table(data, classes),
        "points": variant_points(data, budget_ms),
    }
    plot_benchmark(
        tables["benchmark"],
        data,
        majority_baseline(data["data"]),
        plots / "benchmark_accuracy.csv",
        plots / "benchmark_accuracy.png",
    )
    runs = {**data["benchmark"], **data["final"]}
    plot_learning_curves(
        learning_curves(inputs.live, runs), plots / "learning_curves.csv", plots / "learning_curves.png"
    )
    plot_accuracy_latency(
        tables["points"], shipped_points(data), plots / "accuracy_latency.csv", plots / "accuracy_latency.png"
    )
    plot_per_class(tables["per_class"], plots / "per_class.csv", plots / "per_class.png")
    for path in (inputs.selected_predictions, inputs.reliability):
        if not path.is_file():
            raise FerbenchError(f"{path}: not found; run `dvc repro select`")
    shipped_predictions = pd.read_csv(inputs.selected_predictions)
    write_frame_csv(shipped_predictions[["actual", "predicted"]], plots / "selected_predictions.csv")
    index = {name: position for position, name in enumerate(classes)}
    save_confusion_matrix(
        confusion_matrix(
            shipped_predictions["actual"].map(index).to_numpy(),
            shipped_predictions["predicted"].map(index).to_numpy(),
            len(classes),
        ),
        classes,
        plots / "selected_confusion.png",
        title=f"{selected} as shipped: test accuracy {selection['deployment']['test_accuracy']:.3f}",
    )
    mistakes = confident_mistakes(shipped_predictions)
    with np.load(inputs.test_images) as test:
        plot_confident_mistakes(mistakes, test["images"], plots / "confident_mistakes.png")
    plot_reliability(pd.read_csv(inputs.reliability), selection["deployment"]["temperature"], plots / "reliability.png")
    summary = summary_metrics(data, tables["benchmark"])
    write_json(outputs.summary, summary)
    provenance = read_metrics(inputs.provenance)
    link = Path("..") / plots if not plots.is_absolute() else plots
    outputs.markdown.parent.mkdir(parents=True, exist_ok=True)
    outputs.markdown.write_text(results_markdown(data, provenance, tables, mistakes, str(link)))
    return summary
