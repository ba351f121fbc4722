"""DVC stage `report`: comparison plots, metrics/summary.json and the Markdown results table."""

from pathlib import Path

from ferbench import params as P
from ferbench.cli import run_stage
from ferbench.paths import RELIABILITY_PLOT, REPORT_PLOTS, RESULTS_TABLE, SUMMARY_METRICS
from ferbench.report import write_report


def main() -> None:
    params = P.load_params()
    summary = write_report(
        Path("metrics"),
        Path("dvclive/train"),
        REPORT_PLOTS,
        Path("plots/train"),
        RELIABILITY_PLOT,
        SUMMARY_METRICS,
        RESULTS_TABLE,
        list(P.get(params, "backbones", dict)),
        list(P.get(params, "train.candidates", dict)),
        P.get(params, "data.classes", list),
    )
    print(
        f"report: selected {summary['selected']} (test accuracy {summary['selected_test_accuracy']:.4f}); "
        f"table in {RESULTS_TABLE}"
    )


if __name__ == "__main__":
    run_stage(main, "report", __doc__)
