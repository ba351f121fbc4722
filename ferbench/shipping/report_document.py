"""The report's document: `results.md` in sections, each written from typed records and the tables
`report_tables` built."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ferbench.errors import FerbenchError
from ferbench.records import DataOrigin, DataSummary, RunReport, Selection, ShippedSummary
from ferbench.shipping.report_tables import BENCHMARK_STAGES, ReportData


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


def _ci(interval: Sequence[float], style: str = ".4f") -> str:
    return f"95% CI {interval[0]:{style}}-{interval[1]:{style}}"


def _views(count: int) -> str:
    return f"test-time augmentation over {count} views" if count > 1 else "no test-time augmentation"


def distillation_section(records: ReportData) -> list[str]:
    """Each distilled student beside its teachers and beside its backbone trained on the labels alone on the
    same schedule (`train@<backbone>`, when it is a candidate too): the gain distillation buys."""
    lines: list[str] = []
    for name, student in records.final["distill"].items():
        taught = student.distillation
        if taught is None:
            raise FerbenchError(
                f"reports/details/distill/{name}.json: no teachers recorded; rerun `dvc repro distill@{name}`"
            )
        rows: list[dict[str, Any]] = [
            {
                "model": f"teacher {teacher.stage}@{teacher.name}",
                "views": str(teacher.views),
                "val": teacher.val_accuracy,
                "test": teacher.test_accuracy,
            }
            for teacher in taught.teachers
        ]
        rows.append({"model": "teachers together", "val": taught.ensemble["val"], "test": taught.ensemble["test"]})
        runs = [(f"distill@{name} (student)", student)]
        baseline = records.final["train"].get(name)
        if baseline is not None:
            what = "its starting point" if taught.warm_start else "same schedule, labels only"
            runs.append((f"train@{name} ({what})", baseline))
        for label, report in runs:
            rows.append(
                {
                    "model": label,
                    "views": "1",
                    "val": report.val.accuracy,
                    "test": report.test.accuracy,
                    "test_tta": report.tta.test.accuracy if report.tta is not None else None,
                    "test_leakage_free": report.test_leakage_free.accuracy,
                    "test_macro_f1": report.test.macro_f1,
                }
            )
        start = (
            f"started from the weights of `{taught.warm_start}` and " if taught.warm_start else "started at random and "
        )
        lines += [
            f"## Distillation: {name}",
            "",
            f"`distill@{name}` {start}learned from the labels and from its teachers' soft labels (kd_weight "
            f"{taught.kd_weight:g}, temperature {taught.temperature:g}, {taught.targets} targets); the "
            "teachers' accuracies are over their views (view-averaged logits).",
            "",
            _markdown(
                pd.DataFrame(rows),
                dict.fromkeys(("val", "test", "test_tta", "test_leakage_free", "test_macro_f1"), ".4f"),
            ),
            "",
        ]
        if baseline is not None:
            lines += _distillation_gain(name, student, baseline, warm_started=bool(taught.warm_start))
    return lines


def _distillation_gain(name: str, student: RunReport, baseline: RunReport, warm_started: bool) -> list[str]:
    """The student against `train@<name>`: accuracy gained on each split, and test recall per class."""
    gain = {
        "val": student.val.accuracy - baseline.val.accuracy,
        "test": student.test.accuracy - baseline.test.accuracy,
        "test_leakage_free": student.test_leakage_free.accuracy - baseline.test_leakage_free.accuracy,
    }
    student_recall, baseline_recall = student.test.per_class_recall or {}, baseline.test.per_class_recall or {}
    classes = list(student_recall)
    recall = pd.DataFrame(
        {
            "class": classes,
            f"distill@{name}": [student_recall[label] for label in classes],
            f"train@{name}": [baseline_recall.get(label) for label in classes],
        }
    )
    versus = (
        f"Against `train@{name}`, whose weights it started from (so the gain is that of the student's "
        "further epochs and its teachers together; `scripts/bench_distill.py --modes none` separates them)"
        if warm_started
        else "Gain from distillation on the same schedule"
    )
    return [
        f"{versus}: val {gain['val']:+.4f}, test {gain['test']:+.4f}, "
        f"leakage-free test {gain['test_leakage_free']:+.4f}. Test recall per class:",
        "",
        _markdown(recall, dict.fromkeys(recall.columns[1:], ".3f")),
        "",
    ]


def references_section(shipped: ShippedSummary, selected: str) -> list[str]:
    """The shipped model beside published results and the `fer` package on the same test folder."""
    ours = f"**{shipped.test_accuracy:.1%}** ({_ci(shipped.test_accuracy_ci95, '.1%')})"
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


def data_section(data: DataSummary, provenance: DataOrigin) -> list[str]:
    """Where the data came from, images per class and split, and what the quality checks found."""
    counts = pd.DataFrame(data.counts)
    counts = counts.loc[[name for name in counts.index if name != "total"] + ["total"]]  # the total last
    counts.index.name = "class"
    counts = counts.reset_index()
    quality = data.quality
    baseline = data.majority_baseline()
    test_total = int(data.counts["test"]["total"])
    return [
        "## Data",
        "",
        f"Source: `{provenance.source}`"
        + (f" (Kaggle dataset `{provenance.kaggle_dataset}`)" if provenance.kaggle_dataset else "")
        + f", archive SHA-256 `{provenance.archive_sha256[:16]}...` ({provenance.archive_bytes:,} bytes)"
        + f"; {data.archive_files['train']} train-folder and {data.archive_files['test']} test-folder files.",
        "",
        _markdown(counts, {}),
        "",
        f"Quality checks: {quality.duplicate_images} duplicate images in {quality.duplicate_groups} groups, "
        f"{quality.label_conflict_groups} groups with conflicting labels, {quality.near_blank} near-blank, "
        f"{quality.skipped} undecodable files skipped, {sum(quality.dropped.values())} images dropped "
        f"({', '.join(f'{why} {n}' for why, n in quality.dropped.items())}). Leakage: "
        f"{quality.test_images_in_train_folder} of the {test_total} test images share their pixels "
        f"with {quality.train_test_shared_images} images of the Kaggle train folder "
        f"({quality.train_test_shared_groups} groups); the leakage-free test figures use the other "
        f"{quality.test_leakage_free_images}.",
        "",
        f"Chance: always answering the most frequent train class ('{baseline[0]}') scores "
        f"{baseline[1]:.4f} on test; a uniform guess 1/{len(data.counts['test']) - 1}.",
        "",
    ]


ACCURACY = ".4f"


def benchmark_section(benchmark: pd.DataFrame, leakage_free_images: int) -> list[str]:
    """Every backbone, frozen and fine-tuned, with its latency and size."""
    accuracy_columns = dict.fromkeys([c for c in benchmark.columns if c.startswith(BENCHMARK_STAGES)], ACCURACY)
    sizes = {"torch_fp32_p50_ms": ".2f", "fastest_p50_ms": ".2f", "gflops": ".2f", "parameters_m": ".1f"}
    return [
        "## Benchmark: every backbone, frozen feature extractor and fine-tuned",
        "",
        _markdown(benchmark, {**accuracy_columns, **sizes}),
        "",
        "Latency: CPU, batch 1, p50 of the fine-tuned model; `fastest_variant` is the fastest runtime "
        "that agrees with PyTorch fp32 on the required share of val. `*_test_leakage_free`: accuracy on the "
        f"{leakage_free_images} test images whose pixels do not occur in the Kaggle train folder; "
        "`finetune_test_tta`: with test-time augmentation.",
        "",
    ]


def accuracy_latency_section(selection: Selection, points: pd.DataFrame) -> list[str]:
    """What each candidate ships, and the faithful runtime variants on the accuracy-latency Pareto front."""
    front = points[points["pareto"]].sort_values("latency_ms")
    budget = points["budget_ms"].iloc[0]
    shipped = ", ".join(
        f"{entry.name} ({entry.latency_ms:.2f} ms, {entry.val_accuracy:.4f})" for entry in selection.ranking
    )
    pareto = ", ".join(
        f"{row.backbone} {row.variant} ({row.latency_ms:.2f} ms, {row.val_accuracy:.4f})" for row in front.itertuples()
    )
    within = (
        f" Latency budget (`select.latency_budget_ms`): {budget:g} ms; "
        f"{int(points['within_budget'].sum())} variants are within it."
        if budget is not None and not pd.isna(budget)
        else " No latency budget set (`select.latency_budget_ms: null`)."
    )
    return [
        "## Accuracy against latency: what ships, and every runtime variant",
        "",
        f"Shipped (each candidate's final model as deployed, val accuracy and CPU p50): {shipped}. The benchmark: "
        f"{len(points)} variants of {points['backbone'].nunique()} fine-tuned backbones, "
        f"{int(points['faithful'].sum())} of them faithful to fp32 (agreement on val); on the Pareto front of "
        "the faithful ones (no other faithful variant is both at least as fast and at least as accurate on "
        f"val): {pareto}.{within}",
        "",
    ]


def candidates_section(candidates: pd.DataFrame) -> list[str]:
    """The final trainings and distilled students, with their selection rank and score."""
    formats = dict.fromkeys(
        ("val", "val_tta", "test", "test_tta", "test_leakage_free", "test_macro_f1", "train", "test_ece"), ACCURACY
    )
    formats.update({"test_ece_scaled": ACCURACY, "accuracy_gap": "+.4f", "loss_gap": "+.4f", "score": ACCURACY})
    return [
        "## Candidates: final training and selection",
        "",
        _markdown(candidates, formats),
        "",
        "`_tta`: with test-time augmentation; `test_ece` / `test_ece_scaled`: expected calibration error "
        "(15 bins) before / after a temperature fitted on val; `best_epoch`: the epoch whose weights were "
        "kept (best val accuracy).",
        "",
    ]


def per_class_section(per_class_long: pd.DataFrame) -> list[str]:
    """Test recall and F1 per class of every final run, one row per class."""
    per_class = per_class_long.pivot_table(index="class", columns="candidate", values=["recall", "f1"], sort=False)
    per_class.columns = [f"{candidate} {metric}" for metric, candidate in per_class.columns]
    per_class = per_class[sorted(per_class.columns)].reset_index()
    per_class.insert(1, "test images", per_class_long.groupby("class", sort=False)["test_images"].first().values)
    return [
        "### Per class (test, PyTorch fp32, no test-time augmentation)",
        "",
        _markdown(per_class, dict.fromkeys(per_class.columns[2:], ".3f")),
        "",
    ]


def shipped_section(selection: Selection, shipped: ShippedSummary) -> list[str]:
    """What was selected and why, and the shipped model's numbers with their intervals and calibration."""
    return [
        f"**Selected: {selection.selected}** (criterion `{selection.criterion.name}`). {selection.reason}.",
        "",
        f"Shipped as `{shipped.file}` ({shipped.variant}, {shipped.runtime}, "
        f"{_views(shipped.tta_views)}): test accuracy **{shipped.test_accuracy:.4f}** "
        f"({_ci(shipped.test_accuracy_ci95)}; the checkpoint alone in PyTorch fp32: "
        f"{shipped.test_accuracy_fp32:.4f}), macro-F1 {shipped.test_macro_f1:.4f} "
        f"({_ci(shipped.test_macro_f1_ci95)}); leakage-free test accuracy "
        f"**{shipped.test_leakage_free_accuracy:.4f}** "
        f"({_ci(shipped.test_leakage_free_accuracy_ci95)}) "
        f"on {shipped.test_leakage_free_images} images; agreement with fp32 on val "
        f"{_agreement(shipped.agreement_with_fp32_on_val)}; CPU p50 {shipped.latency_p50_ms:.2f} ms.",
        "",
        f"Calibration (temperature {shipped.temperature:.3f}, fitted on val and applied by the app and "
        "the CLI): "
        f"test ECE {shipped.test_ece:.4f} -> {shipped.test_ece_scaled:.4f}, test NLL "
        f"{shipped.test_nll:.4f} -> {shipped.test_nll_scaled:.4f}.",
        "",
    ]


