"""What the stages write and the next ones read, typed: the data summary, a training run's report, the
latency report, the selection and the shipped model's numbers.

Each stage builds one of these records and writes it with `write_record` (its JSON dump); each reader
loads it back with `read_record`, validated, so a renamed or missing field fails where the file is read,
in one line naming the file, not as a KeyError at the end of a pipeline. The headline metrics files
(`metrics/`, what `dvc metrics diff` compares) are subsets of the same records, each named once here
(`headline()`). Fields a stage leaves out (a feature-extraction head has no trainable part, a run
without test-time augmentation no `tta`) are written only when set.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ferbench.constants import DATA_SOURCES, RANGE_METHODS, TEMPERATURE_RANGE
from ferbench.errors import FerbenchError
from ferbench.specs import TTAConfig


class Record(BaseModel):
    """A stage record: no field it does not declare, values of the declared types only."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


RecordType = TypeVar("RecordType", bound=Record)


def as_record(kind: type[RecordType], data: Mapping[str, Any]) -> RecordType:
    """`data` (as a stage assembled it, NumPy scalars and all) validated as a `kind` record."""
    return kind.model_validate(json.loads(json.dumps(data, default=_plain)))


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):  # a NumPy scalar
        return value.item()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def picked(record: BaseModel, keys: Sequence[str]) -> dict[str, Any]:
    """The fields `keys` of `record`, in that order, as JSON values (a headline's part)."""
    dumped = record.model_dump(mode="json")
    return {key: dumped[key] for key in keys}


