"""The overrides presets (params-demo/cpu/gpu.yaml): every key is valid, and each training section runs.

The GPU preset cannot be run here; this runs its real stage code for a few steps on synthetic
faces on the CPU, with every backbone built without weights at a small input size (CLIP, whose
positions fix its input size: a 2-layer tower loaded from a folder), so that any
key the code would reject (or misspell) fails here rather than an hour into a GPU run.
"""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from ferbench.constants import FER2013_CLASSES
from ferbench.params import load_overrides, load_params
from ferbench.paths import teacher_file
from ferbench.records import EmbeddingRecord, RunReport, read_record
from ferbench.schema import Params
from ferbench.training.benchmark import long_training, run_feature_extract, run_finetune, run_train
from ferbench.training.embeddings import save_embeddings
from ferbench.training.settings import RunSettings, backbone_spec
from ferbench.training.teachers import TrainedTeacher, cache_teacher_outputs, load_teaching
from ferbench.workflow.workspace import write_params
from tests.support import PROJECT_ROOT, save_tiny_clip, synthetic_prepared, tta

pytestmark = pytest.mark.slow  # make test-fast leaves these out; make test runs them

CLASSES = list(FER2013_CLASSES)
PRESETS = ("params-demo.yaml", "params-cpu.yaml", "params-gpu.yaml")
SMALL_INPUT = {"torchvision": 32, "timm": 32, "ferbench": None}


def merged_params(preset: str, tmp_path: Path) -> Params:
    write_params(PROJECT_ROOT, tmp_path / "params.yaml", load_overrides(PROJECT_ROOT / preset))
    return load_params(tmp_path / "params.yaml")


@pytest.mark.parametrize("preset", PRESETS)
def test_every_key_of_a_preset_is_accepted(preset, tmp_path):
    params = merged_params(preset, tmp_path)  # the schema checks every key and value
    assert RunSettings.from_params(params, torch.device("cpu")).classes == CLASSES
    for name in params.backbones:
        backbone_spec(params, name)
        params.feature_extract_for(name)
        params.finetune_for(name)
    for name in params.train.candidates:
        assert params.train_for(name).trainable
    for path_param in [params.data.archive] + [spec.weights for spec in params.backbones.values()]:
        assert path_param is None or Path(path_param).is_absolute()  # rebased onto the source project


@pytest.fixture(scope="module")
def tiny_prepared(tmp_path_factory):
    return synthetic_prepared(tmp_path_factory.mktemp("tiny"), 4, 2, seed=1, val_fraction=0.25)


def test_the_gpu_preset_runs_a_few_steps_of_every_training_section_on_the_cpu(tiny_prepared, tmp_path, monkeypatch):
    params = merged_params("params-gpu.yaml", tmp_path)
    monkeypatch.chdir(tmp_path)
    settings = RunSettings.from_params(params, torch.device("cpu"), prepared_dir=tiny_prepared)
    assert params.tta.flip and params.tta.shifts == 8 and params.compile
    # on the CPU: no torch.compile, and TTA over 2 views instead of 10 (the 10 are checked above; each view is
    # one more pass over every split)
    settings = replace(settings, compile_model=False, tta=tta(flip=True))
    few_steps = {"epochs": 1, "warmup_epochs": 0.5, "batch_size": 8, "eval_batch_size": 32}  # one epoch of 3 steps

    tiny_clip = str(save_tiny_clip(tmp_path / "tiny-clip"))

    def small(name):
        """Without weights at a small input size; a CLIP tower has fixed positions, so it is a 2-layer one loaded
        from a folder as a downloaded one is (a ViT-B/32 at 224 px took most of this test's minute)."""
        spec = backbone_spec(params, name)
        if spec.source == "transformers":
            return spec.model_copy(update={"pretrained": True, "weights": tiny_clip, "input_size": None})
        return spec.model_copy(update={"pretrained": False, "weights": None, "input_size": SMALL_INPUT[spec.source]})

    candidates = params.train.candidates
    students = params.distill.students
    others = [name for name in params.backbones if name not in candidates and name not in students]
    assert "densenet121" in others and not any(  # the candidates and the students train below
        params.backbones[name].finetune.model_dump(exclude_none=True) for name in others
    )
    # The finetune section on one of them: vgg16 would run the same code with 17x the parameters (about 30 s
    # here); the candidates cover the other sources and the per-backbone overrides in the train section.
    for name in ["densenet121"]:
        summary = run_finetune(small(name), params.finetune_for(name).model_copy(update=few_steps), settings)
        assert summary.tta.views == 2  # the GPU preset's mirror view, evaluated
        assert read_record(tmp_path / f"reports/details/finetune/{name}.json", RunReport, "finetune") == summary
    for name in candidates:
        summary = run_train(small(name), params.train_for(name).model_copy(update=few_steps), settings)
        assert summary.epochs == 1 and (tmp_path / f"models/train/{name}.pt").is_file()
    assert set(params.distill.teachers) <= set(candidates) and students
    for name, stage in params.distill.teachers.items():  # teach@<teacher>: the candidates' checkpoints above
        teacher = TrainedTeacher(small(name), stage, tmp_path / f"models/{stage}/{name}.pt")
        outputs = cache_teacher_outputs(
            teacher, CLASSES, tiny_prepared, settings.tta, 32, torch.device("cpu"), tmp_path / teacher_file(name)
        )
        assert outputs.logits["train"].shape == (2, 21, 7)  # the 21 train faces and their mirrors
    for name in students:  # distill@<student>: its recipe, learning from both teachers' soft labels
        teaching = load_teaching(params, tiny_prepared, name, root=tmp_path)
        training = params.student_for(name).model_copy(update=few_steps)
        summary = long_training("distill", small(name), training, settings, teaching)
        assert summary.epochs == 1 and summary.distillation.teachers[0].name == "vit_b_16"
        assert (tmp_path / f"models/distill/{name}.pt").is_file()
    counts = {"train": 21, "val": 7, "test": 14}
    rng = np.random.default_rng(0)
    features = {
        split: rng.normal(size=(2 if split == "train" else 1, count, 16)).astype(np.float16)
        for split, count in counts.items()
    }
    features.update({f"{split}_labels": np.arange(count) % 7 for split, count in counts.items()})
    save_embeddings(tmp_path / "features.npz", features, EmbeddingRecord(backbone="x", feature_dim=16, input_size=48))
    for name in params.backbones:
        section = params.feature_extract_for(name).model_copy(update=few_steps)
        summary = run_feature_extract(name, tmp_path / "features.npz", section, settings)
        assert summary.test.confusion_matrix is not None and sum(map(sum, summary.test.confusion_matrix)) == 14
        assert read_record(tmp_path / f"reports/details/feature_extract/{name}.json", RunReport, "x") == summary
