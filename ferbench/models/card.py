"""The model card (`model_card.json` in a model folder), typed: written by deploy, extended by select, read
by serving, rendered to `MODEL_CARD.md` for people, all from this one definition.

A card says what inference needs (classes, the 48x48 uint8 grayscale input made by
`ferbench.data.decode.image_to_fer`, the preprocessing and test-time augmentation inside the model, the
temperature that calibrates its probabilities, the runtime variant and its file) and what a reader needs
to trust it (metrics with intervals, calibration, latency, provenance, limitations and, in
`models/selected/`, why it was chosen). Cards are untrusted input: every field is validated, and a file
name can only name a file inside the folder (`ferbench.models.folder` checks it exists there).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import PurePath
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator

from ferbench.constants import IMAGE_SIZE, INPUT_SIZE_RANGE, MAX_CLASS_NAME, TEMPERATURE_RANGE
from ferbench.models.variants import RUNTIMES, VARIANTS
from ferbench.provenance import SYNTHETIC_WARNING, code_revision
from ferbench.records import (
    Criterion,
    DataOrigin,
    DistillationSummary,
    Int8Ranges,
    ShippedSummary,
    TemperatureScaling,
    Trainable,
)
from ferbench.specs import BackboneSpec, ShiftPixels, Shifts, TTAConfig

CARD_FILE = "model_card.json"
MARKDOWN_FILE = "MODEL_CARD.md"
CARD_FORMAT = "ferbench-model-card/1"


class CardPart(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


def _plain_file_name(name: str) -> str:
    """A file of the card is a plain name inside the model folder: never absolute, never through '..'."""
    if not name or PurePath(name).is_absolute() or ".." in PurePath(name).parts or name.startswith("/"):
        raise ValueError("it must name a file inside the model folder (no absolute path, no '..')")
    return name


FileName = Annotated[str, AfterValidator(_plain_file_name)]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
Share = Annotated[float, Field(ge=0, le=1)]
Temperature = Annotated[float, Field(ge=TEMPERATURE_RANGE[0], le=TEMPERATURE_RANGE[1])]  # what calibration fits


def _printable_name(name: str) -> str:
    if not name.isprintable():
        raise ValueError("a class name must be printable text (no control or bidirectional characters)")
    return name


ClassName = Annotated[str, Field(min_length=1, max_length=MAX_CLASS_NAME), AfterValidator(_printable_name)]
Interval = Annotated[list[float], Field(min_length=2, max_length=2)]  # a 95% interval: low, high
Milliseconds = Annotated[float, Field(ge=0)]


class CardInput(CardPart):
    dtype: Literal["uint8"]
    shape: tuple[Literal["batch"], Literal[IMAGE_SIZE], Literal[IMAGE_SIZE]]
    color: Literal["grayscale"]
    made_by: str


class Preprocessing(CardPart):
    inside_model: Literal[True]
    resize: Literal["bilinear"]
    input_size: Annotated[int, Field(ge=INPUT_SIZE_RANGE[0], le=INPUT_SIZE_RANGE[1])]
    channels: Literal[1, 3]
    scale: Literal["1/255"]
    mean: list[float]
    std: list[float]


class CardTta(CardPart):
    """The TTA views inside the exported graph (`views` is what they add up to)."""

    flip: bool
    shifts: Shifts
    shift_pixels: ShiftPixels
    views: int
    inside_model: Literal[True]

    @model_validator(mode="after")
    def _views_add_up(self) -> CardTta:
        if self.views != self.config.views:
            raise ValueError(f"views must be 1 + flip + shifts = {self.config.views}")
        return self

    @classmethod
    def of(cls, tta: TTAConfig) -> CardTta:
        return cls(**tta.model_dump(), views=tta.views, inside_model=True)

    @property
    def config(self) -> TTAConfig:
        """The views as the classifier's TTA wrapper takes them (validated there)."""
        return TTAConfig(flip=self.flip, shifts=self.shifts, shift_pixels=self.shift_pixels)


class CardFiles(CardPart):
    model: FileName
    checkpoint: FileName | None = None  # a released folder carries no checkpoint
    weights: FileName | None = None  # OpenVINO IR: the .bin beside the model's .xml


