"""The params schema: every section refuses a wrong type, an out-of-range value, an unknown choice and an
unknown key with one line that names the key, the value and what is allowed; stages exit 2 before work."""

import copy
import functools
import subprocess
import sys

import pytest
import yaml

from ferbench.errors import FerbenchError
from ferbench.params import load_params
from ferbench.schema import validate_params
from ferbench.workflow.workspace import create_workspace, python_env
from tests.support import PROJECT_ROOT


@functools.cache
def _project_params() -> dict:
    return yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())


def base() -> dict:
    """The project's params.yaml as YAML reads it (read on first use, not when the tests are collected)."""
    return copy.deepcopy(_project_params())


class Merged(dict):
    """A case's value merged into the section at its key instead of replacing it."""


def changed(path: str, value: object) -> dict:
    """The project's params with the value at dotted `path` replaced (`...` deletes it; `Merged`: merged in)."""
    params = base()
    *parents, last = path.split(".")
    node = params
    for part in parents:
        node = node[part]
    if value is ...:
        del node[last]
    elif isinstance(value, Merged):
        node[last] = {**node[last], **value}
    else:
        node[last] = value
    return params


# A distillation section that is valid as it is: resnet18 relearns from the trained clip_vit_b32.
STUDENT = {"teachers": {"clip_vit_b32": "train"}, "students": {"resnet18": {}}}

