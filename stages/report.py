"""DVC stage `report`: comparison plots (data for `dvc plots show` and PNGs), metrics/summary.json
(the study's headline) and reports/results.md (data, benchmark, accuracy against latency with every
runtime variant, candidates per class, the shipped model and its most confident mistakes)."""

from ferbench import params as P
from ferbench.cli import run_stage
from ferbench.data.prepared import PROVENANCE_FILE
from ferbench.paths import (
    DETAILS_DIR,
    LIVE_DIR,
    PREPARED_DIR,
    RELIABILITY_PLOT,
    REPORT_PLOTS,
    RESULTS_TABLE,
    SELECTED_PREDICTIONS,
    SUMMARY_METRICS,
)
from ferbench.shipping.report import ReportInputs, ReportOutputs, write_report


def main() -> None:
    params = P.load_params()
    summary = write_report(
        ReportInputs(
            details=DETAILS_DIR,
            live=LIVE_DIR,
            selected_predictions=SELECTED_PREDICTIONS,
            reliability=RELIABILITY_PLOT,
            test_images=PREPARED_DIR / "test.npz",
            provenance=PREPARED_DIR / PROVENANCE_FILE,
        ),
        ReportOutputs(plots=REPORT_PLOTS, summary=SUMMARY_METRICS, markdown=RESULTS_TABLE),
        list(params.backbones),
        {"train": list(params.train.candidates), "distill": list(params.distill.students)},
        params.select.candidates,
        params.data.classes,
        params.select.latency_budget_ms,
    )
    best = summary["best_on_val"]
    print(
        f"report: best on val: frozen {best['feature_extract']['backbone']}, fine-tuned "
        f"{best['finetune']['backbone']}; chance {summary['chance_test_accuracy']:.4f}; report in {RESULTS_TABLE}"
    )


if __name__ == "__main__":
    run_stage(main, "report", __doc__)