class ClassResult(CardPart):
    images: Annotated[int, Field(ge=0)]
    recall: Share
    recall_ci95: Interval
    f1: Share


class CardMetrics(CardPart):
    """The shipped model's numbers: val accuracy as shipped, the checkpoint's train accuracy and gap,
    and the test set with 95% intervals, per class and on the leakage-free test images."""

    val_accuracy: Share
    train_accuracy: Share
    accuracy_gap: float
    test_accuracy_fp32: Share
    test_images: Annotated[int, Field(ge=0)]
    test_accuracy: Share
    test_accuracy_ci95: Interval
    test_macro_f1: Share
    test_macro_f1_ci95: Interval
    test_leakage_free_accuracy: Share
    test_leakage_free_accuracy_ci95: Interval
    test_leakage_free_macro_f1: Share
    test_leakage_free_macro_f1_ci95: Interval
    test_leakage_free_images: Annotated[int, Field(ge=0)]
    test_per_class: dict[str, ClassResult]


class CardLatency(CardPart):
    """Batch-1 CPU timings of the shipped variant (on its TTA views when it has several)."""

    machine: str | None = None
    threads: Annotated[int, Field(ge=1)]
    batch_size: Literal[1]
    p50_ms: Milliseconds
    p90_ms: Milliseconds
    p99_ms: Milliseconds
    mean_ms: Milliseconds
    fps: Annotated[float, Field(ge=0)]
    views: Annotated[int, Field(ge=1)] | None = None


class TrainingProvenance(CardPart):
    """The checkpoint's own record of what made the weights, with the run's seed."""

    seed: int
    training: dict[str, Any]  # the recipe as params.yaml spelled it (`ferbench.schema.Recipe`, checked by deploy)
    trainable: Trainable | None = None
    distillation: DistillationSummary | None = None  # a student's teachers
    code_revision: str


class ShippingProvenance(CardPart):
    """The params that decided how the model ships, under their params.yaml names."""

    model_config = ConfigDict(
        extra="forbid", strict=True, allow_inf_nan=False, serialize_by_alias=True, validate_by_name=True
    )

    tta: str = Field(alias="select.tta")
    tta_min_gain: float = Field(alias="select.tta_min_gain")
    min_agreement: float = Field(alias="latency.min_agreement")


class Provenance(CardPart):
    data: DataOrigin
    git_revision: str
    created: str
    training: TrainingProvenance
    shipping: ShippingProvenance

    @classmethod
    def written_now(cls, data: DataOrigin, training: TrainingProvenance, shipping: ShippingProvenance) -> Provenance:
        """A card's provenance as of now: this code's revision and the time, beside what it is given."""
        created = datetime.now(UTC).isoformat(timespec="seconds")
        return cls(data=data, git_revision=code_revision(), created=created, training=training, shipping=shipping)


class Selection(CardPart):
    criterion: Criterion
    reason: str


