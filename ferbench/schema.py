"""The params schema: every section of `params.yaml`, typed, with ranges and allowed values.

One home for the params contract. `ferbench.params.load_params` validates the whole file with it
at the start of every stage, so a wrong type, an out-of-range value, an unknown choice or an
unknown key (with a did-you-mean) is one line naming the key, the value and what is allowed, and
the stage exits 2 before doing any work. Values live in `params.yaml` only: the schema declares no
defaults for them (a missing key is an error), except the per-backbone and per-candidate
overrides, which are optional by nature.

Pydantic (already installed with DVC, pinned in requirements.txt) is used because it gives typed,
nested, strict validation with exact error locations for free; dataclasses with a hand-written
loader would repeat what it does. Validation is strict: YAML reads `1e-5` as text, and a text
learning rate is refused here instead of failing inside torch.
"""

from __future__ import annotations

import difflib
import re
from typing import Annotated, Any, Literal, TypeVar, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from ferbench.constants import (
    BATCH_MODES,
    CANDIDATE_STAGES,
    CLASS_WEIGHTING,
    CRITERIA,
    DATA_SOURCES,
    KEEP_OR_DROP,
    LR_SCALING,
    OPTIMIZERS,
    PRECISIONS,
    RANGE_METHODS,
    RUNTIME_VARIANTS,
    SAMPLERS,
    SCHEDULERS,
    SOFT_TARGETS,
    TEACHER_STAGES,
    TTA_MODES,
)
from ferbench.errors import FerbenchError
from ferbench.specs import BackboneFields, TTAConfig

# Every number has a finite range a real run could use: YAML happily reads .inf, 1e29 epochs or a seed of 2**70.
Count = Annotated[int, Field(ge=1, le=1_000_000)]
NonNegativeInt = Annotated[int, Field(ge=0, le=1_000_000)]
NonNegative = Annotated[float, Field(ge=0, le=1_000)]
Share = Annotated[float, Field(ge=0, lt=1)]
Epochs = Annotated[int, Field(ge=1, le=10_000)]
BatchSize = Annotated[int, Field(ge=1, le=65_536)]
Gap = Annotated[float, Field(ge=0, le=1)]  # a difference of two accuracies


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


class Augment(Section):
    shift: Annotated[float, Field(ge=0, le=0.5)]
    rotate: Annotated[float, Field(ge=0, le=180)]
    scale: Annotated[float, Field(ge=0, le=0.9)]
    erase: Annotated[float, Field(ge=0, le=1)]
    mixup: Annotated[float, Field(ge=0, le=10)]
    cutmix: Annotated[float, Field(ge=0, le=10)]

    @property
    def geometric(self) -> bool:
        return bool(self.shift or self.rotate or self.scale)

    @property
    def mixing(self) -> bool:
        return bool(self.mixup or self.cutmix)


# What a head on cached features trains with: features cannot be shifted, turned or erased.
NO_AUGMENT = Augment(shift=0.0, rotate=0.0, scale=0.0, erase=0.0, mixup=0.0, cutmix=0.0)


class Training(Section):
    """The hyperparameters every training section has."""

    epochs: Epochs
    batch_size: BatchSize
    optimizer: Literal[OPTIMIZERS]
    lr: Annotated[float, Field(gt=0, le=10)]
    weight_decay: NonNegative
    scheduler: Literal[SCHEDULERS]
    warmup_epochs: NonNegative
    plateau_factor: Annotated[float, Field(gt=0, lt=1)]
    plateau_patience: NonNegativeInt
    label_smoothing: Share
    class_weighting: Literal[CLASS_WEIGHTING]
    sampler: Literal[SAMPLERS]
    ema_decay: Share
    precision: Literal[PRECISIONS]
    flip: bool
    eval_batch_size: BatchSize


class Recipe(Training):
    """One run's hyperparameters, what the training engine takes: a training section with the backbone's
    or candidate's overrides merged in (`Params.feature_extract_for`, `finetune_for`, `train_for`)."""

    augment: Augment


class FeatureExtract(Training):
    hidden: list[Annotated[int, Field(ge=1, le=65_536)]]
    dropout: Share

    @property
    def recipe(self) -> Recipe:
        return Recipe(**self.model_dump(exclude={"hidden", "dropout"}), augment=NO_AUGMENT)


class Finetune(Recipe):
    pass


def check_trainable(value: Any) -> Any:
    """`train.trainable`: all, head, or the number of last backbone blocks that learn."""
    if value in ("all", "head") or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return value
    raise ValueError("use all, head or a number of last blocks (1 or more)")