def _agreement(share: float | None) -> str:
    return f"{share:.4f}" if share is not None else "not recorded"


def mistakes_section(mistakes: pd.DataFrame, plots_link: str) -> list[str]:
    """The shipped model's most confident wrong answers on test, and their picture."""
    table = (
        _markdown(
            mistakes[["index", "actual", "predicted", "confidence"]].rename(columns={"index": "test image"}),
            {"confidence": ".3f"},
        )
        if len(mistakes)
        else "None: the shipped model answers every test image correctly."
    )
    return [
        "### Most confident mistakes of the shipped model (test)",
        "",
        table,
        "",
        f"![confident mistakes]({plots_link}/confident_mistakes.png)",
        "",
    ]


PLOTS = (
    ("benchmark", "benchmark_accuracy"),
    ("learning curves", "learning_curves"),
    ("accuracy vs latency", "accuracy_latency"),
    ("per class", "per_class"),
    ("selected confusion", "selected_confusion"),
    ("reliability", "reliability"),
)


@dataclass(frozen=True)
class ReportTables:
    """The tables the document shows (built by `report_tables` from the records)."""

    benchmark: pd.DataFrame
    candidates: pd.DataFrame
    per_class: pd.DataFrame
    points: pd.DataFrame
    mistakes: pd.DataFrame


def results_markdown(records: ReportData, provenance: DataOrigin, tables: ReportTables, plots_link: str) -> str:
    """The whole report: the data, the benchmark, accuracy against latency, the candidates and students,
    what ships and why, the references and the plots."""
    selection, shipped = records.selection, records.shipped
    return "\n".join(
        [
            "# ferbench results",
            "",
            "Written by the `report` stage from `reports/details/` and the DVCLive curves; regenerate with "
            "`dvc repro`.",
            "",
            *data_section(records.data, provenance),
            *benchmark_section(tables.benchmark, shipped.test_leakage_free_images),
            *accuracy_latency_section(selection, tables.points),
            *candidates_section(tables.candidates),
            *distillation_section(records),
            *per_class_section(tables.per_class),
            *shipped_section(selection, shipped),
            *references_section(shipped, selection.selected),
            *mistakes_section(tables.mistakes, plots_link),
            "## Plots",
            "",
            *(f"![{title}]({plots_link}/{name}.png)" for title, name in PLOTS),
            "",
        ]
    )
