"""The typed stage records and the report built from them, on small hand-made records: seconds, no
`dvc repro`. A renamed or missing field fails here, naming the file and the field."""

import json

import pandas as pd
import pytest

from ferbench.data.prepared import PROVENANCE_FILE, archive_provenance, read_provenance
from ferbench.errors import FerbenchError
from ferbench.records import (
    CheckpointRecord,
    DataOrigin,
    DataSummary,
    LatencyReport,
    RunReport,
    Selection,
    ShippedSummary,
    as_record,
    read_record,
    validated,
    write_record,
)
from ferbench.shipping.report_document import ReportTables, results_markdown
from ferbench.shipping.report_tables import (
    accuracy_bars,
    benchmark_table,
    candidate_table,
    collect,
    confident_mistakes,
    per_class_table,
    shipped_points,
    summary_metrics,
    variant_points,
)
from ferbench.shipping.selection import Candidate, select
from tests.support import project_params

CLASSES = ["angry", "happy", "sad"]


def scores(accuracy: float, per_class: bool = False, **extra) -> dict:
    record = {"accuracy": accuracy, "macro_f1": accuracy - 0.1, **extra}
    if per_class:
        record["per_class_recall"] = {name: accuracy for name in CLASSES}
        record["per_class_f1"] = {name: accuracy - 0.05 for name in CLASSES}
    return record


def run_report(val: float, test: float, tta: float | None = None, **extra) -> RunReport:
    calibration = {"ece": 0.05, "nll": 1.0, "ece_scaled": 0.02, "nll_scaled": 0.9}
    record = {
        "train": scores(val + 0.05, loss=0.8),
        "val": scores(val, per_class=True, loss=1.0),
        "test": scores(test, per_class=True, confusion_matrix=[[5, 1, 0], [0, 6, 0], [1, 0, 5]], loss=1.1),
        "test_leakage_free": scores(test - 0.01, images=15),
        "calibration": {
            "temperature": 1.2,
            "fitted_on": "val",
            "ece_bins": 15,
            "val": calibration,
            "test": calibration,
        },
        "overfitting": {
            "accuracy_gap": 0.05,
            "loss_gap": 0.2,
            "best_epoch": 3,
            "at_best_epoch": {"accuracy_gap": 0.04, "loss_gap": 0.1},
            "at_last_epoch": {"accuracy_gap": 0.06, "loss_gap": 0.3},
        },
        "best_epoch": 3,
        "epochs": 4,
        "train_seconds": 10.0,
        "eval_seconds": 1.0,
        "train_images_per_second": 100.0,
        "device": "cpu",
        "processes": 1,
        "identical_weights_across_processes": True,
        "global_batch_size": 64,
        "mixed_precision": "fp32",
        "backbone": "net",
        "feature_dim": 8,
        **extra,
    }
    if tta is not None:
        record["tta"] = {"views": 2, "val": scores(tta), "test": scores(tta), "test_leakage_free": scores(tta)}
    return as_record(RunReport, record)


def timing(p50: float) -> dict:
    return {"p50_ms": p50, "p90_ms": p50 * 1.1, "p99_ms": p50 * 1.2, "mean_ms": p50, "fps": 1000 / p50}


def latency_report(name: str, variants: dict[str, tuple[float, float, float]]) -> LatencyReport:
    """`variants`: name -> (p50 ms, agreement, val accuracy)."""
    measured = {
        variant: {**timing(p50), "agreement": agreement, "val_accuracy": accuracy}
        for variant, (p50, agreement, accuracy) in variants.items()
    }
    return as_record(
        LatencyReport,
        {
            "backbone": name,
            "model": f"models/finetune/{name}.pt",
            "machine": "test machine",
            "threads": 2,
            "batch_size": 1,
            "runs": 10,
            "gflops": 0.1,
            "parameters_m": 1.2,
            "variants": measured,
            "int8_ranges": {"images": 32, "split": "train", "method": "percentile"},
            "min_agreement": 0.99,
            "fastest_faithful": min(
                (v for v, (_, agreement, _) in variants.items() if agreement >= 0.99), key=lambda v: variants[v][0]
            ),
            "speedup_vs_torch_fp32": {v: variants["torch_fp32"][0] / p50 for v, (p50, _, _) in variants.items()},
        },
    )


