"""The report's data: every stage record it needs, read once and validated (`ReportData`), and the tables
built from them (one pandas frame per table or plot; `report_plots` draws them, `report_document`
writes them into the Markdown report)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ferbench.errors import FerbenchError
from ferbench.paths import stage_curves, stage_details
from ferbench.records import DataSummary, LatencyReport, RunReport, Selection, ShippedSummary, read_record

BENCHMARK_STAGES = ("feature_extract", "finetune")
FINAL_STAGES = ("train", "distill")  # the candidates' longer training and the distilled students
CURVE_STAGES = (*BENCHMARK_STAGES, *FINAL_STAGES)
MISTAKES_SHOWN = 16


@dataclass(frozen=True)
class ReportData:
    """Every record the report reads: the data summary, each benchmark run (stage -> backbone), each final
    run (train candidates and distilled students), each backbone's latency report and the selection."""

    data: DataSummary
    benchmark: dict[str, dict[str, RunReport]]
    final: dict[str, dict[str, RunReport]]
    latency: dict[str, LatencyReport]
    selection: Selection

    @property
    def shipped(self) -> ShippedSummary:
        """The selected model's numbers as shipped."""
        if self.selection.deployment is None:
            raise FerbenchError("reports/details/selection.json: no shipped model recorded; run `dvc repro select`")
        return self.selection.deployment

    def final_runs(self) -> list[tuple[str, str, RunReport]]:
        """(stage, name, report) of every candidate's longer training and every distilled student."""
        return [(stage, name, report) for stage, runs in self.final.items() for name, report in runs.items()]


def collect(details: Path, backbones: Sequence[str], final: Mapping[str, Sequence[str]]) -> ReportData:
    """Every record the report needs, read once (`final`: the names each of FINAL_STAGES trained)."""

    def run(stage: str, name: str) -> RunReport:
        return read_record(stage_details(stage, name, details), RunReport, f"{stage}@{name}")

    return ReportData(
        data=read_record(details / "data.json", DataSummary, "prepare"),
        benchmark={stage: {name: run(stage, name) for name in backbones} for stage in BENCHMARK_STAGES},
        final={stage: {name: run(stage, name) for name in final.get(stage, ())} for stage in FINAL_STAGES},
        latency={
            name: read_record(stage_details("latency", name, details), LatencyReport, f"latency@{name}")
            for name in backbones
        },
        selection=read_record(details / "selection.json", Selection, "select"),
    )


def learning_curves(live: Path, runs: Mapping[str, Mapping[str, RunReport]]) -> pd.DataFrame:
    """Per-epoch train/val accuracy and loss of every benchmarked and trained model (its DVCLive
    files), one row per run, split and epoch; `best` marks the epoch whose weights were kept."""
    frames = []
    for stage, reports in runs.items():
        for name, report in reports.items():
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
                frame["best"] = frame["epoch"] == report.best_epoch
                frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def benchmark_table(records: ReportData) -> pd.DataFrame:
    """One row per backbone: accuracy as frozen extractor and fine-tuned, latency, size."""
    rows = []
    for name, latency in records.latency.items():
        fastest = latency.fastest_faithful
        row: dict[str, Any] = {"backbone": name}
        for stage in BENCHMARK_STAGES:
            report = records.benchmark[stage][name]
            row[f"{stage}_val"] = report.val.accuracy
            row[f"{stage}_test"] = report.test.accuracy
            row[f"{stage}_test_leakage_free"] = report.test_leakage_free.accuracy
        finetuned = records.benchmark["finetune"][name]
        row["finetune_test_tta"] = finetuned.tta.test.accuracy if finetuned.tta is not None else None
        row.update(
            {
                "torch_fp32_p50_ms": latency.variants["torch_fp32"].p50_ms,
                "fastest_variant": fastest,
                "fastest_p50_ms": latency.variants[fastest].p50_ms,
                "gflops": latency.gflops,
                "parameters_m": latency.parameters_m,
            }
        )
        rows.append(row)
    return pd.DataFrame(rows)


def accuracy_bars(benchmark: pd.DataFrame, records: ReportData) -> pd.DataFrame:
    """Test accuracy of every model, long format: each backbone frozen and fine-tuned (the benchmark), each
    final run and distilled student, and the shipped model; with the majority-class chance level."""
    long = benchmark.melt(
        id_vars="backbone",
        value_vars=[f"{stage}_test" for stage in BENCHMARK_STAGES],
        var_name="mode",
        value_name="test_accuracy",
    )
    long["mode"] = long["mode"].str.removesuffix("_test")
    final = [
        {"backbone": name, "mode": "final" if stage == "train" else "distilled", "test_accuracy": report.test.accuracy}
        for stage, name, report in records.final_runs()
    ]
    shipped = {
        "backbone": records.selection.selected,
        "mode": "shipped",
        "test_accuracy": records.shipped.test_accuracy,
    }
    long = pd.concat([long, pd.DataFrame([*final, shipped])], ignore_index=True)
    long.insert(0, "model", long["backbone"] + " " + long["mode"])
    long["chance"] = records.data.majority_baseline()[1]
    return long