CASES = [
    # (dotted key, bad value, the one line it must give)
    ("seed", "42", "'seed' is '42'; expected a whole number"),
    ("seed", -1, "'seed' is -1; allowed: at least 0 and at most 4,294,967,295"),
    ("seed", 2**70, f"'seed' is {2**70}; allowed: at least 0 and at most 4,294,967,295"),
    ("device", "cuda:99999999999999999999", "use auto, cpu, cuda, cuda:N or mps"),
    ("finetune.lr", float("inf"), "'finetune.lr' is inf; expected a finite number"),
    ("finetune.weight_decay", float("nan"), "'finetune.weight_decay' is nan; expected a finite number"),
    ("data.max_uncompressed_mb", float("inf"), "'data.max_uncompressed_mb' is inf; expected a finite number"),
    (
        "train.epochs",
        10**29,
        "'train.epochs' is 100000000000000000000000000000; allowed: at least 1 and at most 10,000",
    ),
    ("finetune.batch_size", 10**12, "'finetune.batch_size' is 1000000000000; allowed: at least 1 and at most 65,536"),
    ("distributed.timeout_s", 10**20, "allowed: at least 1 and at most 86,400"),
    ("distributed.nproc_per_node", 10**6, "allowed: at least 1 and at most 1024"),
    ("distributed.rdzv_endpoint", "localhost:99999", "use HOST:PORT"),
    ("select.gap_tolerance", float("inf"), "expected a finite number"),
    ("device", "gpu", "'device' is 'gpu'; use auto, cpu, cuda, cuda:N or mps"),
    ("compile", "yes", "'compile' is 'yes'; expected true or false"),
    ("devcie", "cpu", "unknown key 'devcie'; did you mean 'device'?"),
    ("data.source", "floppy", "'data.source' is 'floppy'; use one of: kaggle, archive, synthetic"),
    ("data.val_fraction", 1.5, "'data.val_fraction' is 1.5; allowed: greater than 0 and less than 1"),
    ("data.val_fraction", "0.1", "'data.val_fraction' is '0.1'; expected a number"),
    ("data.duplicates", "remove", "'data.duplicates' is 'remove'; use one of: keep, drop"),
    ("data.classes", ["a", "a"], "'data.classes' is ['a', 'a']; class names must be distinct (a repeated)"),
    ("data.blank_sd", 2.0, "unknown key 'data.blank_sd'; did you mean 'data.blank_std'?"),
    ("data.synthetic.train.happy", -3, "'data.synthetic.train.happy' is -3; allowed: at least 0"),
    (
        "backbones.resnet18.source",
        "keras",
        "'backbones.resnet18.source' is 'keras'; use one of: torchvision, timm, transformers, ferbench",
    ),
    ("backbones.resnet18.input_size", 2, "'backbones.resnet18.input_size' is 2; allowed: at least 8 and at most 1024"),
    (
        "backbones.resnet18.wieghts",
        None,
        "unknown key 'backbones.resnet18.wieghts'; did you mean 'backbones.resnet18.weights'?",
    ),
    ("backbones.resnet18.pretrained", ..., "missing key 'backbones.resnet18.pretrained'"),
    ("backbones.resnet18.finetune", ..., "missing key 'backbones.resnet18.finetune'"),
    (
        "backbones.clip_vit_b32.finetune.lr",
        "1e-5",
        "'backbones.clip_vit_b32.finetune.lr' is '1e-5'; expected a number (YAML reads 1e-5 as text: write 1.0e-5)",
    ),
    ("embed.batch_size", 0, "'embed.batch_size' is 0; allowed: at least 1"),
    ("feature_extract.optimizer", "adagrad", "'feature_extract.optimizer' is 'adagrad'; use one of: adam, adamw, sgd"),
    ("feature_extract.hidden", [512, 0], "'feature_extract.hidden[1]' is 0; allowed: at least 1"),
    ("feature_extract.dropout", 1.0, "'feature_extract.dropout' is 1.0; allowed: at least 0 and less than 1"),
    ("finetune.lr", "1e-4", "'finetune.lr' is '1e-4'; expected a number (YAML reads 1e-5 as text: write 1.0e-5)"),
    ("finetune.lr", 0.0, "'finetune.lr' is 0.0; allowed: greater than 0"),
    (
        "finetune.scheduler",
        "linear",
        "'finetune.scheduler' is 'linear'; use one of: none, cosine, step, onecycle, plateau",
    ),
    ("finetune.augment.shift", 0.7, "'finetune.augment.shift' is 0.7; allowed: at least 0 and at most 0.5"),
    ("finetune.augment.shear", 3, "unknown key 'finetune.augment.shear'; known there: shift, rotate, scale, erase"),
    ("finetune.warmup_epochs", 5, "finetune: warmup_epochs (5) must be fewer than epochs (5)"),
    ("train.trainable", "some", "'train.trainable' is 'some'; use all, head or a number of last blocks (1 or more)"),
    ("train.candidates.resnet50", {}, "train.candidates names resnet50, which is not under backbones"),
    ("train.candidates.resnet18.lr", -1.0, "'train.candidates.resnet18.lr' is -1.0; allowed: greater than 0"),
    ("train.precision", "fp16", "'train.precision' is 'fp16'; use one of: auto, bf16, fp32"),
    ("tta.shifts", 3, "'tta.shifts' is 3; use one of: 0, 4, 8"),
    ("tta.flip", 1, "'tta.flip' is 1; expected true or false"),
    ("latency.threads", True, "'latency.threads' is True; expected a whole number"),
    ("latency.min_agreement", 1.5, "'latency.min_agreement' is 1.5; allowed: greater than 0 and at most 1"),
    (
        "latency.int8_range_method",
        "kl",
        "'latency.int8_range_method' is 'kl'; use one of: percentile, minmax, entropy",
    ),
    ("latency.variants", ["onnx_fp16"], "'latency.variants' is ['onnx_fp16']; use all or a list of distinct names"),
    ("latency.variants", [], "'latency.variants' is []; use all or a list of distinct names among: torch_fp32,"),
    ("latency.variants", [["onnx_fp32"]], "'latency.variants' is [['onnx_fp32']]; use all or a list"),
    ("select.criterion", "acc", "'select.criterion' is 'acc'; use one of: accuracy, generalization"),
    ("select.latency_budget_ms", -5, "'select.latency_budget_ms' is -5; allowed: greater than 0"),
    ("select.tta_min_gain", ..., "missing key 'select.tta_min_gain'"),
    ("select", "accuracy", "'select' is 'accuracy'; expected a mapping"),
    ("select.candidates", {}, "'select.candidates' is {}; allowed: at least 1 item(s)"),
    ("select.candidates.resnet50", "train", "select.candidates.resnet50 is 'train', but resnet50 is not under train"),
    (
        "select.candidates.resnet18",
        "distill",
        "select.candidates.resnet18 is 'distill', but resnet18 is not under distill.students (have: none)",
    ),
    (
        "select.candidates.resnet18",
        "finetune",
        "'select.candidates.resnet18' is 'finetune'; use one of: train, distill",
    ),
    (
        "distill.teachers",
        {"vit_l_16": "train"},
        "distill.teachers.vit_l_16 is 'train', but vit_l_16 is not under train.candidates",
    ),
    (
        "distill.teachers",
        {"resnet50": "finetune"},
        "distill.teachers.resnet50 is 'finetune', but resnet50 is not under backbones",
    ),
    (
        "distill.teachers",
        {"resnet18": "distill"},
        "'distill.teachers.resnet18' is 'distill'; a distilled student cannot teach",
    ),
    ("distill.teachers", ["resnet18"], "'distill.teachers' is ['resnet18']; expected a mapping"),
    ("distill.students", {"resnet50": {}}, "distill.students names resnet50, which is not under backbones"),
    ("distill.students", {"resnet18": {}}, "distill.students names resnet18 but distill.teachers is empty"),
    (
        "distill",
        Merged({**STUDENT, "temperature": 0.0}),
        "'distill.temperature' is 0.0; allowed: greater than 0 and at most 100",
    ),
    ("distill", Merged({**STUDENT, "temperature": -2.0}), "'distill.temperature' is -2.0; allowed: greater than 0"),
    ("distill", Merged({**STUDENT, "kd_weight": 1.5}), "'distill.kd_weight' is 1.5; allowed: at least 0 and at most 1"),
    (
        "distill",
        Merged({**STUDENT, "kd_weight": 0.0}),
        "distill.kd_weight is 0: the students would ignore their teachers",
    ),
    ("distill", Merged({**STUDENT, "targets": "live"}), "'distill.targets' is 'live'; use one of: cached, online"),
    (
        "distill",
        Merged({**STUDENT, "students": {"resnet18": {"lr": -1.0}}}),
        "'distill.students.resnet18.lr' is -1.0; allowed: greater than 0",
    ),
    (
        "distill",
        Merged({**STUDENT, "students": {"resnet18": {"epochs": 2, "warmup_epochs": 2}}}),
        "distill.students.resnet18: warmup_epochs (2) must be fewer than epochs (2)",
    ),
    ("distill.temprature", 4.0, "unknown key 'distill.temprature'; did you mean 'distill.temperature'?"),
    (
        "distill",
        Merged({**STUDENT, "students": {"resnet18": {"warm_start": True}}}),
        "distill.students.resnet18.warm_start is true, but no teacher has the backbone resnet18",
    ),
    ("distill", Merged({**STUDENT, "students": {"resnet18": {"warm_start": "yes"}}}), "expected true or false"),
]


