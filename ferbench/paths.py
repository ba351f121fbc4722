"""Where each stage reads and writes, relative to the project root (the contracts in DESIGN.md)."""

from pathlib import Path

RAW_ARCHIVE = Path("data/raw/fer2013.zip")
PREPARED_DIR = Path("data/prepared")
DATA_METRICS = Path("metrics/data.json")
DATA_PLOTS = Path("plots/data")
FEATURES_DIR = Path("data/features")
LIVE_DIR = Path("dvclive")  # per-epoch curves (DVCLive), dvclive/<stage>/<name>/
FINETUNE_MODELS = Path("models/finetune")
TRAIN_MODELS = Path("models/train")
TRAIN_METRICS = Path("metrics/train")
LATENCY_METRICS = Path("metrics/latency")
DEPLOY_MODELS = Path("models/deploy")
DEPLOY_METRICS = Path("metrics/deploy")
DEPLOY_PLOTS = Path("plots/deploy")
SELECTED_DIR = Path("models/selected")
SELECTION_METRICS = Path("metrics/selection.json")
SUMMARY_METRICS = Path("metrics/summary.json")
REPORT_PLOTS = Path("plots/report")
RESULTS_TABLE = Path("reports/results.md")
# Everything a stage measured beyond the headline numbers in metrics/ (per-class tables, confusion
# matrices, timings, calibration, the ranking and its reason): read by the report, not by `dvc exp show`.
DETAILS_DIR = Path("reports/details")
SELECTION_DETAILS = DETAILS_DIR / "selection.json"
DATA_DETAILS = DETAILS_DIR / "data.json"
# Per-workspace training state of unfinished runs: not a stage output (so an experiment in a temporary
# copy of the workspace, which lacks it, does not look changed), git-ignored, resumed by the next run.
RESUME_DIR = Path(".resume")
RELIABILITY_PLOT = Path("plots/selected/reliability.csv")
SELECTED_PREDICTIONS = Path("plots/selected/test_predictions.csv")