class ModelCard(CardPart):
    """The whole card, in the order it is written."""

    format: Literal[CARD_FORMAT]
    backbone: Annotated[str, Field(min_length=1)]
    spec: BackboneSpec
    classes: Annotated[list[ClassName], Field(min_length=1, max_length=100)]
    input: CardInput
    preprocessing: Preprocessing
    tta: CardTta
    temperature: Temperature = 1.0
    runtime: Literal[RUNTIMES]
    variant: Literal[tuple(VARIANTS)]
    files: CardFiles
    sha256: dict[FileName, Sha256] = Field(default_factory=dict)
    int8_ranges: Int8Ranges | None = Field(None, validation_alias=AliasChoices("int8_ranges", "int8_calibration"))
    agreement_with_fp32_on_val: dict[str, Share] | None = None
    metrics: CardMetrics | None = None
    calibration: TemperatureScaling | None = None  # the temperature and what it does to ECE and NLL
    latency: CardLatency | None = None
    provenance: Provenance | None = None
    limitations: list[str] = Field(default_factory=list)
    selection: Selection | None = None

    @field_validator("classes")
    @classmethod
    def _distinct(cls, classes: list[str]) -> list[str]:
        if len(set(classes)) != len(classes):
            raise ValueError("class names must be distinct")
        return classes

    @model_validator(mode="after")
    def _runtime_runs_the_variant(self) -> ModelCard:
        if VARIANTS[self.variant].runtime != self.runtime:
            raise ValueError(f"variant {self.variant} runs on {VARIANTS[self.variant].runtime}, not {self.runtime}")
        return self

    @model_validator(mode="after")
    def _applies_the_temperature_it_fitted(self) -> ModelCard:
        """The top-level temperature (what serving divides the logits by) is the one the calibration block
        reports the fit of; a card where they differ describes probabilities it does not produce."""
        if self.calibration is not None and self.calibration.temperature != self.temperature:
            raise ValueError(
                f"temperature {self.temperature} differs from calibration.temperature "
                f"{self.calibration.temperature}; redeploy the model (dvc repro deploy)"
            )
        return self

    def to_json(self) -> str:
        """The card as written: its sections in order, those it does not have left out."""
        return json.dumps(self.model_dump(mode="json", exclude_unset=True), indent=2) + "\n"

    @property
    def trained_on_synthetic_data(self) -> bool:
        """Whether the model learned from the synthetic demo faces (its numbers mean little)."""
        return self.provenance is not None and self.provenance.data.source == "synthetic"

    @property
    def shipped_agreement(self) -> float | None:
        """The shipped variant's agreement with PyTorch fp32 on val."""
        return (self.agreement_with_fp32_on_val or {}).get(self.variant)

    def summary(self) -> str:
        """One line saying what a model is and what it learned from, for the app and the CLI."""
        line = f"{self.backbone} ({self.variant} on {self.runtime})"
        if self.trained_on_synthetic_data:
            return line + ", trained on synthetic drawn faces (make demo): not for real photos"
        data = self.provenance.data if self.provenance is not None else None
        if data is not None and data.source in ("kaggle", "archive"):
            digest = (data.archive_sha256 or "")[:12]
            line += f", trained on FER-2013 ({data.source}{', SHA-256 ' + digest + '...' if digest else ''})"
        else:
            line += ", training data not recorded in its card"
        if self.metrics is not None:
            line += f", test accuracy {self.metrics.test_accuracy:.1%}"
        if self.provenance is not None and self.provenance.git_revision:
            line += f", code {self.provenance.git_revision}"
        return line

    def deployment_summary(self) -> ShippedSummary:
        """What the card says it ships, in numbers (`select`'s record; deploy's headline metrics)."""
        if self.metrics is None or self.calibration is None or self.latency is None:
            raise ValueError("a deployed card has metrics, calibration and latency")
        metrics, calibration = self.metrics, self.calibration
        return ShippedSummary(
            variant=self.variant,
            runtime=self.runtime,
            file=self.files.model,
            tta_views=self.tta.views,
            val_accuracy=metrics.val_accuracy,
            accuracy_gap=metrics.accuracy_gap,
            test_accuracy=metrics.test_accuracy,
            test_accuracy_ci95=metrics.test_accuracy_ci95,
            test_accuracy_fp32=metrics.test_accuracy_fp32,
            test_macro_f1=metrics.test_macro_f1,
            test_macro_f1_ci95=metrics.test_macro_f1_ci95,
            test_leakage_free_accuracy=metrics.test_leakage_free_accuracy,
            test_leakage_free_accuracy_ci95=metrics.test_leakage_free_accuracy_ci95,
            test_leakage_free_images=metrics.test_leakage_free_images,
            temperature=self.temperature,
            test_ece=calibration.test.ece,
            test_ece_scaled=calibration.test.ece_scaled,
            test_nll=calibration.test.nll,
            test_nll_scaled=calibration.test.nll_scaled,
            agreement_with_fp32_on_val=self.shipped_agreement,
            latency_p50_ms=self.latency.p50_ms,
        )

    def markdown(self) -> str:
        """The card for people (`MODEL_CARD.md`)."""
        return card_markdown(self)


