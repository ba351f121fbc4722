"""The comparison report: plots (data files for `dvc plots show` and seaborn PNGs), the summary
metrics and a Markdown results table, all built from the metrics the other stages wrote."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.ticker import MaxNLocator, ScalarFormatter

from ferbench.errors import FerbenchError
from ferbench.metrics import read_metrics
from ferbench.plots import save_confusion_matrix

BENCHMARK_STAGES = ("feature_extract", "finetune")


def collect(metrics_dir: Path, backbones: Sequence[str], candidates: Sequence[str]) -> dict[str, Any]:
    """Every metric the report needs, read once."""
    return {
        "benchmark": {
            stage: {name: read_metrics(metrics_dir / stage / f"{name}.json") for name in backbones}
            for stage in BENCHMARK_STAGES
        },
        "train": {name: read_metrics(metrics_dir / "train" / f"{name}.json") for name in candidates},
        "latency": {name: read_metrics(metrics_dir / "latency" / f"{name}.json") for name in backbones},
        "selection": read_metrics(metrics_dir / "selection.json"),
    }


def learning_curves(live_dir: Path, candidates: Sequence[str]) -> pd.DataFrame:
    """Per-epoch train/val accuracy and loss of every candidate (from its DVCLive files), long format."""
    frames = []
    for name in candidates:
        for split in ("train", "val"):
            for metric in ("accuracy", "loss"):
                path = live_dir / name / "plots" / "metrics" / split / f"{metric}.tsv"
                if not path.is_file():
                    raise FerbenchError(f"{path}: not found; run `dvc repro train@{name}`")
                curve = pd.read_csv(path, sep="\t")
                frames.append(
                    pd.DataFrame(
                        {
                            "candidate": name,
                            "split": split,
                            "metric": metric,
                            "epoch": curve["step"] + 1,
                            "value": curve[metric],
                        }
                    )
                )
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


def candidate_table(data: Mapping[str, Any]) -> pd.DataFrame:
    ranking = {entry["name"]: entry for entry in data["selection"]["ranking"]}
    rows = []
    for name, metrics in data["train"].items():
        entry = ranking.get(name, {})
        tta = metrics.get("tta", {})
        calibration = metrics.get("calibration", {})
        rows.append(
            {
                "candidate": name,
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


def _save(figure: plt.Figure, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_benchmark(table: pd.DataFrame, csv_path: Path, png_path: Path) -> None:
    """Test accuracy per backbone, frozen extractor and fine-tuned side by side."""
    long = table.melt(
        id_vars="backbone",
        value_vars=[f"{stage}_test" for stage in BENCHMARK_STAGES],
        var_name="mode",
        value_name="test_accuracy",
    )
    long["mode"] = long["mode"].str.removesuffix("_test")
    long.insert(0, "model", long["backbone"] + " " + long["mode"])
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    long.to_csv(csv_path, index=False)
    sns.set_theme(style="whitegrid")
    figure, axes = plt.subplots(figsize=(8, 4.5))
    sns.barplot(data=long, x="backbone", y="test_accuracy", hue="mode", ax=axes)
    axes.set_ylim(0, 1)
    axes.set_title("Test accuracy: frozen feature extractor vs fine-tuned")
    axes.set_xlabel("")
    _save(figure, png_path)


def plot_learning_curves(curves: pd.DataFrame, csv_path: Path, png_path: Path) -> None:
    """Train and val accuracy/loss per epoch of every candidate."""
    wide = curves.pivot_table(index="epoch", columns=["candidate", "split", "metric"], values="value")
    wide.columns = [f"{candidate} {split} {metric}" for candidate, split, metric in wide.columns]
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    wide.reset_index().to_csv(csv_path, index=False)
    sns.set_theme(style="whitegrid")
    grid = sns.relplot(
        data=curves,
        x="epoch",
        y="value",
        hue="candidate",
        style="split",
        col="metric",
        kind="line",
        facet_kws={"sharey": False},
        height=3.8,
        aspect=1.2,
    )
    for axes in grid.axes.flat:
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    grid.figure.suptitle("Candidates: learning curves (solid train, dashed val)", y=1.02)
    grid.savefig(png_path, dpi=110)
    plt.close(grid.figure)


def plot_accuracy_latency(table: pd.DataFrame, selected: str, csv_path: Path, png_path: Path) -> None:
    """Fine-tuned val accuracy against CPU latency of the fastest faithful variant, per backbone."""
    points = table[["backbone", "fastest_p50_ms", "torch_fp32_p50_ms", "finetune_val", "finetune_test"]].rename(
        columns={"fastest_p50_ms": "latency_ms", "finetune_val": "val_accuracy", "finetune_test": "test_accuracy"}
    )
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    points.to_csv(csv_path, index=False)
    sns.set_theme(style="whitegrid")
    figure, axes = plt.subplots(figsize=(7, 4.5))
    sns.scatterplot(data=points, x="latency_ms", y="val_accuracy", s=80, ax=axes)
    for _, point in points.iterrows():
        marker = " (selected)" if point["backbone"] == selected else ""
        axes.annotate(
            point["backbone"] + marker,
            (point["latency_ms"], point["val_accuracy"]),
            textcoords="offset points",
            xytext=(6, 4),
        )
    axes.set_xscale("log")
    axes.xaxis.set_major_formatter(ScalarFormatter())
    axes.xaxis.set_minor_formatter(ScalarFormatter())
    axes.set_xlabel("CPU latency, batch 1, fastest faithful runtime (ms, log scale)")
    axes.set_ylabel("val accuracy (fine-tuned)")
    axes.set_title("Accuracy against CPU latency")
    _save(figure, png_path)


def plot_reliability(reliability: pd.DataFrame, temperature: float, png_path: Path) -> None:
    """The shipped model's reliability diagram on test: accuracy against confidence per bin, before and
    after temperature scaling, with the diagonal of perfect calibration."""
    sns.set_theme(style="whitegrid")
    figure, axes = plt.subplots(figsize=(6, 5))
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
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    lines = [header, rule]
    for _, row in frame.iterrows():
        cells = []
        for column in frame.columns:
            value = row[column]
            if value is None or (isinstance(value, float) and np.isnan(value)):
                cells.append("")
            elif column in formats:
                cells.append(format(value, formats[column]))
            else:
                cells.append(str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _views(count: int) -> str:
    return f"test-time augmentation over {count} views" if count > 1 else "no test-time augmentation"


def results_markdown(
    benchmark: pd.DataFrame, candidates: pd.DataFrame, selection: Mapping[str, Any], plots_link: str
) -> str:
    deployment = selection["deployment"]
    leakage_free_images = deployment["test_leakage_free_images"]
    accuracy = ".4f"
    accuracy_columns = dict.fromkeys([c for c in benchmark.columns if c.startswith(BENCHMARK_STAGES)], accuracy)
    return "\n".join(
        [
            "# ferbench results",
            "",
            "Written by the `report` stage from `metrics/`; regenerate with `dvc repro`.",
            "",
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
            "(15 bins) before / after a temperature fitted on val.",
            "",
            f"**Selected: {selection['selected']}** (criterion `{selection['criterion']['name']}`). "
            f"{selection['reason']}.",
            "",
            f"Shipped as `{deployment['file']}` ({deployment['variant']}, {deployment['runtime']}, "
            f"{_views(deployment['tta_views'])}): test accuracy **{deployment['test_accuracy']:.4f}** (the checkpoint "
            f"alone in PyTorch fp32: {deployment['test_accuracy_fp32']:.4f}), "
            f"macro-F1 {deployment['test_macro_f1']:.4f}; "
            f"leakage-free test accuracy **{deployment['test_leakage_free_accuracy']:.4f}** on "
            f"{deployment['test_leakage_free_images']} images; agreement with fp32 on val "
            f"{deployment['agreement_with_fp32_on_val']:.4f}; CPU p50 {deployment['latency_p50_ms']:.2f} ms.",
            "",
            f"Calibration (temperature {deployment['temperature']:.3f}, fitted on val and applied by the app and "
            "the CLI): "
            f"test ECE {deployment['test_ece']:.4f} -> {deployment['test_ece_scaled']:.4f}, test NLL "
            f"{deployment['test_nll']:.4f} -> {deployment['test_nll_scaled']:.4f}.",
            "",
            "## Plots",
            "",
            f"![benchmark]({plots_link}/benchmark_accuracy.png)",
            f"![learning curves]({plots_link}/learning_curves.png)",
            f"![accuracy vs latency]({plots_link}/accuracy_latency.png)",
            f"![selected confusion]({plots_link}/selected_confusion.png)",
            f"![reliability]({plots_link}/reliability.png)",
            "",
        ]
    )


def write_report(
    metrics_dir: Path,
    live_dir: Path,
    plots_dir: Path,
    train_plots_dir: Path,
    reliability_path: Path,
    summary_path: Path,
    table_path: Path,
    backbones: Sequence[str],
    candidates: Sequence[str],
    classes: Sequence[str],
) -> dict[str, Any]:
    """Write every report output; return the summary."""
    data = collect(metrics_dir, backbones, candidates)
    selection = data["selection"]
    selected = selection["selected"]
    benchmark = benchmark_table(data)
    ranked = candidate_table(data)
    plot_benchmark(benchmark, plots_dir / "benchmark_accuracy.csv", plots_dir / "benchmark_accuracy.png")
    plot_learning_curves(
        learning_curves(live_dir, candidates), plots_dir / "learning_curves.csv", plots_dir / "learning_curves.png"
    )
    plot_accuracy_latency(benchmark, selected, plots_dir / "accuracy_latency.csv", plots_dir / "accuracy_latency.png")
    chosen = data["train"][selected]
    save_confusion_matrix(
        np.array(chosen["test"]["confusion_matrix"]),
        classes,
        plots_dir / "selected_confusion.png",
        title=f"selected {selected}: test accuracy {chosen['test']['accuracy']:.3f}",
    )
    predictions = pd.read_csv(train_plots_dir / selected / "predictions.csv")
    predictions.to_csv(plots_dir / "selected_predictions.csv", index=False)
    if not reliability_path.is_file():
        raise FerbenchError(f"{reliability_path}: not found; run `dvc repro select`")
    plot_reliability(
        pd.read_csv(reliability_path), selection["deployment"]["temperature"], plots_dir / "reliability.png"
    )
    summary = {
        "selected": selected,
        "criterion": selection["criterion"]["name"],
        "selected_val_accuracy": chosen["val"]["accuracy"],
        "selected_test_accuracy": chosen["test"]["accuracy"],
        "shipped_test_accuracy": selection["deployment"]["test_accuracy"],
        "shipped_test_leakage_free_accuracy": selection["deployment"]["test_leakage_free_accuracy"],
        "deployment": selection["deployment"],
        "backbones": {
            row["backbone"]: {k: v for k, v in row.items() if k != "backbone"} for row in benchmark.to_dict("records")
        },
        "candidates": {
            row["candidate"]: {k: v for k, v in row.items() if k != "candidate"} for row in ranked.to_dict("records")
        },
    }
    summary_path.parent.mkdir(parents=True, exist_ok=True)
    summary_path.write_text(json.dumps(summary, indent=2, default=_plain) + "\n")
    table_path.parent.mkdir(parents=True, exist_ok=True)
    link = Path("..") / plots_dir if not plots_dir.is_absolute() else plots_dir
    table_path.write_text(results_markdown(benchmark, ranked, selection, str(link)))
    return summary


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")