Trainable = Annotated[str | int, AfterValidator(check_trainable)]


class CandidateTraining(Recipe):
    """The final training of one candidate: the recipe and which part of the network learns."""

    trainable: Trainable

    @property
    def recipe(self) -> Recipe:
        return Recipe(**self.model_dump(exclude={"trainable"}))


def _partial(model: type[Section], name: str, drop: tuple[str, ...] = (), **replace: Any) -> type[Section]:
    """`model` with every field optional (unset or null: not overridden), for per-backbone overrides."""
    fields: dict[str, Any] = {}
    for key, info in model.model_fields.items():
        if key in drop:
            continue
        if key in replace:
            annotation = replace.pop(key)
        else:
            annotation = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
        fields[key] = (annotation | None, None)
    fields.update({key: (annotation | None, None) for key, annotation in replace.items()})
    return create_model(name, __base__=Section, **fields)


AugmentOverride = _partial(Augment, "AugmentOverride")
FinetuneOverride = _partial(Finetune, "FinetuneOverride", augment=AugmentOverride)
# flip cannot differ per backbone: the embed stage computes mirrored features from feature_extract.flip
FeatureExtractOverride = _partial(FeatureExtract, "FeatureExtractOverride", drop=("flip",))
TrainOverride = _partial(CandidateTraining, "TrainOverride", augment=AugmentOverride)
# A student's overrides of the train section, and whether it starts from its own backbone's teacher's weights.
StudentOverride = _partial(CandidateTraining, "StudentOverride", augment=AugmentOverride, warm_start=bool)


class Train(CandidateTraining):
    candidates: dict[str, TrainOverride | None]  # type: ignore[valid-type]


S = TypeVar("S", bound=Section)


def merged(section: Section, override: Section | None, model: type[S], exclude: set[str] | None = None) -> S:
    """`section` with the keys `override` sets replaced (augmentation strengths one by one), as `model`."""
    values = section.model_dump(exclude=exclude)
    for key, value in (override.model_dump(exclude_none=True) if override is not None else {}).items():
        values[key] = {**values[key], **value} if key == "augment" else value
    return model.model_validate(values)


class BackboneSection(BackboneFields):
    """`backbones.<name>`: the backbone (its fields shared with the model card's spec) and its overrides."""

    # Required ({} for none): a stage's DVC params dependency on its override needs the key to exist.
    feature_extract: FeatureExtractOverride | None  # type: ignore[valid-type]
    finetune: FinetuneOverride | None  # type: ignore[valid-type]


class Synthetic(Section):
    train: dict[str, NonNegativeInt]
    test: dict[str, NonNegativeInt]


class Data(Section):
    source: Literal[DATA_SOURCES]
    archive: str | None
    kaggle_dataset: str
    max_uncompressed_mb: Annotated[float, Field(gt=0, le=1_048_576)]
    classes: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=2)]
    val_fraction: Annotated[float, Field(gt=0, lt=1)]
    duplicates: Literal[KEEP_OR_DROP]
    label_conflicts: Literal[KEEP_OR_DROP]
    blanks: Literal[KEEP_OR_DROP]
    blank_std: Annotated[float, Field(ge=0, le=255)]
    test_leakage: Literal[KEEP_OR_DROP]
    synthetic: Synthetic

    @field_validator("classes")
    @classmethod
    def _distinct(cls, classes: list[str]) -> list[str]:
        repeated = sorted({name for name in classes if classes.count(name) > 1})
        if repeated:
            raise ValueError(f"class names must be distinct ({', '.join(repeated)} repeated)")
        return classes


class Embed(Section):
    batch_size: BatchSize


def check_timed_variants(value: Any) -> Any:
    """`latency.variants`: all, or a non-empty list of distinct variant names."""
    names = value if isinstance(value, list) and all(isinstance(name, str) for name in value) else None
    if value == "all" or (names and len(set(names)) == len(names) and set(names) <= set(RUNTIME_VARIANTS)):
        return value
    raise ValueError(f"use all or a list of distinct names among: {', '.join(RUNTIME_VARIANTS)}")


TimedVariants = Annotated[Any, AfterValidator(check_timed_variants)]


class Latency(Section):
    threads: Annotated[int, Field(ge=1, le=1024)]
    warmup: NonNegativeInt
    runs: Count
    min_agreement: Annotated[float, Field(gt=0, le=1)]
    int8_range_images: Count
    int8_range_method: Literal[RANGE_METHODS]
    variants: TimedVariants

    def timed_variants(self) -> set[str] | None:
        """The variants to export and time (the reference always among them); None: every one this machine builds."""
        return None if self.variants == "all" else {RUNTIME_VARIANTS[0], *self.variants}