def shipped(val: float, test: float, p50: float) -> ShippedSummary:
    return ShippedSummary(
        variant="onnx_int8",
        runtime="onnxruntime",
        file="model.int8.onnx",
        tta_views=1,
        val_accuracy=val,
        accuracy_gap=0.05,
        test_accuracy=test,
        test_accuracy_ci95=[test - 0.05, test + 0.05],
        test_accuracy_fp32=test,
        test_macro_f1=test - 0.1,
        test_macro_f1_ci95=[test - 0.15, test - 0.05],
        test_leakage_free_accuracy=test - 0.01,
        test_leakage_free_accuracy_ci95=[test - 0.06, test + 0.04],
        test_leakage_free_images=15,
        temperature=1.2,
        test_ece=0.05,
        test_ece_scaled=0.02,
        test_nll=1.0,
        test_nll_scaled=0.9,
        agreement_with_fp32_on_val=1.0,
        latency_p50_ms=p50,
    )


def data_summary() -> DataSummary:
    counts = {split: {"total": 3 * n, **dict.fromkeys(CLASSES, n)} for split, n in (("train", 20), ("val", 5))}
    counts["test"] = {"total": 18, "angry": 6, "happy": 8, "sad": 4}
    quality = dict.fromkeys(
        (
            "duplicate_groups",
            "duplicate_images",
            "label_conflict_groups",
            "train_test_shared_groups",
            "train_test_shared_images",
            "test_images_in_train_folder",
            "near_blank",
            "skipped",
            "converted_to_gray",
            "resized",
        ),
        0,
    )
    quality.update(test_leakage_free_images=18, dropped={"duplicate": 0})
    return as_record(
        DataSummary,
        {"counts": counts, "archive_files": {"train": 85, "test": 18}, "quality": quality, "skipped_files": []},
    )


@pytest.fixture
def details(tmp_path):
    """A details folder as the stages leave it: two backbones benchmarked, both trained, one distilled."""
    folder = tmp_path / "details"
    write_record(folder / "data.json", data_summary())
    for stage in ("feature_extract", "finetune"):
        write_record(folder / stage / "small.json", run_report(0.40, 0.38))
        write_record(folder / stage / "large.json", run_report(0.50, 0.47, tta=0.52 if stage == "finetune" else None))
    write_record(folder / "train/small.json", run_report(0.60, 0.58))
    write_record(folder / "train/large.json", run_report(0.62, 0.60, tta=0.63))
    teacher = {"name": "large", "stage": "train", "backbone": "large", "views": 2, "val_accuracy": 0.63}
    distillation = {
        "teachers": [{**teacher, "test_accuracy": 0.61}],
        "ensemble": {"val": 0.63, "test": 0.61},
        "temperature": 4.0,
        "kd_weight": 0.5,
        "targets": "cached",
        "warm_start": "train@small",
    }
    write_record(folder / "distill/small.json", run_report(0.61, 0.59, distillation=distillation))
    write_record(
        folder / "latency/small.json",
        latency_report(
            "small", {"torch_fp32": (4.0, 1.0, 0.4), "onnx_fp32": (2.0, 1.0, 0.4), "onnx_int8": (1.0, 0.995, 0.4)}
        ),
    )
    write_record(
        folder / "latency/large.json",
        latency_report(
            "large", {"torch_fp32": (9.0, 1.0, 0.5), "onnx_fp32": (5.0, 1.0, 0.5), "onnx_int8": (0.5, 0.9, 0.55)}
        ),
    )
    rules = project_params().select.model_copy(
        update={"criterion": "accuracy", "max_gap": None, "latency_budget_ms": None}
    )
    selection = select([Candidate("small", 0.61, 0.05, 1.0), Candidate("large", 0.62, 0.05, 5.0)], rules)
    write_record(folder / "selection.json", selection.model_copy(update={"deployment": shipped(0.62, 0.60, 5.0)}))
    return folder


def records_of(details):
    return collect(details, ["small", "large"], {"train": ["small", "large"], "distill": ["small"]})


