"""The comparison report: plots (data files for `dvc plots show` and seaborn PNGs), the summary
metrics and the Markdown report, all built from the typed records the other stages wrote to
`reports/details/`, their DVCLive curves and the shipped model's test predictions.

By concern: `report_tables` reads the records and builds the tables, `report_plots` draws them,
`report_document` writes the Markdown; this module runs them in order."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ferbench.errors import FerbenchError
from ferbench.evaluation.metrics import confusion_matrix, write_json
from ferbench.evaluation.plots import save_confusion_matrix
from ferbench.files import write_frame_csv
from ferbench.records import DataOrigin, read_record
from ferbench.shipping.report_document import ReportTables, results_markdown
from ferbench.shipping.report_plots import (
    plot_accuracy_latency,
    plot_benchmark,
    plot_confident_mistakes,
    plot_learning_curves,
    plot_per_class,
    plot_reliability,
)
from ferbench.shipping.report_tables import (
    accuracy_bars,
    benchmark_table,
    candidate_table,
    collect,
    confident_mistakes,
    learning_curves,
    per_class_table,
    shipped_points,
    summary_metrics,
    variant_points,
)


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
    records = collect(inputs.details, backbones, final)
    plots = outputs.plots
    for path in (inputs.selected_predictions, inputs.reliability):
        if not path.is_file():
            raise FerbenchError(f"{path}: not found; run `dvc repro select`")
    shipped_predictions = pd.read_csv(inputs.selected_predictions)
    tables = ReportTables(
        benchmark=benchmark_table(records),
        candidates=candidate_table(records, shipping),
        per_class=per_class_table(records, classes),
        points=variant_points(records.latency, budget_ms),
        mistakes=confident_mistakes(shipped_predictions),
    )
    plot_benchmark(
        accuracy_bars(tables.benchmark, records),
        records.data.majority_baseline(),
        plots / "benchmark_accuracy.csv",
        plots / "benchmark_accuracy.png",
    )
    runs = {**records.benchmark, **records.final}
    plot_learning_curves(
        learning_curves(inputs.live, runs), plots / "learning_curves.csv", plots / "learning_curves.png"
    )
    plot_accuracy_latency(
        tables.points,
        shipped_points(records.selection),
        plots / "accuracy_latency.csv",
        plots / "accuracy_latency.png",
    )
    plot_per_class(tables.per_class, plots / "per_class.csv", plots / "per_class.png")
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
        title=f"{records.selection.selected} as shipped: test accuracy {records.shipped.test_accuracy:.3f}",
    )
    with np.load(inputs.test_images) as test:
        plot_confident_mistakes(tables.mistakes, test["images"], plots / "confident_mistakes.png")
    plot_reliability(pd.read_csv(inputs.reliability), records.shipped.temperature, plots / "reliability.png")
    summary = summary_metrics(records, tables.benchmark)
    write_json(outputs.summary, summary)
    provenance = read_record(inputs.provenance, DataOrigin, "-f prepare")
    link = Path("..") / plots if not plots.is_absolute() else plots
    outputs.markdown.parent.mkdir(parents=True, exist_ok=True)
    outputs.markdown.write_text(results_markdown(records, provenance, tables, str(link)))
    return summary