def _teacher_stage(stage: Any) -> Any:
    if stage == "distill":
        raise ValueError(
            "a distilled student cannot teach; name a train candidate (train) or a benchmarked backbone (finetune)"
        )
    return stage


class Distill(Section):
    """Knowledge distillation: students (one `distill@<backbone>` stage each) trained like `train` candidates
    on the labels and on the averaged soft labels of the teachers."""

    teachers: dict[str, Annotated[Literal[TEACHER_STAGES], BeforeValidator(_teacher_stage)]]
    students: dict[str, StudentOverride | None]  # type: ignore[valid-type]
    temperature: Annotated[float, Field(gt=0, le=100)]
    kd_weight: Annotated[float, Field(ge=0, le=1)]
    targets: Literal[SOFT_TARGETS]


class Select(Section):
    candidates: Annotated[dict[str, Literal[CANDIDATE_STAGES]], Field(min_length=1)]
    criterion: Literal[CRITERIA]
    gap_tolerance: Gap
    gap_penalty: NonNegative
    max_gap: Gap | None
    latency_budget_ms: Annotated[float, Field(gt=0, le=1_000_000)] | None
    tta: Literal[TTA_MODES]
    tta_min_gain: Share


class Distributed(Section):
    nproc_per_node: Annotated[int, Field(ge=1, le=1024)]
    nnodes: Annotated[int, Field(ge=1, le=4096)]
    rdzv_endpoint: str
    batch: Literal[BATCH_MODES]
    lr_scaling: Literal[LR_SCALING]
    sync_batchnorm: bool
    timeout_s: Annotated[int, Field(ge=1, le=86_400)]  # a day

    @field_validator("rdzv_endpoint")
    @classmethod
    def _endpoint(cls, endpoint: str) -> str:
        match = re.fullmatch(r"[A-Za-z0-9.\-\[\]:]+:(\d{1,5})", endpoint)
        if not match or not 0 < int(match.group(1)) < 65_536:
            raise ValueError("use HOST:PORT of the node that runs `dvc repro` (localhost:29400 on one machine)")
        return endpoint