@pytest.mark.parametrize(("key", "value", "message"), CASES, ids=[f"{c[0]}={c[1]!r}"[:60] for c in CASES])
def test_a_bad_param_is_one_line_naming_the_key_the_value_and_what_is_allowed(key, value, message):
    with pytest.raises(FerbenchError) as caught:
        validate_params(changed(key, value))
    line = str(caught.value)
    assert line.startswith("params.yaml: ") and message in line and "\n" not in line


def test_select_tta_always_without_a_second_view_is_refused_when_params_are_read():
    params = changed("tta", Merged({"flip": False, "shifts": 0}))
    params["select"]["tta"] = "always"
    with pytest.raises(FerbenchError, match="select.tta is always, but tta has one view") as caught:
        validate_params(params)
    assert "\n" not in str(caught.value)


def test_the_project_params_and_every_preset_are_valid():
    from ferbench.params import load_overrides, merge_overrides

    validate_params(base())
    for preset in ("params-demo.yaml", "params-cpu.yaml", "params-gpu.yaml"):
        validate_params(merge_overrides(base(), load_overrides(PROJECT_ROOT / preset)), preset)


def test_a_key_from_an_earlier_version_is_named_with_its_new_name():
    params = base()
    params["latency"]["calibration_images"] = params["latency"].pop("int8_range_images")
    with pytest.raises(FerbenchError) as caught:
        validate_params(params)
    assert str(caught.value) == (
        "params.yaml: 'latency.calibration_images' is now called 'latency.int8_range_images'; rename it"
    )


def test_a_null_override_removes_the_key_where_omegaconf_would_keep_it_as_none():
    """Why `merge_overrides` is ours: params-cpu.yaml removes the study's backbones with null."""
    from omegaconf import OmegaConf

    from ferbench.params import merge_overrides

    base_params = {"backbones": {"resnet18": {"input_size": 64}, "fer_vgg8": {}}}
    overrides = {"backbones": {"resnet18": None, "fer_vgg8": {"input_size": 48}}}
    merged = OmegaConf.to_container(OmegaConf.merge(base_params, overrides))
    assert merged["backbones"]["resnet18"] is None  # kept: the schema would call it a backbone without fields
    assert merge_overrides(base_params, overrides) == {"backbones": {"fer_vgg8": {"input_size": 48}}}


def test_load_params_validates_and_a_bad_override_never_reaches_a_workspace(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(changed("finetune.epochs", 2.5)))
    with pytest.raises(FerbenchError, match=r"'finetune.epochs' is 2.5; expected a whole number"):
        load_params(bad)
    with pytest.raises(FerbenchError, match="params.yaml with the overrides merged in: 'select.gap_penalty' is -1"):
        create_workspace(tmp_path / "project", {"select": {"gap_penalty": -1}})
    assert not (tmp_path / "project" / "params.yaml").exists()


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["prepare", "train"])
def test_a_stage_with_a_bad_param_exits_2_with_one_line_before_any_work(stage, tmp_path):
    workspace = create_workspace(tmp_path / "project", {})
    params = workspace / "params.yaml"
    params.write_text(params.read_text().replace("val_fraction: 0.125", "val_fraction: 1.25", 1))
    command = [sys.executable, "-m", f"stages.{stage}", *(["resnet18"] if stage == "train" else [])]
    result = subprocess.run(command, cwd=workspace, env=python_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        f"{stage}: error: params.yaml: 'data.val_fraction' is 1.25; allowed: greater than 0 and less than 1"
    )
    assert not (workspace / "data" / "prepared").exists()
