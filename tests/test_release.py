"""The released model: which folder the app and the CLI serve, the release command, and the committed
`models/released/` folder against its card (and, when this machine has the FER-2013 zip, its accuracy)."""

import json

import numpy as np
import pytest

from ferbench.constants import FER2013_CLASSES
from ferbench.errors import FerbenchError
from ferbench.models.card import CARD_FILE, CARD_SECTIONS, ModelCard
from ferbench.models.folder import EmotionModel, file_sha256, read_card
from ferbench.serving.inference import RELEASED_MODEL_DIR, choose_model_folder
from ferbench.shipping import release
from tests.support import REAL_ARCHIVE, card_provenance, project_params, untrained_model_folder

pytestmark = pytest.mark.slow  # make test-fast leaves these out; make test runs them

REAL_PROVENANCE = card_provenance("archive")


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
    assert card.files.model == "model.onnx" and card.files.checkpoint is None
    assert card.sha256 == {"model.onnx": file_sha256(released / "model.onnx")}
    assert "checkpoint" not in json.loads((released / CARD_FILE).read_text())["files"]
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
    provenance = card_provenance("synthetic")
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
    assert files == sorted([CARD_FILE, "MODEL_CARD.md", card.files.model])
    assert card.classes == list(FER2013_CLASSES)
    assert card.sha256 == {card.files.model: file_sha256(RELEASED_MODEL_DIR / card.files.model)}
    provenance = card.provenance
    assert provenance.data.source in ("kaggle", "archive")
    assert len(provenance.git_revision) >= 7 and not provenance.git_revision.endswith("dirty")
    assert provenance.training.training["epochs"] > 0  # the params that made the weights
    assert provenance.training.code_revision == provenance.git_revision  # trained = shipped
    low, high = card.metrics.test_accuracy_ci95
    assert low < card.metrics.test_accuracy < high
    assert card.markdown() == (RELEASED_MODEL_DIR / "MODEL_CARD.md").read_text()  # rendered from the card
    markdown = (RELEASED_MODEL_DIR / "MODEL_CARD.md").read_text()
    for section in CARD_SECTIONS:
        assert f"## {section}" in markdown, section
    assert "FER-2013" in card.summary()
    model = EmotionModel(RELEASED_MODEL_DIR, threads=1)
    probabilities = model.probabilities(np.zeros((2, 48, 48), np.uint8))
    assert probabilities.shape == (2, 7) and np.allclose(probabilities.sum(1), 1, atol=1e-5)


@pytest.mark.skipif(not REAL_ARCHIVE.is_file(), reason=f"{REAL_ARCHIVE} not present (real FER-2013 zip)")
def test_the_released_model_scores_its_cards_test_accuracy_on_real_fer2013():
    from ferbench.data.prepare import prepare_dataset

    card = json.loads((RELEASED_MODEL_DIR / CARD_FILE).read_text())
    test = prepare_dataset(REAL_ARCHIVE, project_params().data, 42).splits["test"]
    model = EmotionModel(RELEASED_MODEL_DIR, threads=2)
    predictions = np.concatenate(
        [model.probabilities(test.images[start : start + 512]).argmax(1) for start in range(0, len(test), 512)]
    )
    accuracy = float((predictions == test.labels).mean())
    assert len(test) == card["metrics"]["test_images"]
    assert abs(accuracy - card["metrics"]["test_accuracy"]) <= 0.005, (accuracy, card["metrics"]["test_accuracy"])


def test_a_card_written_before_int8_ranges_were_named_so_still_loads():
    """Cards from earlier versions call the int8 ranges `int8_calibration`; they load unchanged."""
    written = json.loads((RELEASED_MODEL_DIR / CARD_FILE).read_text())
    older = {("int8_calibration" if key == "int8_ranges" else key): value for key, value in written.items()}
    card = ModelCard.model_validate_json(json.dumps(older))  # as read_card reads a card
    assert card.int8_ranges == read_card(RELEASED_MODEL_DIR).int8_ranges and card.int8_ranges.images == 256
    assert '"int8_ranges"' in card.to_json() and "int8_calibration" not in card.to_json()