def test_a_record_written_reads_back_equal_and_its_headline_names_each_field_once(details):
    report = read_record(details / "train/large.json", RunReport, "train@large")
    assert report == run_report(0.62, 0.60, tta=0.63)
    assert report.headline() == {
        "train": {"accuracy": 0.67, "macro_f1": pytest.approx(0.57)},
        "val": {"accuracy": 0.62, "macro_f1": pytest.approx(0.52)},
        "test": {"accuracy": 0.60, "macro_f1": pytest.approx(0.50)},
        "test_leakage_free": {"accuracy": 0.59, "macro_f1": pytest.approx(0.49)},
        "tta": {"val": {"accuracy": 0.63}, "test": {"accuracy": 0.63}},
        "overfitting": {"accuracy_gap": 0.05, "loss_gap": 0.2},
        "best_epoch": 3,
    }
    written = json.loads((details / "train/small.json").read_text())
    assert "tta" not in written and "distillation" not in written  # fields never set are left out
    assert read_record(details / "data.json", DataSummary, "prepare").headline()["images"] == {
        "train": 60,
        "val": 15,
        "test": 18,
    }


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (lambda r: r["val"].update(accuracy_rate=r["val"].pop("accuracy")), "val.accuracy: Field required"),
        (lambda r: r.update(best_epochs=r.pop("best_epoch")), "best_epoch: Field required"),
        (lambda r: r["overfitting"].update(accuracy_gap="0.1"), "overfitting.accuracy_gap: Input should be"),
    ],
)
def test_a_renamed_or_mistyped_field_is_one_line_naming_the_file_field_and_stage(details, edit, problem):
    path = details / "train/large.json"
    record = json.loads(path.read_text())
    edit(record)
    path.write_text(json.dumps(record))
    with pytest.raises(FerbenchError, match="not a RunReport record") as caught:
        read_record(path, RunReport, "train@large")
    message = str(caught.value)
    assert str(path) in message and problem in message and "dvc repro train@large" in message
    assert "\n" not in message


def test_a_missing_or_unreadable_record_names_the_stage_to_run(tmp_path):
    with pytest.raises(FerbenchError, match="not found; run `dvc repro select`"):
        read_record(tmp_path / "selection.json", Selection, "select")
    (tmp_path / "selection.json").write_bytes(b"\xff\xfe not text")
    with pytest.raises(FerbenchError, match="not a Selection record .*rerun `dvc repro select`"):
        read_record(tmp_path / "selection.json", Selection, "select")


def test_the_report_tables_from_hand_made_records(details):
    records = records_of(details)
    benchmark = benchmark_table(records).set_index("backbone")
    assert benchmark.loc["large", "finetune_test"] == 0.47 and benchmark.loc["large", "finetune_test_tta"] == 0.52
    assert pd.isna(benchmark.loc["small", "finetune_test_tta"])  # evaluated without TTA
    assert benchmark.loc["large", "fastest_variant"] == "onnx_fp32"  # int8 is faster but unfaithful (0.9)
    assert benchmark.loc["small", "fastest_variant"] == "onnx_int8"
    candidates = candidate_table(records, {"small": "distill", "large": "train"}).set_index("model")
    assert list(candidates.index) == ["train@small", "train@large", "distill@small"]
    assert candidates.loc["train@large", "rank"] == 1 and candidates.loc["distill@small", "rank"] == 2
    assert pd.isna(candidates.loc["train@small", "rank"])  # not what select ranks for small
    per_class = per_class_table(records, CLASSES)
    assert (
        len(per_class) == 3 * 3
        and per_class.set_index(["candidate", "class"]).loc[("train@large", "happy"), "test_images"] == 8
    )
    bars = accuracy_bars(benchmark_table(records), records)
    assert set(bars["mode"]) == {"feature_extract", "finetune", "final", "distilled", "shipped"}
    assert bars["chance"].iloc[0] == pytest.approx(6 / 18)  # 'angry', the first of the equally frequent classes
    assert summary_metrics(records, benchmark_table(records))["best_on_val"]["finetune"]["backbone"] == "large"


