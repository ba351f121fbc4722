"""Deploying a trained model: exporting it in every runtime variant, keeping the fastest faithful one
and writing the model folder (`ferbench.models.card` defines the card, `ferbench.models.folder` the
folder's files); and shipping the selected candidate's folder as it is."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from ferbench.constants import IMAGE_SIZE
from ferbench.data.prepared import Split
from ferbench.errors import FerbenchError
from ferbench.evaluation.calibration import calibration_report, reliability_table
from ferbench.evaluation.metrics import evaluation_report
from ferbench.models.card import (
    CARD_FORMAT,
    CardFiles,
    CardInput,
    CardLatency,
    CardMetrics,
    CardTta,
    ModelCard,
    Preprocessing,
    Provenance,
    Selection,
)
from ferbench.models.checkpoint import save_checkpoint
from ferbench.models.classifier import TTAClassifier, load_classifier, with_tta
from ferbench.models.folder import calibrated_probabilities, checksums, write_card
from ferbench.models.runtimes import (
    RangeSample,
    VariantExporter,
    agreement,
    batched_logits,
    build_runtimes,
    fastest_faithful,
)
from ferbench.models.variants import CHECKPOINT_FILE, REFERENCE, VARIANTS
from ferbench.paths import DETAILS_DIR
from ferbench.records import (
    Int8Ranges,
    LatencyReport,
    RunReport,
    TemperatureScaling,
    Timing,
    VariantMeasurement,
    ViewsTiming,
    picked,
)
from ferbench.specs import NO_TTA, BackboneSpec, TTAConfig


@dataclass(frozen=True)
class CardSections:
    """What a model card says beyond its files: every section optional (a test folder of an untrained model
    has none), the temperature 1 unless one was fitted."""

    tta: TTAConfig | None = None  # the views inside the graph; None: none
    temperature: float = 1.0
    agreement_with_fp32_on_val: Mapping[str, float] | None = None
    metrics: CardMetrics | None = None
    calibration: TemperatureScaling | None = None
    latency: CardLatency | None = None
    provenance: Provenance | None = None
    limitations: Sequence[str] = ()
    selection: Selection | None = None

    def optional_fields(self) -> dict[str, Any]:
        """The optional card sections that are set (the card records only those)."""
        optional = {
            "agreement_with_fp32_on_val": dict(self.agreement_with_fp32_on_val)
            if self.agreement_with_fp32_on_val is not None
            else None,
            "metrics": self.metrics,
            "calibration": self.calibration,
            "latency": self.latency,
            "provenance": self.provenance,
            "limitations": list(self.limitations) or None,
            "selection": self.selection,
        }
        return {name: value for name, value in optional.items() if value is not None}


@dataclass(frozen=True)
class FolderSources:
    """Where a model folder's files come from: the variant's files exported already (else exported from the
    model), the checkpoint to copy (else saved from the model), and the train images static int8 measures its
    activation ranges on."""

    exported: Path | None = None
    checkpoint: Path | None = None
    int8_ranges: RangeSample | None = None


def write_model_folder(
    folder: Path,
    spec: BackboneSpec,
    model: nn.Module,
    classes: Sequence[str],
    variant: str,
    sections: CardSections = CardSections(),
    sources: FolderSources = FolderSources(),
) -> ModelCard:
    """A deployable folder: the files of `variant` (from `sources`; `model` already carries its TTA
    wrapper), the checkpoint, and the card with `sections`."""
    if variant not in VARIANTS:
        raise FerbenchError(f"unknown deployment variant {variant!r}; use one of {', '.join(VARIANTS)}")
    shipped = VARIANTS[variant]
    exported, checkpoint, ranges = sources.exported, sources.checkpoint, sources.int8_ranges
    tta = sections.tta or NO_TTA
    if shipped.int8 and ranges is None:
        raise FerbenchError(f"{variant}: static int8 needs the train images to measure its activation ranges on")
    folder.mkdir(parents=True, exist_ok=True)
    # weights only where the variant has a weights file: the card records the fields that were set
    weights = {"weights": shipped.weights} if shipped.weights else {}
    files = CardFiles(checkpoint=CHECKPOINT_FILE, model=shipped.file, **weights)
    classifier = model.model if isinstance(model, TTAClassifier) else model
    if checkpoint is not None:
        shutil.copyfile(checkpoint, folder / CHECKPOINT_FILE)
    else:
        save_checkpoint(folder / CHECKPOINT_FILE, classifier, backbone=spec.name)
    if shipped.name != REFERENCE:
        if exported is not None:
            for name in shipped.files:
                shutil.copyfile(exported / name, folder / name)
        else:
            with tempfile.TemporaryDirectory() as scratch:
                VariantExporter(model, Path(scratch)).export(shipped, folder, ranges)
    preprocess = classifier.preprocess
    card = ModelCard(
        format=CARD_FORMAT,
        backbone=spec.name,
        spec=spec,
        classes=list(classes),
        input=CardInput(
            dtype="uint8",
            shape=("batch", IMAGE_SIZE, IMAGE_SIZE),
            color="grayscale",
            made_by="ferbench.data.decode.image_to_fer (ITU-R 601 luma, bilinear resize to 48x48)",
        ),
        preprocessing=Preprocessing(
            inside_model=True,
            resize="bilinear",
            input_size=preprocess.input_size,
            channels=preprocess.channels,
            scale="1/255",
            mean=preprocess.mean.flatten().tolist(),
            std=preprocess.std.flatten().tolist(),
        ),
        tta=CardTta.of(tta),
        temperature=sections.temperature,
        runtime=VARIANTS[variant].runtime,
        variant=variant,
        files=files,
        sha256=checksums(folder, files.model_dump()),
        **(
            {
                "int8_ranges": Int8Ranges(
                    split="train",
                    images=len(ranges.images),
                    method=ranges.method if shipped.int8 == "ort" else "nncf",
                )
            }
            if shipped.int8
            else {}
        ),
        **sections.optional_fields(),
    )
    write_card(folder, card)
    return card


@dataclass(frozen=True)
class TrainedCandidate:
    """A trained candidate as deploy finds it: the backbone, its checkpoint, the classes, what its train
    stage measured and what the latency stage timed for its architecture."""

    spec: BackboneSpec
    checkpoint: Path
    classes: list[str]
    trained: RunReport  # reports/details/<train or distill>/<name>.json
    latency: LatencyReport  # reports/details/latency/<name>.json


@dataclass(frozen=True)
class JudgingData:
    """The prepared data deploy judges with: val decides faithfulness and the temperature, test reports;
    static int8 measures its activation ranges on train images only."""

    val: Split
    test: Split
    leakage_free: np.ndarray  # which test images have no pixel copy in the train folder
    int8_ranges: RangeSample


@dataclass(frozen=True)
class ShippingRules:
    threads: int
    min_agreement: float  # a variant is faithful if it predicts fp32's class on this share of val
    tta: TTAConfig | None  # the views to ship inside the graph; None: none


@dataclass(frozen=True)
class ModelContext:
    """What a deployed card says of the model's origin: where its data and code came from, and its limits."""

    provenance: Provenance
    limitations: Sequence[str]