FER2013_CITATION = (
    "Goodfellow, I. J., Erhan, D., Carrier, P. L., Courville, A., Mirza, M., Hamner, B., et al. (2013). "
    "Challenges in Representation Learning: A report on three machine learning contests. ICONIP 2013, "
    "LNCS 8228, 117-124. arXiv:1307.0414"
)
DATA_TERMS = (
    "FER-2013 was made for the ICML 2013 workshop *Challenges in Representation Learning*; its faces were "
    "gathered by Google image searches and labelled by people. It is distributed on Kaggle (`msambare/fer2013`) "
    "with no explicit licence: read the terms on its Kaggle page before you use the data, or a model trained "
    "on it, beyond research."
)
CARD_SECTIONS = (  # the headings of MODEL_CARD.md, in order (the sections of a Hugging Face model card)
    "Model details",
    "Intended use",
    "Out-of-scope use",
    "Training data",
    "Training procedure",
    "Evaluation",
    "Calibration",
    "Latency",
    "Why this model",
    "Limitations and biases",
    "How to reproduce",
    "Data terms and citation",
)
INTENDED_USE = [
    "Research and teaching: benchmarking facial-expression models, studying what FER-2013 models learn.",
    "Demonstrations and prototypes: which of seven posed expression categories a cropped face resembles most, "
    "with calibrated probabilities.",
]
OUT_OF_SCOPE = [
    "Decisions about people: hiring, grading, policing, security, health, credit, insurance or any judgement "
    "of a person's feelings, honesty or character. An expression is not an emotion, and the labels are noisy.",
    "Surveillance or tracking people without their informed consent.",
    "Faces unlike FER-2013's: profile views, heavy occlusion, very low light, infants; the model was not "
    "measured on them.",
]
BIASES = [
    "FER-2013's labels are noisy: the dataset's authors estimate human accuracy on it at 65+-5%, so part of "
    "the remaining error is disagreement between people, and some test labels are wrong.",
    "The classes are imbalanced (disgust is about 1.5% of the images), and the model is much weaker on the "
    "rare and confusable classes (see the per-class table).",
    "The images come from web searches: who appears (age, gender, skin tone, culture of expression) is "
    "neither balanced nor annotated, so accuracy across groups of people is unknown and may differ.",
    "About 8% of the Kaggle test images are pixel copies of train images; the leakage-free figures exclude them.",
]


def _interval(values: Interval | None, style: str = ".1%") -> str:
    """' (95% CI a-b)' for a (low, high) pair, '' when absent."""
    return f" (95% CI {values[0]:{style}}-{values[1]:{style}})" if values is not None else ""


def _training_lines(training: TrainingProvenance | None) -> list[str]:
    """The params that made the weights, as the checkpoint recorded them."""
    config = training.training if training is not None else {}
    if training is None or not config:
        return ["- Not recorded"]
    augment = config.get("augment") or {}
    augment_text = ", ".join(f"{key} {value}" for key, value in augment.items()) if augment else "none"
    return [
        f"- {config.get('epochs')} epochs, batch {config.get('batch_size')}, optimizer {config.get('optimizer')}, "
        f"learning rate {config.get('lr')}, weight decay {config.get('weight_decay')}, schedule "
        f"{config.get('scheduler')} (warm-up {config.get('warmup_epochs')} epochs)",
        f"- Label smoothing {config.get('label_smoothing')}, class weighting {config.get('class_weighting')}, "
        f"sampler {config.get('sampler')}, weight EMA {config.get('ema_decay')}, precision {config.get('precision')}",
        f"- Augmentation on the training device: mirror {config.get('flip')}; {augment_text}",
        *_distillation_lines(training.distillation),
        f"- Trainable: {training.trainable or 'all'}; seed {training.seed}",
        f"- Trained with ferbench `{training.code_revision}`",
        f"- All of it: `provenance.training` in `{CARD_FILE}`",
    ]


def _distillation_lines(distillation: DistillationSummary | None) -> list[str]:
    """A distilled student's teachers and their accuracies, as its checkpoint recorded them (none otherwise)."""
    if distillation is None:
        return []
    named = ", ".join(
        f"`{teacher.name}` ({teacher.stage}, {teacher.views} view(s); val "
        f"{_percent(teacher.val_accuracy)}, test {_percent(teacher.test_accuracy)})"
        for teacher in distillation.teachers
    )
    ensemble = distillation.ensemble
    soft = "cached on the clean images" if distillation.targets == "cached" else "on every augmented batch"
    warm = distillation.warm_start
    start = (
        [f"- Started from the weights of `{warm}` (warm start): the epochs above came after that model's"]
        if warm
        else []
    )
    return [
        *start,
        f"- Distilled: loss = (1 - {distillation.kd_weight}) x cross-entropy on the labels + "
        f"{distillation.kd_weight} x KL to the teachers' soft labels at temperature "
        f"{distillation.temperature} ({soft})",
        f"- Teachers, their probabilities averaged: {named or 'not recorded'}; together val "
        f"{_percent(ensemble.get('val'))}, test {_percent(ensemble.get('test'))}",
    ]