def write_record(path: Path, record: Record) -> None:
    """The record as JSON at `path` (fields never set left out), parent folders made."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record.model_dump(mode="json", exclude_unset=True), indent=2) + "\n")


def write_headline(path: Path, headline: dict[str, Any]) -> None:
    """A headline metrics file (a record's `headline()`), for `dvc metrics`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(headline, indent=2) + "\n")


def read_record(path: Path, kind: type[RecordType], rerun: str) -> RecordType:
    """The record at `path`, validated; one line naming the file, the first problem and the stage to rerun."""
    if not path.is_file():
        raise FerbenchError(f"{path}: not found; run `dvc repro {rerun}`")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise FerbenchError(f"{path}: cannot be read ({exc.strerror or exc}); rerun `dvc repro {rerun}`") from exc
    try:
        loaded = json.loads(data.decode())
    except ValueError as exc:
        raise FerbenchError(f"{path}: not a {kind.__name__} record ({exc}); rerun `dvc repro {rerun}`") from exc
    return validated(kind, loaded, str(path), rerun)


def validated(kind: type[RecordType], data: Any, source: str, rerun: str) -> RecordType:
    """`data` read from `source` (a file, a checkpoint's metadata) as a `kind` record; one line naming the
    source, the first problem and the stage to rerun."""
    try:
        return kind.model_validate(data)
    except ValidationError as exc:
        problem = exc.errors()[0]
        where = ".".join(str(part) for part in problem["loc"]) or "the file"
        raise FerbenchError(
            f"{source}: not a {kind.__name__} record ({where}: {problem['msg']}); rerun `dvc repro {rerun}`"
        ) from exc


# --- a backbone's cached features (embed@<backbone>) ---


class EmbeddingRecord(Record):
    """What `embed@<backbone>` wrote beside its features (`data/features/<backbone>.npz`)."""

    backbone: str
    feature_dim: Annotated[int, Field(ge=1)]
    input_size: Annotated[int, Field(ge=1)]


# --- a training run's report (feature_extract@, finetune@, train@, distill@) ---


class Scores(Record):
    """Classification numbers on one split; the per-class ones and the loss where the stage measured them."""

    accuracy: float
    macro_f1: float
    per_class_recall: dict[str, float] | None = None
    per_class_f1: dict[str, float] | None = None
    confusion_matrix: list[list[int]] | None = None
    loss: float | None = None
    images: int | None = None  # the leakage-free test subset's size


HEADLINE_SCORES = ("accuracy", "macro_f1")  # what the headline keeps of each split


class TtaScores(Record):
    """The same model averaged over its test-time augmentation views."""

    views: int
    val: Scores
    test: Scores
    test_leakage_free: Scores


class SplitCalibration(Record):
    """Expected calibration error and negative log-likelihood, before and after temperature scaling."""

    ece: float
    nll: float
    ece_scaled: float
    nll_scaled: float


class TemperatureScaling(Record):
    """The temperature fitted on val and what it does to ECE and NLL (int8 ranges are `Int8Ranges`)."""

    temperature: Annotated[float, Field(ge=TEMPERATURE_RANGE[0], le=TEMPERATURE_RANGE[1])]  # the range fitted in
    fitted_on: Literal["val"]
    ece_bins: Annotated[int, Field(ge=1)]
    val: SplitCalibration
    test: SplitCalibration


class Gaps(Record):
    accuracy_gap: float  # train minus val accuracy
    loss_gap: float  # val minus train loss


class Overfitting(Gaps):
    """The clean gaps of the shipped (best-on-val) checkpoint, and the epoch log's at its best and last epochs."""

    best_epoch: int
    at_best_epoch: Gaps
    at_last_epoch: Gaps


class TeacherSummary(Record):
    name: str
    stage: str
    backbone: str
    views: int
    val_accuracy: float
    test_accuracy: float


class ViewAccuracy(Record):
    image: float | None = None  # the image alone
    views: float  # its views' logits averaged


class TeacherRecord(Record):
    """What `teach@<teacher>` cached beside its logits (`data/teachers/<teacher>.npz`): which model, on which
    classes, in which views, and its accuracy per split."""

    teacher: str
    stage: str
    backbone: str
    classes: list[str]
    views: TTAConfig
    view_count: Annotated[int, Field(ge=1)]
    accuracy: dict[str, ViewAccuracy]  # split (and test_leakage_free) -> accuracy

    def summary(self) -> TeacherSummary:
        """How a student's checkpoint and card name this teacher."""
        return TeacherSummary(
            name=self.teacher,
            stage=self.stage,
            backbone=self.backbone,
            views=self.view_count,
            val_accuracy=self.accuracy["val"].views,
            test_accuracy=self.accuracy["test"].views,
        )


class DistillationSummary(Record):
    """What a student learned from: its teachers, their ensemble's accuracy, the loss settings."""

    teachers: list[TeacherSummary]
    ensemble: dict[str, float]  # split -> accuracy of the teachers together
    temperature: float
    kd_weight: float
    targets: str
    warm_start: str | None


Trainable = Literal["all", "head"] | Annotated[int, Field(ge=1)]  # the whole net, the head, or its last N blocks


class RunIdentity(Record):
    """What a run was, beyond its recipe: the backbone, its sizes, the part that learned and, for a
    student, its teachers. Written into the checkpoint and the details alike."""

    backbone: str
    input_size: int | None = None
    feature_dim: int
    head_hidden: list[int] | None = None  # a feature-extraction head's hidden widths
    trainable: Trainable | None = None
    trainable_parameters: int | None = None
    distillation: DistillationSummary | None = None


class CheckpointRecord(RunIdentity):
    """A checkpoint's metadata: the run, the recipe that made the weights (params.yaml's spelling, checked
    by `ferbench.schema.Recipe` when it was trained), the code and the epoch the weights are from."""

    training: dict[str, Any]
    code_revision: str
    epoch: int


class RunReport(RunIdentity):
    """Everything a training stage measured of its model (`reports/details/<stage>/<name>.json`)."""

    train: Scores
    val: Scores
    test: Scores
    test_leakage_free: Scores
    tta: TtaScores | None = None
    calibration: TemperatureScaling
    overfitting: Overfitting
    best_epoch: int
    epochs: int
    train_seconds: float
    eval_seconds: float
    train_images_per_second: float
    device: str
    processes: int
    identical_weights_across_processes: bool
    global_batch_size: int
    mixed_precision: Literal["bf16", "fp32"]

    def headline(self) -> dict[str, Any]:
        """What `dvc exp show` shows of a run: accuracy and macro-F1 per split (and on the leakage-free test
        images), accuracy with test-time augmentation, the train-val gaps and the best epoch; for a distilled
        student, its teachers' ensemble accuracy on val and test."""
        splits = {"train": self.train, "val": self.val, "test": self.test, "test_leakage_free": self.test_leakage_free}
        headline: dict[str, Any] = {name: picked(scores, HEADLINE_SCORES) for name, scores in splits.items()}
        if self.tta is not None:
            headline["tta"] = {"val": {"accuracy": self.tta.val.accuracy}, "test": {"accuracy": self.tta.test.accuracy}}
        headline["overfitting"] = picked(self.overfitting, ("accuracy_gap", "loss_gap"))
        headline["best_epoch"] = self.best_epoch
        if self.distillation is not None:
            headline["teachers"] = {"accuracy": dict(self.distillation.ensemble)}
        return headline

    @property
    def tta_val_accuracy(self) -> float | None:
        """Val accuracy with test-time augmentation; None when the run was not evaluated with it."""
        return self.tta.val.accuracy if self.tta is not None else None


# --- the latency report (latency@<backbone>) ---


class Timing(Record):
    """Milliseconds per batch-1 call and calls per second."""

    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    fps: float


class ViewsTiming(Timing):
    views: int  # the test-time augmentation views timed in one call


class VariantMeasurement(Timing):
    """One runtime variant: its timing, its agreement with PyTorch fp32 on val and its val accuracy."""

    agreement: float
    val_accuracy: float
    tta: ViewsTiming | None = None


class Int8Ranges(Record):
    """The images static int8 quantization took its activation ranges from, and how: ONNX Runtime's range
    method, or NNCF's own estimators (OpenVINO). In the latency report and the card of an int8 model."""

    split: Literal["train"]
    images: Annotated[int, Field(ge=1)]
    method: Literal[(*RANGE_METHODS, "nncf")]


LATENCY_HEADLINE = ("p50_ms", "p90_ms", "p99_ms")


class LatencyReport(Record):
    """Every runtime variant of one backbone, timed and checked (`reports/details/latency/<name>.json`)."""

    backbone: str
    model: str
    machine: str
    threads: int
    batch_size: Literal[1]
    runs: int
    gflops: float
    parameters_m: float
    variants: dict[str, VariantMeasurement]
    int8_ranges: Int8Ranges
    min_agreement: float
    fastest_faithful: str
    speedup_vs_torch_fp32: dict[str, float]

    def headline(self) -> dict[str, Any]:
        """What `dvc exp show` shows: p50/p90/p99 per variant and the fastest faithful one."""
        return {
            "fastest_faithful": self.fastest_faithful,
            "variants": {name: picked(variant, LATENCY_HEADLINE) for name, variant in self.variants.items()},
        }


# --- what a deployed folder ships, and the selection (deploy@<candidate>, select) ---


class ShippedSummary(Record):
    """What a deployed model's card says it ships, in numbers (`ModelCard.shipped_summary`)."""

    variant: str
    runtime: str
    file: str
    tta_views: int
    val_accuracy: float
    accuracy_gap: float
    test_accuracy: float
    test_accuracy_ci95: list[float]
    test_accuracy_fp32: float
    test_macro_f1: float
    test_macro_f1_ci95: list[float]
    test_leakage_free_accuracy: float
    test_leakage_free_accuracy_ci95: list[float]
    test_leakage_free_images: int
    temperature: float
    test_ece: float
    test_ece_scaled: float
    test_nll: float
    test_nll_scaled: float
    agreement_with_fp32_on_val: float | None
    latency_p50_ms: float

    def deploy_headline(self, name: str) -> dict[str, Any]:
        """deploy@'s metrics file: what `dvc exp show` shows of a candidate as it would ship."""
        return {"backbone": name, **picked(self, DEPLOY_HEADLINE)}


DEPLOY_HEADLINE = (
    "variant",
    "tta_views",
    "latency_p50_ms",
    "agreement_with_fp32_on_val",
    "val_accuracy",
    "test_accuracy",
    "test_macro_f1",
    "test_leakage_free_accuracy",
)
SHIPPED_HEADLINE = ("val_accuracy", "test_accuracy", "test_macro_f1", "test_leakage_free_accuracy", "latency_p50_ms")


class Criterion(Record):
    """The `select` params a selection applied (recorded in it and in the shipped card)."""

    name: str
    gap_tolerance: float
    gap_penalty: float
    max_gap: float | None
    latency_budget_ms: float | None


class RankedCandidate(Record):
    """One candidate as selection saw it: val numbers as it would ship, its rank or why it was excluded."""

    name: str
    val_accuracy: float
    accuracy_gap: float
    latency_ms: float | None
    tta: bool
    rank: int | None
    score: float
    excluded: str | None


class Selection(Record):
    """`select`'s decision (`reports/details/selection.json`): the ranking, the reason, what ships."""

    selected: str
    criterion: Criterion
    ranking: list[RankedCandidate]
    reason: str
    deployment: ShippedSummary | None = None  # the shipped model's numbers, once it is shipped

    def headline(self) -> dict[str, Any]:
        """What `dvc exp show` shows of a selection: the chosen name, each candidate's rank and score, and the
        shipped model's accuracy and latency."""
        if self.deployment is None:
            raise ValueError("a selection's headline needs the shipped model's numbers")
        return {
            "selected": self.selected,
            "ranking": {entry.name: {"rank": entry.rank, "score": entry.score} for entry in self.ranking},
            "shipped": picked(self.deployment, SHIPPED_HEADLINE),
        }


# --- the data (prepare) ---


class DataOrigin(Record):
    """Where the prepared data came from (`data/prepared/provenance.json`): the source (kaggle | archive |
    synthetic), the Kaggle dataset when it came from Kaggle, the decoded archive's size and SHA-256; in a
    model card, with the images each split had."""

    source: Literal[DATA_SOURCES]
    kaggle_dataset: str | None = None
    archive_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    archive_bytes: Annotated[int, Field(ge=0)]
    images: dict[str, int] | None = None  # split -> images (the card's copy; deploy counts them)


class DataQuality(Record):
    duplicate_groups: int
    duplicate_images: int
    label_conflict_groups: int
    train_test_shared_groups: int
    train_test_shared_images: int
    test_images_in_train_folder: int
    test_leakage_free_images: int
    near_blank: int
    skipped: int
    converted_to_gray: int
    resized: int
    dropped: dict[str, int]


DATA_HEADLINE_QUALITY = (
    "duplicate_images",
    "label_conflict_groups",
    "train_test_shared_images",
    "test_leakage_free_images",
    "near_blank",
    "skipped",
)


class DataSummary(Record):
    """What prepare found and kept (`reports/details/data.json`): images per split and class, the archive's
    files per folder, the quality checks, the files skipped and why."""

    counts: dict[str, dict[str, int]]  # split -> class (and "total") -> images
    archive_files: dict[str, int]
    quality: DataQuality
    skipped_files: list[str]

    def headline(self) -> dict[str, Any]:
        """What `dvc exp show` shows of the data: images per split, archive files and the main quality counts."""
        return {
            "images": {split: counts["total"] for split, counts in self.counts.items()},
            "archive_files": dict(self.archive_files),
            "quality": picked(self.quality, DATA_HEADLINE_QUALITY) | {"dropped": sum(self.quality.dropped.values())},
        }

    @property
    def classes(self) -> list[str]:
        return [name for name in self.counts["train"] if name != "total"]

    def majority_baseline(self) -> tuple[str, float]:
        """The class a constant guess would pick (the most frequent in train) and its test accuracy."""
        majority = max(self.classes, key=lambda name: self.counts["train"][name])
        return majority, self.counts["test"][majority] / max(self.counts["test"]["total"], 1)