def test_the_pareto_front_keeps_faithful_variants_no_other_beats_on_both(details):
    points = variant_points(records_of(details).latency, budget_ms=3.0).set_index(["backbone", "variant"])
    front = set(points.index[points["pareto"]])
    # large's int8 is fastest and most accurate, but unfaithful: never on the front; small's int8 (1 ms, 0.4)
    # and large's onnx_fp32 (5 ms, 0.5) are not beaten on both by any faithful variant
    assert front == {("small", "onnx_int8"), ("large", "onnx_fp32")}
    assert not points.loc[("large", "onnx_int8"), "faithful"]
    assert list(points["within_budget"]) == [False, True, True, False, False, True]
    shipped_rows = shipped_points(records_of(details).selection).set_index("backbone")
    assert shipped_rows.loc["large", "selected"] and not shipped_rows.loc["small", "selected"]


def test_the_document_has_every_section_with_the_records_numbers(details):
    records = records_of(details)
    predictions = pd.DataFrame(
        {"index": [0, 1, 2], "actual": ["sad", "happy", "angry"], "predicted": ["happy", "happy", "sad"],
         "confidence": [0.9, 0.8, 0.95]}
    )  # fmt: skip
    tables = ReportTables(
        benchmark=benchmark_table(records),
        candidates=candidate_table(records, {"small": "distill", "large": "train"}),
        per_class=per_class_table(records, CLASSES),
        points=variant_points(records.latency, None),
        mistakes=confident_mistakes(predictions),
    )
    assert list(tables.mistakes["index"]) == [2, 0]  # the wrong answers, surest first
    origin = DataOrigin(source="synthetic", archive_sha256="ab" * 32, archive_bytes=1234)
    document = results_markdown(records, origin, tables, "../plots")
    headings = ["## Data", "## Benchmark", "## Accuracy against latency", "## Candidates", "## Distillation: small"]
    headings += ["### Per class", "## Beside published results", "### Most confident mistakes", "## Plots"]
    positions = [document.index(heading) for heading in headings]
    assert positions == sorted(positions)  # every section, in order
    assert "**Selected: large**" in document and "test accuracy **0.6000**" in document
    assert "started from the weights of `train@small`" in document and "val +0.0100, test +0.0100" in document
    assert "No latency budget set" in document and "![reliability](../plots/reliability.png)" in document
    assert "Source: `synthetic`, archive SHA-256 `abababababababab...` (1,234 bytes)" in document


def test_a_checkpoint_record_says_what_made_the_weights_and_a_bad_one_is_one_line(tmp_path):
    metadata = {
        "backbone": "fer_vgg8",
        "input_size": 48,
        "feature_dim": 256,
        "trainable": 2,  # the last two blocks: a number is as valid as all or head
        "trainable_parameters": 1000,
        "training": {"epochs": 30},
        "code_revision": "abc1234",
        "epoch": 29,
    }
    record = validated(CheckpointRecord, metadata, "models/train/fer_vgg8.pt", "train@fer_vgg8")
    assert record.trainable == 2 and record.epoch == 29 and record.distillation is None
    for broken in ({**metadata, "trainable": "some"}, {key: v for key, v in metadata.items() if key != "epoch"}):
        with pytest.raises(FerbenchError) as caught:
            validated(CheckpointRecord, broken, "models/train/fer_vgg8.pt", "train@fer_vgg8")
        message = str(caught.value)
        assert message.startswith("models/train/fer_vgg8.pt: not a CheckpointRecord record")
        assert "dvc repro train@fer_vgg8" in message and "\n" not in message


def test_the_data_origin_prepare_writes_reads_back_and_a_damaged_one_names_prepare(tmp_path):
    archive = tmp_path / "fer2013.zip"
    archive.write_bytes(b"not really a zip, but bytes to hash")
    origin = archive_provenance(archive, "kaggle", "msambare/fer2013")
    assert origin.archive_bytes == 35 and len(origin.archive_sha256) == 64 and origin.kaggle_dataset
    write_record(tmp_path / PROVENANCE_FILE, origin)
    assert read_provenance(tmp_path) == origin
    (tmp_path / PROVENANCE_FILE).write_text(json.dumps({"source": "floppy", "archive_sha256": "0" * 64}))
    with pytest.raises(FerbenchError, match=r"provenance.json: not a DataOrigin record \(source: .*-f prepare"):
        read_provenance(tmp_path)
