"""End to end, what a change to the first run reruns: each test changes a copy of its own (`own_workspace`,
tests/conftest.py) of the first run (`first_run`), so no test depends on another or on their order."""

import json
import re
import subprocess

import numpy as np
import pytest
import yaml

from ferbench.workflow.workspace import register_selected_model, remote_folder
from tests.support import changed_stages, dvc

pytestmark = pytest.mark.slow  # make test-fast leaves these out; make test runs them


def test_nothing_reruns_and_a_param_change_reruns_only_prepare(own_workspace):
    assert "Data and pipelines are up to date" in dvc(own_workspace, "status")
    params = (own_workspace / "params.yaml").read_text()
    assert "val_fraction: 0.125" in params
    (own_workspace / "params.yaml").write_text(params.replace("val_fraction: 0.125", "val_fraction: 0.2"))
    status = dvc(own_workspace, "status")
    assert "prepare:" in status and "download:" not in status
    assert "data.val_fraction" in dvc(own_workspace, "params", "diff")
    out = dvc(own_workspace, "repro", "prepare")
    assert "Stage 'download' didn't change, skipping" in out
    diff = json.loads(dvc(own_workspace, "metrics", "diff", "--json"))
    assert diff["metrics/data.json"]["images.val"]["new"] == 7 * 8


def test_head_only_change_keeps_embed_up_to_date(own_workspace):
    params = (own_workspace / "params.yaml").read_text()
    (own_workspace / "params.yaml").write_text(
        params.replace("lr: 0.001  # learning rate\n", "lr: 0.002  # learning rate\n", 1)
    )
    status = dvc(own_workspace, "status")
    assert "feature_extract@resnet18:" in status
    assert "embed@resnet18" not in status and "finetune@resnet18" not in status


def test_a_backbone_override_reruns_only_its_own_stage(own_workspace):
    params = yaml.safe_load((own_workspace / "params.yaml").read_text())
    params["backbones"]["resnet34"]["finetune"] = {"lr": 0.002}
    (own_workspace / "params.yaml").write_text(yaml.safe_dump(params))
    # not its feature_extract, embed or train, nor resnet18's stages; `report` reads the backbone list
    assert changed_stages(own_workspace) == {"finetune@resnet34", "report"}


def would_run(workspace) -> set[str]:
    """The stages a `dvc repro` would run: those changed and every stage downstream of them (`dvc dag`)."""
    edges = re.findall(r'"([^"]+)" -> "([^"]+)"', dvc(workspace, "dag", "--dot"))
    if any(after == "download" for _, after in edges):  # drawn from a stage to what it depends on: turn round
        edges = [(after, before) for before, after in edges]
    running, frontier = set(), changed_stages(workspace)
    while frontier:
        running |= frontier
        frontier = {after for before, after in edges if before in frontier} - running
    return running


def test_a_student_recipe_change_reruns_the_student_and_never_its_teachers(own_workspace):
    original = (own_workspace / "params.yaml").read_text()
    params = yaml.safe_load(original)
    params["distill"]["temperature"] = 2.0
    params["distill"]["students"]["resnet18"] = {"lr": 0.002}
    (own_workspace / "params.yaml").write_text(yaml.safe_dump(params))
    assert changed_stages(own_workspace) == {"distill@resnet18", "report"}  # the report names the students
    assert would_run(own_workspace) == {"distill@resnet18", "deploy@resnet18", "select", "report"}
    params = yaml.safe_load(original)
    params["train"]["candidates"]["resnet34"] = {"lr": 0.002}  # a teacher's own recipe
    (own_workspace / "params.yaml").write_text(yaml.safe_dump(params))
    assert changed_stages(own_workspace) == {"train@resnet34", "report"}
    rerun = would_run(own_workspace)
    assert {"train@resnet34", "teach@resnet34", "distill@resnet18"} <= rerun and "teach@resnet18" not in rerun


def test_changing_the_criterion_reruns_only_select_and_report(own_workspace):
    params = (own_workspace / "params.yaml").read_text()
    assert "criterion: generalization" in params
    (own_workspace / "params.yaml").write_text(params.replace("criterion: generalization", "criterion: accuracy"))
    assert changed_stages(own_workspace) == {"select"}  # report follows from select's new outputs
    assert "select.criterion" in dvc(own_workspace, "params", "diff")
    ran = re.findall(r"Running stage '([^']+)'", dvc(own_workspace, "repro"))
    assert ran == ["select", "report"]
    diff = json.loads(dvc(own_workspace, "metrics", "diff", "--json"))
    assert set(diff) <= {"metrics/selection.json", "metrics/summary.json"}, diff  # nothing upstream moved


def test_the_selected_model_is_a_registry_artifact_fetched_from_the_local_remote(own_workspace, tmp_path):
    from ferbench.models.folder import EmotionModel

    dvc(own_workspace, "push", "select")
    assert any(path.is_file() for path in remote_folder(own_workspace).rglob("*"))
    assert register_selected_model(own_workspace) and register_selected_model(own_workspace) is None  # once per commit
    clone = tmp_path / "clone"  # a fresh clone has no DVC cache: the model can only come from the remote
    subprocess.run(["git", "clone", "--quiet", str(own_workspace), str(clone)], check=True)
    fetched = tmp_path / "fetched"
    dvc(tmp_path, "artifacts", "get", str(clone), "emotion-classifier", "-o", str(fetched))
    model = EmotionModel(fetched, threads=1)
    selected = json.loads((own_workspace / "metrics/selection.json").read_text())["selected"]
    assert model.card.backbone == selected and model.probabilities(np.zeros((1, 48, 48), np.uint8)).shape == (1, 7)