class Params(Section):
    seed: Annotated[int, Field(ge=0, le=2**32 - 1)]  # numpy's generators take 32-bit seeds
    device: str
    compile: bool
    distributed: Distributed
    data: Data
    backbones: Annotated[dict[str, BackboneSection], Field(min_length=1)]
    embed: Embed
    feature_extract: FeatureExtract
    finetune: Finetune
    train: Train
    distill: Distill
    tta: TTAConfig  # the same views a model card records
    latency: Latency
    select: Select

    @field_validator("device")
    @classmethod
    def _device(cls, device: str) -> str:
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d{1,3})?", device):
            raise ValueError("use auto, cpu, cuda, cuda:N or mps")
        return device

    @model_validator(mode="after")
    def _consistent(self) -> Params:
        for where, names in (("train.candidates", self.train.candidates), ("distill.students", self.distill.students)):
            unknown = [name for name in names if name not in self.backbones]
            if unknown:
                raise ValueError(
                    f"{where} names {', '.join(unknown)}, which is not under backbones "
                    f"(have: {', '.join(self.backbones)})"
                )
        self._check_distillation()
        self._check_select_candidates()
        if self.select.tta == "always" and not self.tta.enabled:
            raise ValueError(
                "select.tta is always, but tta has one view (flip false, shifts 0): nothing to ship with it; "
                "turn tta.flip or tta.shifts on, or set select.tta: auto or never"
            )
        runs: list[tuple[str, Training]] = [("feature_extract", self.feature_extract), ("finetune", self.finetune)]
        runs += [(f"backbones.{name}.feature_extract", self.feature_extract_for(name)) for name in self.backbones]
        runs += [(f"backbones.{name}.finetune", self.finetune_for(name)) for name in self.backbones]
        runs += [(f"train.candidates.{name}", self.train_for(name)) for name in self.train.candidates]
        runs += [(f"distill.students.{name}", self.student_for(name)) for name in self.distill.students]
        for where, run in runs:
            if run.warmup_epochs and run.warmup_epochs >= run.epochs:
                raise ValueError(
                    f"{where}: warmup_epochs ({run.warmup_epochs:g}) must be fewer than epochs ({run.epochs})"
                )
        return self

    def _check_distillation(self) -> None:
        distill = self.distill
        for teacher, stage in distill.teachers.items():
            pool = self.train.candidates if stage == "train" else self.backbones
            if teacher not in pool:
                where = "train.candidates" if stage == "train" else "backbones"
                raise ValueError(
                    f"distill.teachers.{teacher} is '{stage}', but {teacher} is not under {where} "
                    f"(have: {', '.join(pool) or 'none'})"
                )
        if not distill.students:
            return
        if not distill.teachers:
            raise ValueError(
                f"distill.students names {', '.join(distill.students)} but distill.teachers is empty; name at "
                "least one teacher (a train candidate: train, a benchmarked backbone: finetune)"
            )
        for name in distill.students:
            if self.warm_start(name) and name not in distill.teachers:
                raise ValueError(
                    f"distill.students.{name}.warm_start is true, but no teacher has the backbone {name}; "
                    f"add {name} to distill.teachers or set warm_start: false"
                )
        if distill.kd_weight == 0:
            raise ValueError(
                "distill.kd_weight is 0: the students would ignore their teachers; use a weight above 0 "
                "(0.5 to 0.9 is usual), or train the backbone under train.candidates instead"
            )

    def _check_select_candidates(self) -> None:
        for name, stage in self.select.candidates.items():
            pool, where = (
                (self.train.candidates, "train.candidates")
                if stage == "train"
                else (self.distill.students, "distill.students")
            )
            if name not in pool:
                raise ValueError(
                    f"select.candidates.{name} is '{stage}', but {name} is not under {where} "
                    f"(have: {', '.join(pool) or 'none'})"
                )

    def backbone(self, name: str) -> BackboneSection:
        """`backbones.<name>`, or one line naming the backbones there are."""
        if name not in self.backbones:
            raise FerbenchError(
                f"params.yaml: no backbone '{name}' under 'backbones' (have: {', '.join(self.backbones)})"
            )
        return self.backbones[name]

    def feature_extract_for(self, name: str) -> FeatureExtract:
        """The `feature_extract` section with `backbones.<name>.feature_extract` merged in."""
        return merged(self.feature_extract, self.backbone(name).feature_extract, FeatureExtract)

    def finetune_for(self, name: str) -> Finetune:
        """The `finetune` section with `backbones.<name>.finetune` merged in."""
        return merged(self.finetune, self.backbone(name).finetune, Finetune)

    def train_for(self, name: str) -> CandidateTraining:
        """The `train` section with `train.candidates.<name>` merged in."""
        if name not in self.train.candidates:
            raise FerbenchError(
                f"params.yaml: '{name}' is not under train.candidates (have: {', '.join(self.train.candidates)})"
            )
        return merged(self.train, self.train.candidates[name], CandidateTraining, exclude={"candidates"})

    def student_for(self, name: str) -> CandidateTraining:
        """The `train` section with `distill.students.<name>` merged in: a student trains like a candidate."""
        if name not in self.distill.students:
            raise FerbenchError(
                f"params.yaml: '{name}' is not under distill.students "
                f"(have: {', '.join(self.distill.students) or 'none'})"
            )
        override = self.distill.students[name]
        if override is not None:
            override = override.model_copy(update={"warm_start": None})
        return merged(self.train, override, CandidateTraining, exclude={"candidates"})

    def warm_start(self, name: str) -> bool:
        """`distill.students.<name>.warm_start`: the student starts from the weights of the teacher of its own
        backbone (`distill.teachers.<name>`) instead of at random."""
        override = self.distill.students.get(name)
        return bool(override is not None and override.warm_start)

    def teacher_stage(self, name: str) -> str:
        """`distill.teachers.<name>`: the stage whose checkpoint teaches (train or finetune)."""
        if name not in self.distill.teachers:
            teachers = ", ".join(self.distill.teachers) or "none"
            raise FerbenchError(f"params.yaml: '{name}' is not under distill.teachers (have: {teachers})")
        return self.distill.teachers[name]

    def candidate_training(self, name: str) -> CandidateTraining:
        """How `select.candidates.<name>` was trained: its train candidate's or its student's recipe."""
        stage = self.select.candidates.get(name)
        if stage is None:
            raise FerbenchError(
                f"params.yaml: '{name}' is not under select.candidates (have: {', '.join(self.select.candidates)})"
            )
        return self.train_for(name) if stage == "train" else self.student_for(name)


EXPECTED_TYPES = {
    "float_type": "a number (YAML reads 1e-5 as text: write 1.0e-5)",
    "int_type": "a whole number",
    "bool_type": "true or false",
    "string_type": "text",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "none_required": "null",
    "finite_number": "a finite number",
}
BOUNDS = {
    "greater_than": "greater than {gt}",
    "greater_than_equal": "at least {ge}",
    "less_than": "less than {lt}",
    "less_than_equal": "at most {le}",
    "too_short": "at least {min_length} item(s)",
    "string_too_short": "at least {min_length} character(s)",
}


