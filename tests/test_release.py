"""The released model: which folder the app and the CLI serve, the release command, and the committed
`models/released/` folder against its card (and, when this machine has the FER-2013 zip, its accuracy)."""

import json

import numpy as np
import pytest

from ferbench import release
from ferbench.constants import FER2013_CLASSES
from ferbench.errors import FerbenchError
from ferbench.inference import RELEASED_MODEL_DIR, EmotionModel, choose_model_folder
from ferbench.model_folder import CARD_FILE, CARD_SECTIONS, file_sha256, model_summary, read_card
from tests.conftest import REAL_ARCHIVE, untrained_model_folder

REAL_PROVENANCE = {
    "data": {"source": "archive", "archive_sha256": "ab" * 32},
    "git_revision": "0123abc",
    "training": {"seed": 42, "trainable": "all"},
}


def test_the_served_folder_is_model_then_env_then_selected_then_released(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FERBENCH_MODEL", raising=False)
    assert choose_model_folder().folder == RELEASED_MODEL_DIR  # an absolute path outside the project
    assert choose_model_folder().origin == "the released model"
    (tmp_path / "models" / "selected").mkdir(parents=True)
    assert choose_model_folder().folder == RELEASED_MODEL_DIR  # an empty models/selected is not a model
    (tmp_path / "models" / "selected" / CARD_FILE).write_text("{}")
    assert choose_model_folder().origin.startswith("your pipeline's selected model")
    monkeypatch.setenv("FERBENCH_MODEL", str(tmp_path / "env"))
    assert choose_model_folder().folder == tmp_path / "env"
    assert choose_model_folder(tmp_path / "cli") == choose_model_folder(tmp_path / "cli")
    assert choose_model_folder(tmp_path / "cli").origin == "--model"


def test_release_copies_the_serving_files_with_checksums_and_loads(tmp_path, capsys):
    source = untrained_model_folder(tmp_path / "selected", provenance=REAL_PROVENANCE, limitations=["x"])
    assert (source / "model.pt").is_file()
    assert release.main([str(source), str(tmp_path / "released")]) == 0
    released = tmp_path / "released"
    card = read_card(released)
    assert sorted(path.name for path in released.iterdir()) == sorted([CARD_FILE, "MODEL_CARD.md", "model.onnx"])
    assert card["files"] == {"model": "model.onnx"}
    assert card["sha256"] == {"model.onnx": file_sha256(released / "model.onnx")}
    assert EmotionModel(released, threads=1).classes == list(FER2013_CLASSES)
    assert "resnet18" in capsys.readouterr().out
    # released again over its own earlier release: replaced; over anything else: refused
    assert release.main([str(source), str(released)]) == 0
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    assert release.main([str(source), str(tmp_path / "other")]) == 2
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"
    assert "is not a model folder" in capsys.readouterr().err


def test_release_refuses_a_synthetic_model(tmp_path):
    provenance = {**REAL_PROVENANCE, "data": {"source": "synthetic"}}
    source = untrained_model_folder(tmp_path / "demo", provenance=provenance, limitations=["x"])
    with pytest.raises(FerbenchError, match="synthetic faces"):
        release.release_model(source, tmp_path / "released")


def test_from_the_project_the_released_folder_is_named_relative(monkeypatch):
    monkeypatch.delenv("FERBENCH_MODEL", raising=False)
    monkeypatch.chdir(RELEASED_MODEL_DIR.parent.parent)
    if (RELEASED_MODEL_DIR.parent / "selected" / CARD_FILE).is_file():
        pytest.skip("this checkout has its own models/selected")
    assert str(choose_model_folder().folder) == "models/released"


def test_the_released_folder_matches_its_card():
    card = read_card(RELEASED_MODEL_DIR)
    files = sorted(path.name for path in RELEASED_MODEL_DIR.iterdir())
    assert files == sorted([CARD_FILE, "MODEL_CARD.md", card["files"]["model"]])
    assert card["classes"] == list(FER2013_CLASSES)
    assert card["sha256"] == {card["files"]["model"]: file_sha256(RELEASED_MODEL_DIR / card["files"]["model"])}
    assert card["provenance"]["data"]["source"] in ("kaggle", "archive")
    assert len(card["provenance"]["git_revision"]) >= 7 and not card["provenance"]["git_revision"].endswith("dirty")
    assert card["provenance"]["training"]["training"]["epochs"] > 0  # the params that made the weights
    assert card["provenance"]["training"]["code_revision"] == card["provenance"]["git_revision"]  # trained = shipped
    low, high = card["metrics"]["test_accuracy_ci95"]
    assert low < card["metrics"]["test_accuracy"] < high
    markdown = (RELEASED_MODEL_DIR / "MODEL_CARD.md").read_text()
    for section in CARD_SECTIONS:
        assert f"## {section}" in markdown, section
    assert "FER-2013" in model_summary(card)
    model = EmotionModel(RELEASED_MODEL_DIR, threads=1)
    probabilities = model.probabilities(np.zeros((2, 48, 48), np.uint8))
    assert probabilities.shape == (2, 7) and np.allclose(probabilities.sum(1), 1, atol=1e-5)


@pytest.mark.skipif(not REAL_ARCHIVE.is_file(), reason=f"{REAL_ARCHIVE} not present (real FER-2013 zip)")
def test_the_released_model_scores_its_cards_test_accuracy_on_real_fer2013():
    from ferbench.data.prepare import QualityPolicy, prepare_dataset

    card = json.loads((RELEASED_MODEL_DIR / CARD_FILE).read_text())
    test = prepare_dataset(REAL_ARCHIVE, FER2013_CLASSES, 0.125, 42, QualityPolicy(), 1024).splits["test"]
    model = EmotionModel(RELEASED_MODEL_DIR, threads=2)
    predictions = np.concatenate(
        [model.probabilities(test.images[start : start + 512]).argmax(1) for start in range(0, len(test), 512)]
    )
    accuracy = float((predictions == test.labels).mean())
    assert len(test) == card["metrics"]["test_images"]
    assert abs(accuracy - card["metrics"]["test_accuracy"]) <= 0.005, (accuracy, card["metrics"]["test_accuracy"])