def _percent(value: Any) -> str:
    return f"{value:.1%}" if isinstance(value, int | float) else "not recorded"


def _evaluation_lines(metrics: CardMetrics) -> list[str]:
    lines = [
        "| test set | images | accuracy | macro-F1 |",
        "|---|---|---|---|",
        f"| FER-2013 test folder | {metrics.test_images} | {metrics.test_accuracy:.1%}"
        f"{_interval(metrics.test_accuracy_ci95)} | {metrics.test_macro_f1:.3f}"
        f"{_interval(metrics.test_macro_f1_ci95, '.3f')} |",
        f"| leakage-free (no pixel copy in the train folder) | {metrics.test_leakage_free_images} | "
        f"{metrics.test_leakage_free_accuracy:.1%}{_interval(metrics.test_leakage_free_accuracy_ci95)} "
        f"| {metrics.test_leakage_free_macro_f1:.3f}{_interval(metrics.test_leakage_free_macro_f1_ci95, '.3f')} |",
        "",
        f"Validation accuracy {metrics.val_accuracy:.1%} as shipped; train-val gap {metrics.accuracy_gap:+.3f}; "
        f"the checkpoint alone in PyTorch fp32: {metrics.test_accuracy_fp32:.1%} on test. Intervals: Wilson "
        "for accuracy and recall, a 1,000-round bootstrap over images for macro-F1.",
        "",
        "| class | test images | recall | F1 |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {name} | {row.images} | {row.recall:.1%}{_interval(row.recall_ci95)} | {row.f1:.3f} |"
        for name, row in metrics.test_per_class.items()
    ]
    return lines


def card_markdown(card: ModelCard) -> str:
    """The card for people, in the sections of a Hugging Face model card (`CARD_SECTIONS`); the same for
    every folder the pipeline ships (sections without data in the card are left out)."""
    lines = [f"# Model card: {card.backbone} ({card.variant})", ""]
    if card.trained_on_synthetic_data:
        lines += [f"> **{SYNTHETIC_WARNING}**", ""]
    lines += [f"{card.summary()}.", "", *_details_section(card)]
    lines += ["", "## Intended use", "", *[f"- {text}" for text in INTENDED_USE]]
    lines += ["", "## Out-of-scope use", "", *[f"- {text}" for text in OUT_OF_SCOPE]]
    lines += ["", *_training_section(card)]
    if card.metrics is not None:
        lines += ["", "## Evaluation", "", *_evaluation_lines(card.metrics)]
    lines += _measured_sections(card)
    if card.selection is not None:
        lines += ["", "## Why this model", "", card.selection.reason]
    lines += ["", *_closing_sections(card)]
    return "\n".join(lines)


def _details_section(card: ModelCard) -> list[str]:
    """Model details: the network, its input, runtime, views, probabilities, code and int8 calibration."""
    spec, tta, provenance = card.spec, card.tta, card.provenance
    revision = provenance.git_revision if provenance is not None else "unknown"
    lines = [
        "## Model details",
        "",
        f"- Network: `{spec.source}` `{spec.model}` (pretrained weights: {spec.pretrained}) with a linear "
        f"head over {len(card.classes)} classes, in output order: {', '.join(card.classes)}",
        "- Input: uint8 grayscale faces, batch x 48 x 48, framed as FER-2013 frames its faces and made by "
        f"`ferbench.data.decode.image_to_fer`; the model resizes to {card.preprocessing.input_size} px, "
        f"{'repeats to 3 channels' if card.preprocessing.channels == 3 else 'keeps one channel'} and "
        "normalises inside the graph",
        f"- Runtime: {card.runtime}, file `{card.files.model}`"
        + (f" (SHA-256 `{card.sha256[card.files.model]}`)" if card.files.model in card.sha256 else "")
        + (f" with its weights `{card.files.weights}`" if card.files.weights else ""),
        "- Test-time augmentation: "
        + (
            f"logits averaged over {tta.views} views (mirror {tta.flip}, {tta.shifts} shifts of "
            f"{tta.shift_pixels} px), inside the exported graph"
            if tta.views > 1
            else "none"
        ),
        f"- Probabilities: softmax of the logits divided by the temperature {card.temperature:.3f} (fitted on val)",
        f"- Code: ferbench revision `{revision}`; folder written "
        f"{provenance.created if provenance is not None else 'unknown'}; code licence MIT",
    ]
    if card.int8_ranges is not None:
        int8 = card.int8_ranges
        rest = "OpenVINO runs them in bf16 where the CPU has native bf16" if int8.method == "nncf" else "they stay fp32"
        how = "NNCF post-training quantization" if int8.method == "nncf" else int8.method
        lines.append(
            f"- Static int8: activation ranges calibrated on {int8.images} {int8.split} images ({how}); the "
            f"preprocessing inside the model and the classifier head are not quantized ({rest})"
        )
    return lines