@dataclass
class Deployment:
    """What `deploy_candidate` produced: the card, the model's test reliability table (per
    confidence bin: count, mean confidence and accuracy, before and after temperature scaling) and
    its test predictions (image index, true and predicted class, calibrated confidence)."""

    card: ModelCard
    reliability: pd.DataFrame
    test_predictions: pd.DataFrame


def deploy_candidate(
    folder: Path,
    candidate: TrainedCandidate,
    data: JudgingData,
    rules: ShippingRules,
    about: ModelContext | None = None,
) -> Deployment:
    """Decide once how a trained candidate ships: export the checkpoint (with `rules.tta`'s views inside the
    graph when given) in every variant, keep its fastest faithful one (this checkpoint's own agreement
    on val, the latency stage's timings of the architecture), fit its temperature on val, measure it
    on test, and write the model folder with its card. `select` ranks candidates on these numbers and
    ships the chosen folder as it is."""
    torch.set_num_threads(rules.threads)
    classes, val, test = candidate.classes, data.val, data.test
    shipped = with_tta(load_classifier(candidate.spec, candidate.checkpoint, len(classes)), rules.tta)
    with_views = rules.tta is not None and rules.tta.enabled
    shutil.rmtree(folder, ignore_errors=True)
    with tempfile.TemporaryDirectory() as scratch:
        # only the variants the latency stage timed: their timings are what the rule compares
        timed = candidate.latency.variants
        runtimes = build_runtimes(shipped, Path(scratch), rules.threads, data.int8_ranges, only=timed)
        val_logits = {name: batched_logits(runtime, val.images) for name, runtime in runtimes.items()}
        reference = val_logits[REFERENCE].argmax(1)
        agreements = {name: agreement(reference, logits.argmax(1)) for name, logits in val_logits.items()}
        p50 = {name: _timing(_variant(candidate.latency, name), with_views).p50_ms for name in agreements}
        variant = fastest_faithful(p50, agreements, rules.min_agreement)
        test_logits = batched_logits(runtimes[variant], test.images)
        probabilities = calibration_report(
            {"val": (val_logits[variant], val.labels), "test": (test_logits, test.labels)}
        )
        predictions = test_logits.argmax(1)
        deployed_test = evaluation_report(test.labels, predictions, classes)
        leakage_free = evaluation_report(test.labels[data.leakage_free], predictions[data.leakage_free], classes)
        trained = candidate.trained
        card = write_model_folder(
            folder,
            candidate.spec,
            shipped,
            classes,
            variant,
            CardSections(
                tta=rules.tta,
                temperature=probabilities["temperature"],
                agreement_with_fp32_on_val=agreements,
                metrics=CardMetrics(
                    val_accuracy=float((val_logits[variant].argmax(1) == val.labels).mean()),
                    train_accuracy=trained.train.accuracy,
                    accuracy_gap=trained.overfitting.accuracy_gap,
                    test_accuracy_fp32=trained.test.accuracy,
                    test_images=deployed_test["images"],
                    test_accuracy=deployed_test["accuracy"],
                    test_accuracy_ci95=deployed_test["accuracy_ci95"],
                    test_macro_f1=deployed_test["macro_f1"],
                    test_macro_f1_ci95=deployed_test["macro_f1_ci95"],
                    test_leakage_free_accuracy=leakage_free["accuracy"],
                    test_leakage_free_accuracy_ci95=leakage_free["accuracy_ci95"],
                    test_leakage_free_macro_f1=leakage_free["macro_f1"],
                    test_leakage_free_macro_f1_ci95=leakage_free["macro_f1_ci95"],
                    test_leakage_free_images=leakage_free["images"],
                    test_per_class=deployed_test["per_class"],
                ),
                calibration=TemperatureScaling.model_validate(probabilities),
                latency=CardLatency(
                    machine=candidate.latency.machine,
                    threads=candidate.latency.threads,
                    batch_size=1,
                    **_timing_fields(_timing(candidate.latency.variants[variant], with_views)),
                ),
                provenance=about.provenance if about is not None else None,
                limitations=about.limitations if about is not None else (),
            ),
            FolderSources(exported=Path(scratch), checkpoint=candidate.checkpoint, int8_ranges=data.int8_ranges),
        )
    before = reliability_table(test_logits, test.labels)
    after = reliability_table(test_logits, test.labels, probabilities["temperature"])
    reliability = pd.DataFrame({"bin_center": (before["bin_lower"] + before["bin_upper"]) / 2})
    for name, table in (("before", before), ("after", after)):
        for column in ("count", "confidence", "accuracy"):
            reliability[f"{column}_{name}"] = table[column]
    confidence = calibrated_probabilities(test_logits, probabilities["temperature"]).max(1)
    test_predictions = pd.DataFrame(
        {
            "index": np.arange(len(test.labels)),
            "actual": [classes[i] for i in test.labels],
            "predicted": [classes[i] for i in predictions],
            "confidence": confidence,
        }
    )
    return Deployment(card, reliability, test_predictions)


def _variant(latency: LatencyReport, name: str) -> VariantMeasurement:
    """The latency stage's record of one variant (an error naming the fix when it was not measured)."""
    if name not in latency.variants:
        raise FerbenchError(
            f"{DETAILS_DIR / 'latency'}: no timings for {name}; rerun `dvc repro` (the latency stage times "
            "every variant the select stage may ship)"
        )
    return latency.variants[name]


def _timing(variant: VariantMeasurement, with_views: bool) -> Timing:
    """A latency variant's batch-1 timings, or those on the TTA views."""
    timing = variant.tta if with_views else variant
    if timing is None:
        raise FerbenchError(
            f"{DETAILS_DIR / 'latency'}: no timings with TTA; rerun `dvc repro` (the latency stage times "
            "the TTA views when params.yaml: tta has more than one)"
        )
    return timing


def _timing_fields(timing: Timing) -> dict[str, Any]:
    """The card's latency fields of a timing: the `Timing` fields, and the views timed when there are several."""
    return picked(timing, [*Timing.model_fields, *(["views"] if isinstance(timing, ViewsTiming) else [])])
