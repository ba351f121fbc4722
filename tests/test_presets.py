"""The overrides presets (params-demo/cpu/gpu.yaml): every key is valid, and each training section runs.

The GPU preset cannot be run here; this runs its real stage code for a few steps on synthetic
faces on the CPU, with every backbone built without weights at a small input size, so that any
key the code would reject (or misspell) fails here rather than an hour into a GPU run.
"""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml

from ferbench.benchmark import run_feature_extract, run_finetune, run_train
from ferbench.constants import FER2013_CLASSES
from ferbench.embeddings import save_embeddings
from ferbench.models.classifier import TTAConfig
from ferbench.run_settings import RunSettings, TrainConfig, resolve_device, stage_settings
from ferbench.selection import Criterion, TTAPolicy
from ferbench.stage_params import backbone_overrides, backbone_spec, run_settings
from ferbench.workspace import load_overrides, write_params
from tests.conftest import PROJECT_ROOT, synthetic_prepared

CLASSES = list(FER2013_CLASSES)
PRESETS = ("params-demo.yaml", "params-cpu.yaml", "params-gpu.yaml")
SMALL_INPUT = {"torchvision": 32, "timm": 32, "transformers": None, "ferbench": None}  # CLIP: its 224 positions


def merged_params(preset: str, tmp_path: Path) -> dict:
    write_params(PROJECT_ROOT, tmp_path / "params.yaml", load_overrides(PROJECT_ROOT / preset))
    return yaml.safe_load((tmp_path / "params.yaml").read_text())


@pytest.mark.parametrize("preset", PRESETS)
def test_every_key_of_a_preset_is_accepted(preset, tmp_path):
    params = merged_params(preset, tmp_path)
    settings = run_settings(params)
    assert settings.classes == CLASSES
    for name in params["backbones"]:
        backbone_spec(params, name)
        for stage in ("feature_extract", "finetune"):
            stage_settings(
                params[stage],
                backbone_overrides(params, name, stage),
                f"{stage} / {name}",
                ("hidden", "dropout") if stage == "feature_extract" else (),
            )
    for name, overrides in params["train"]["candidates"].items():
        assert name in params["backbones"], f"candidate {name} is not a backbone"
        config, _ = stage_settings(params["train"], overrides, f"train / {name}", ("trainable",))
        assert isinstance(config, TrainConfig)
    Criterion.from_params(params["select"])
    TTAPolicy.from_params(params["select"])
    for path_param in [params["data"]["archive"]] + [spec["weights"] for spec in params["backbones"].values()]:
        assert path_param is None or Path(path_param).is_absolute()  # rebased onto the source project


@pytest.fixture(scope="module")
def tiny_prepared(tmp_path_factory):
    return synthetic_prepared(tmp_path_factory.mktemp("tiny"), 4, 2, seed=1, val_fraction=0.25)


def test_the_gpu_preset_runs_a_few_steps_of_every_training_section_on_the_cpu(tiny_prepared, tmp_path, monkeypatch):
    params = merged_params("params-gpu.yaml", tmp_path)
    monkeypatch.chdir(tmp_path)
    settings: RunSettings = run_settings(params, tiny_prepared)
    assert settings.tta.views == 10 and settings.compile_model
    # on the CPU: no torch.compile, and TTA over 2 views instead of 10 (the 10 are checked above; they cost
    # a minute of CLIP at 224 px here)
    settings = replace(settings, device=resolve_device("cpu"), compile_model=False, tta=TTAConfig(flip=True))
    few_steps = {"epochs": 1, "warmup_epochs": 0.5, "batch_size": 8, "eval_batch_size": 32}  # one epoch of 3 steps

    def small(name):
        spec = backbone_spec(params, name)
        return replace(spec, pretrained=False, weights=None, input_size=SMALL_INPUT[spec.source])

    candidates = params["train"]["candidates"]
    others = [name for name in params["backbones"] if name not in candidates]  # the candidates train below
    assert "densenet121" in others and not any(params["backbones"][name].get("finetune") for name in others)
    # The finetune section on one of them: vgg16 would run the same code with 17x the parameters (about 30 s
    # here); the candidates cover the other sources and the per-backbone overrides in the train section.
    for name in ["densenet121"]:
        summary = run_finetune(
            small(name), {**params["finetune"], **few_steps}, backbone_overrides(params, name, "finetune"), settings
        )
        assert summary["tta"]["views"] == 2 and 0 <= summary["test"]["accuracy"] <= 1
    for name, overrides in candidates.items():
        summary = run_train(small(name), {**params["train"], **few_steps}, {**(overrides or {}), **few_steps}, settings)
        assert summary["epochs"] == 1 and (tmp_path / f"models/train/{name}.pt").is_file()
    counts = {"train": 21, "val": 7, "test": 14}
    rng = np.random.default_rng(0)
    features = {
        split: rng.normal(size=(2 if split == "train" else 1, count, 16)).astype(np.float16)
        for split, count in counts.items()
    }
    features.update({f"{split}_labels": np.arange(count) % 7 for split, count in counts.items()})
    save_embeddings(tmp_path / "features.npz", features, {"feature_dim": 16})
    for name in params["backbones"]:
        summary = run_feature_extract(
            name,
            tmp_path / "features.npz",
            {**params["feature_extract"], **few_steps},
            backbone_overrides(params, name, "feature_extract"),
            settings,
        )
        assert 0 <= summary["test"]["accuracy"] <= 1