def _training_section(card: ModelCard) -> list[str]:
    """Training data (source, archive checksum, images per split) and the training procedure."""
    provenance = card.provenance
    data = provenance.data if provenance is not None else None
    images = (data.images if data is not None else None) or {}
    split = ", ".join(f"{name} {count:,}" for name, count in images.items()) if images else "not recorded"
    source_text = (
        "synthetic drawn faces generated by `ferbench.data.synthetic` (`make demo`)"
        if card.trained_on_synthetic_data
        else f"FER-2013 ({data.source if data is not None else 'unknown'} source"
        + (f", Kaggle `{data.kaggle_dataset}`" if data is not None and data.kaggle_dataset else "")
        + ")"
    )
    return [
        "## Training data",
        "",
        f"- {source_text}; archive SHA-256 `{(data.archive_sha256 if data is not None else None) or 'unknown'}`",
        f"- Images after the quality checks (duplicates and conflicts dropped): {split}. Val is held out of the "
        "Kaggle train folder, stratified; test is the Kaggle test folder",
        "",
        "## Training procedure",
        "",
        *_training_lines(provenance.training if provenance is not None else None),
    ]


def _measured_sections(card: ModelCard) -> list[str]:
    """Calibration and latency, where the card has them."""
    lines: list[str] = []
    if card.calibration is not None:
        test = card.calibration.test
        lines += [
            "",
            "## Calibration",
            "",
            f"Temperature {card.temperature:.3f}, fitted on val. Test expected calibration error "
            f"({card.calibration.ece_bins} bins) {test.ece:.4f} before and {test.ece_scaled:.4f} "
            f"after scaling; test negative log-likelihood {test.nll:.4f} -> {test.nll_scaled:.4f}.",
        ]
    if card.latency is not None:
        latency, agreement = card.latency, card.shipped_agreement
        lines += [
            "",
            "## Latency",
            "",
            f"p50 {latency.p50_ms:.2f} ms, p99 {latency.p99_ms:.2f} ms ({latency.fps:.0f} images/s) per "
            f"face at batch 1 on {latency.threads} CPU threads of {latency.machine or 'an unrecorded machine'}, "
            "model call only (face detection is extra)"
            + (f"; agreement with PyTorch fp32 on val: {agreement:.2%}." if agreement is not None else "."),
        ]
    return lines


def _closing_sections(card: ModelCard) -> list[str]:
    """Limitations and biases, how to reproduce, the data terms and the citation."""
    synthetic = card.trained_on_synthetic_data
    revision = card.provenance.git_revision if card.provenance is not None else "unknown"
    return [
        "## Limitations and biases",
        "",
        *[f"- {text}" for text in card.limitations],
        *([] if synthetic else [f"- {text}" for text in BIASES]),
        "",
        "## How to reproduce",
        "",
        f"Check out ferbench at `{revision}`, then `make real` (the CPU preset "
        "on FER-2013; Kaggle credentials, or a local zip: docs/real-data.md). The folder is "
        "`runs/real-cpu/models/selected/`."
        if not synthetic
        else "`make demo`; the folder is `demo/models/selected/`.",
        "",
        "## Data terms and citation",
        "",
        DATA_TERMS,
        "",
        f"FER-2013: {FER2013_CITATION}.",
        "",
    ]