def _key(location: tuple[Any, ...]) -> str:
    key = ""
    for part in location:
        key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
    return key


def _allowed_range(location: tuple[Any, ...]) -> str | None:
    """'greater than 0 and less than 1' for the field at `location`, from its declared bounds."""
    model = _model_at(location[:-1])
    info = model.model_fields.get(str(location[-1])) if model else None
    if info is None:
        return None
    items = list(info.metadata)
    for member in get_args(info.annotation):  # `Annotated[X, Field(...)] | None` keeps its bounds inside
        for item in getattr(member, "__metadata__", ()):
            items += getattr(item, "metadata", [item])
    words = {"gt": "greater than", "ge": "at least", "lt": "less than", "le": "at most"}
    bounds = [
        f"{words[name]} {_number(getattr(item, name))}"
        for item in items
        for name in words
        if getattr(item, name, None) is not None
    ]
    return " and ".join(bounds) or None


def _number(value: float) -> str:
    """A bound as people write it: 4,294,967,295 and 65,536, not 4.29497e+09; 0.5 and 1e-05 as they are."""
    return f"{value:,}" if isinstance(value, int) and abs(value) >= 10_000 else f"{value:g}"


def _model_at(location: tuple[Any, ...]) -> type[BaseModel] | None:
    """The schema model that holds the mapping at `location` (dict keys such as backbone names skipped)."""
    model: Any = Params
    index = 0
    while index < len(location):
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None
        info = model.model_fields.get(str(location[index]))
        if info is None:
            return None
        annotation = info.annotation
        index += 1
        annotation = _unwrap(annotation)
        if getattr(annotation, "__origin__", None) is dict:
            annotation = _unwrap(get_args(annotation)[1])
            index += 1  # the dict's key (a backbone or candidate name)
        model = annotation
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _unwrap(annotation: Any) -> Any:
    """X from `X | None` and Annotated[X, ...]."""
    for _ in range(3):
        args = [arg for arg in get_args(annotation) if arg is not type(None)]
        if getattr(annotation, "__metadata__", None) is not None or (len(args) == 1 and args[0] is not annotation):
            annotation = args[0]
    return annotation


RENAMED_KEYS = {  # old name -> new name, for params files written for an earlier version
    "latency.calibration_images": "latency.int8_range_images",
    "latency.calibration_method": "latency.int8_range_method",
}


def describe(error: dict[str, Any], source: str) -> str:
    """One line for one pydantic error: the key, the value and what is allowed."""
    location = tuple(part for part in error["loc"] if not str(part).startswith("function-"))
    kind, value, context = error["type"], error.get("input"), error.get("ctx", {})
    key = _key(location)
    if kind == "extra_forbidden" and key in RENAMED_KEYS:
        return f"{source}: '{key}' is now called '{RENAMED_KEYS[key]}'; rename it"
    if kind == "extra_forbidden":
        model = _model_at(location[:-1])
        known = list(model.model_fields) if model else []
        close = difflib.get_close_matches(str(location[-1]), known, n=1)
        if close:
            return f"{source}: unknown key '{key}'; did you mean '{_key((*location[:-1], close[0]))}'?"
        return f"{source}: unknown key '{key}'; known there: {', '.join(known)}"
    if kind == "missing":
        return f"{source}: missing key '{key}'; every param is set in params.yaml (see the README's params table)"
    if kind == "literal_error":
        choices = str(context.get("expected", "")).replace("'", "").replace(" or ", ", ")
        return f"{source}: '{key}' is {value!r}; use one of: {choices}"
    if kind in EXPECTED_TYPES:
        return f"{source}: '{key}' is {value!r}; expected {EXPECTED_TYPES[kind]}"
    if kind in BOUNDS:
        allowed = _allowed_range(location) or BOUNDS[kind].format(**context)
        return f"{source}: '{key}' is {value!r}; allowed: {allowed}"
    message = str(context.get("error", error["msg"])).removeprefix("Value error, ")
    return f"{source}: '{key}' is {value!r}; {message}" if key else f"{source}: {message}"


def validate_params(params: dict[str, Any], source: str = "params.yaml") -> Params:
    """The params as the schema's typed model; the first problem as a FerbenchError of one line."""
    try:
        return Params.model_validate(params)
    except ValidationError as exc:
        errors = exc.errors()
        renamed = [e for e in errors if e["type"] == "extra_forbidden" and _key(e["loc"]) in RENAMED_KEYS]
        raise FerbenchError(describe((renamed or errors)[0], source)) from None