def candidate_table(records: ReportData, shipping: Mapping[str, str]) -> pd.DataFrame:
    """One row per trained model (`train@` candidates, `distill@` students); `shipping`: select.candidates,
    whose runs carry their selection rank and score."""
    ranking = {entry.name: entry for entry in records.selection.ranking}
    rows = []
    for stage, name, report in records.final_runs():
        entry = ranking.get(name) if shipping.get(name) == stage else None
        tta, test_calibration = report.tta, report.calibration.test
        rows.append(
            {
                "model": f"{stage}@{name}",
                "trainable": report.trainable,
                "val": report.val.accuracy,
                "val_tta": tta.val.accuracy if tta is not None else None,
                "test": report.test.accuracy,
                "test_tta": tta.test.accuracy if tta is not None else None,
                "test_leakage_free": report.test_leakage_free.accuracy,
                "test_macro_f1": report.test.macro_f1,
                "train": report.train.accuracy,
                "test_ece": test_calibration.ece,
                "test_ece_scaled": test_calibration.ece_scaled,
                "accuracy_gap": report.overfitting.accuracy_gap,
                "loss_gap": report.overfitting.loss_gap,
                "best_epoch": report.best_epoch,
                "epochs": report.epochs,
                "score": entry.score if entry is not None else None,
                "rank": entry.rank if entry is not None else None,
                "excluded": entry.excluded if entry is not None else None,
            }
        )
    return pd.DataFrame(rows)


def per_class_table(records: ReportData, classes: Sequence[str]) -> pd.DataFrame:
    """Test recall and F1 per class of every candidate (PyTorch fp32, no TTA), long format."""
    rows = []
    for stage, name, report in records.final_runs():
        recall, f1 = report.test.per_class_recall, report.test.per_class_f1
        if recall is None or f1 is None:
            raise FerbenchError(
                f"reports/details/{stage}/{name}.json: no per-class F1; rerun `dvc repro {stage}@{name}`"
            )
        for label in classes:
            rows.append(
                {
                    "candidate": f"{stage}@{name}",
                    "class": label,
                    "recall": recall[label],
                    "f1": f1[label],
                    "test_images": records.data.counts["test"][label],
                }
            )
    return pd.DataFrame(rows)


def variant_points(latencies: Mapping[str, LatencyReport], budget_ms: float | None) -> pd.DataFrame:
    """Every runtime variant of every fine-tuned backbone: CPU p50 and val accuracy, whether it is
    faithful to fp32 (agreement on val), whether it is on the Pareto front of the faithful variants (no
    other faithful variant is both at least as fast and at least as accurate, and better in one) and
    within the latency budget."""
    rows = []
    for name, latency in latencies.items():
        for variant, result in latency.variants.items():
            rows.append(
                {
                    "backbone": name,
                    "variant": variant,
                    "latency_ms": result.p50_ms,
                    "val_accuracy": result.val_accuracy,
                    "agreement": result.agreement,
                    "faithful": result.agreement >= latency.min_agreement,
                    "fastest_faithful": variant == latency.fastest_faithful,
                }
            )
    points = pd.DataFrame(rows)
    faithful = points["faithful"].to_numpy()
    latency_ms, accuracy = points["latency_ms"].to_numpy(), points["val_accuracy"].to_numpy()
    dominated = [
        bool(
            np.any(
                faithful
                & (latency_ms <= latency_ms[i])
                & (accuracy >= accuracy[i])
                & ((latency_ms < latency_ms[i]) | (accuracy > accuracy[i]))
            )
        )
        for i in range(len(points))
    ]
    points["pareto"] = faithful & ~np.array(dominated)  # an unfaithful variant never ships, so never leads
    points["within_budget"] = True if budget_ms is None else points["latency_ms"] <= budget_ms
    points["budget_ms"] = budget_ms
    return points


def shipped_points(selection: Selection) -> pd.DataFrame:
    """What each candidate ships (select's ranking): the final model's val accuracy as deployed and its CPU p50."""
    return pd.DataFrame(
        [
            {
                "backbone": entry.name,
                "variant": "shipped (final model)",
                "latency_ms": entry.latency_ms,
                "val_accuracy": entry.val_accuracy,
                "selected": entry.name == selection.selected,
            }
            for entry in selection.ranking
        ]
    )


def confident_mistakes(predictions: pd.DataFrame, count: int = MISTAKES_SHOWN) -> pd.DataFrame:
    """The shipped model's wrong test answers it was surest of, most confident first."""
    wrong = predictions[predictions["actual"] != predictions["predicted"]]
    return wrong.sort_values(["confidence", "index"], ascending=[False, True]).head(count)


def summary_metrics(records: ReportData, benchmark: pd.DataFrame) -> dict[str, Any]:
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
    return {"best_on_val": best, "chance_test_accuracy": records.data.majority_baseline()[1]}
