"""Where each stage reads and writes, relative to the project root (the contracts in DESIGN.md)."""

import shutil
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent  # the source tree this package is in (or a workspace copy)
RAW_ARCHIVE = Path("data/raw/fer2013.zip")
PREPARED_DIR = Path("data/prepared")
DATA_METRICS = Path("metrics/data.json")
DATA_PLOTS = Path("plots/data")
FEATURES_DIR = Path("data/features")
TEACHERS_DIR = Path("data/teachers")  # each teacher's logits on every prepared image (teach@<teacher>)
LIVE_DIR = Path("dvclive")  # per-epoch curves (DVCLive), dvclive/<stage>/<name>/
LATENCY_METRICS = Path("metrics/latency")
DEPLOY_MODELS = Path("models/deploy")
DEPLOY_METRICS = Path("metrics/deploy")
DEPLOY_PLOTS = Path("plots/deploy")
SELECTED_DIR = Path("models/selected")
RELEASED_DIR = Path("models/released")  # the released real-data model folder, in git
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


class RunOutputs:
    """Where one benchmarked model of a stage (`feature_extract`, `finetune`, `train`, `distill`) writes: checkpoint,
    headline metrics, details, plot data and DVCLive curves."""

    def __init__(self, stage: str, name: str) -> None:
        self.checkpoint = Path("models") / stage / f"{name}.pt"
        self.metrics = Path("metrics") / stage / f"{name}.json"
        self.details = stage_details(stage, name)
        self.plots = Path("plots") / stage / name
        self.live = stage_curves(stage, name)
        self.resume = RESUME_DIR / stage / f"{name}.pt"  # full state after each epoch (train only; not an output)

    def clear(self) -> None:
        shutil.rmtree(self.live, ignore_errors=True)
        shutil.rmtree(self.plots, ignore_errors=True)


def features_file(backbone: str) -> Path:
    return FEATURES_DIR / f"{backbone}.npz"


def teacher_file(teacher: str) -> Path:
    return TEACHERS_DIR / f"{teacher}.npz"


def teacher_checkpoint(teacher: str) -> Path:
    """The teacher's checkpoint as `teach@<teacher>` copied it: what online soft labels and a warm-started
    student read, so that `distill@` depends on `data/teachers/` alone."""
    return TEACHERS_DIR / f"{teacher}.pt"


def stage_details(stage: str, name: str, details: Path = DETAILS_DIR) -> Path:
    """Everything `<stage>@<name>` measured beyond its headline metrics (latency too)."""
    return details / stage / f"{name}.json"


def stage_curves(stage: str, name: str, live: Path = LIVE_DIR) -> Path:
    """The DVCLive folder of `<stage>@<name>`: its per-epoch curves."""
    return live / stage / name
