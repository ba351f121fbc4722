"""The inference core and the predict CLI: faces found, batched, classified like the training data."""

import json
import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from ferbench.constants import FER2013_CLASSES
from ferbench.data.decode import image_to_fer
from ferbench.data.synthetic import render_face
from ferbench.errors import FerbenchError
from ferbench.models.folder import EmotionModel
from ferbench.serving import predict
from ferbench.serving.faces import HaarFaceDetector
from ferbench.serving.inference import EmotionRecognizer, draw_results
from tests.support import FixedFaces, card_provenance, detector_args, tta, untrained_model_folder

CLASSES = list(FER2013_CLASSES)


def astronaut() -> np.ndarray:
    """A real photo with one frontal face, shipped inside scikit-image (public domain, NASA)."""
    from skimage import data

    return data.astronaut()


@pytest.fixture(scope="module")
def model_folder(untrained_model):
    return untrained_model


@pytest.fixture(scope="module")
def model(model_folder):
    return EmotionModel(model_folder, threads=1)


def synthetic_frame(boxes):
    """A 640x480 frame with a drawn face (upscaled from 48x48) in each box."""
    rng = np.random.default_rng(0)
    frame = np.full((480, 640, 3), 90, dtype=np.uint8)
    for index, (x, y, w, h) in enumerate(boxes):
        face = render_face(CLASSES[index % 7], rng)
        frame[y : y + h, x : x + w] = np.asarray(Image.fromarray(face).resize((w, h)))[:, :, None]
    return frame


def test_every_face_of_a_frame_gets_a_box_a_label_and_probabilities(model):
    boxes = [(40, 60, 150, 150), (300, 200, 120, 120), (480, 40, 100, 100)]
    frame = synthetic_frame(boxes)
    calls = []
    original = model.probabilities

    def counting(crops):
        calls.append(len(crops))
        return original(crops)

    model.probabilities = counting
    try:
        faces = EmotionRecognizer(model, FixedFaces(boxes)).analyze(frame)
    finally:
        model.probabilities = original
    assert calls == [3]  # all faces in one model call
    assert [face.box for face in faces] == boxes
    for face in faces:
        assert set(face.probabilities) == set(CLASSES)
        assert sum(face.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
        assert face.label == max(face.probabilities, key=face.probabilities.get)
        x, y, w, h = face.box
        expected = image_to_fer(Image.fromarray(frame[y : y + h, x : x + w])).pixels  # as prepare makes samples
        np.testing.assert_array_equal(face.crop, expected)
        assert CLASSES[int(model.probabilities(expected[None]).argmax())] == face.label


def test_the_card_runtime_matches_the_pytorch_checkpoint(model_folder, model):
    torch_card = json.loads((model_folder / "model_card.json").read_text())
    torch_folder = model_folder.parent / "torch_runtime"
    torch_folder.mkdir(exist_ok=True)
    (torch_folder / "model.pt").write_bytes((model_folder / "model.pt").read_bytes())
    torch_card.update(runtime="torch", variant="torch_fp32", files={"checkpoint": "model.pt", "model": "model.pt"})
    (torch_folder / "model_card.json").write_text(json.dumps(torch_card))
    crops = np.random.default_rng(1).integers(0, 256, (4, 48, 48), dtype=np.uint8)
    np.testing.assert_allclose(EmotionModel(torch_folder).probabilities(crops), model.probabilities(crops), atol=1e-4)


def test_a_real_photo_has_one_face_found_by_the_haar_fallback(model):
    photo = astronaut()
    recognizer = EmotionRecognizer(model, HaarFaceDetector.for_photos())
    faces = recognizer.analyze(photo)
    assert len(faces) == 1
    x, y, w, h = faces[0].box
    assert 150 < x + w / 2 < 290 and 60 < y + h / 2 < 200  # around her face, not elsewhere
    assert sum(faces[0].probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert CLASSES[int(model.probabilities(faces[0].crop[None]).argmax())] == faces[0].label
    drawn = draw_results(photo, faces, fps=31.0)
    assert drawn.shape == photo.shape and not np.array_equal(drawn, photo)


def test_video_smoothing_blends_probabilities_of_the_same_face(model):
    boxes = [(200, 150, 160, 160)]
    first, second = synthetic_frame(boxes), synthetic_frame(boxes)[:, ::-1].copy()
    mirrored_boxes = [(640 - 200 - 160, 150, 160, 160)]
    raw = EmotionRecognizer(model, FixedFaces(boxes), smoothing=0.0)
    p1 = np.array(list(raw.analyze(first)[0].probabilities.values()))
    p2_raw = np.array(
        list(
            EmotionRecognizer(model, FixedFaces(mirrored_boxes), smoothing=0.0)
            .analyze(second)[0]
            .probabilities.values()
        )
    )
    smooth = EmotionRecognizer(model, FixedFaces(boxes, mirrored_boxes), smoothing=0.75)
    smooth.process_frame(first)
    p2 = np.array(list(smooth.process_frame(second)[0].probabilities.values()))
    overlap = (160 - abs(200 - 280)) * 160 / (2 * 160 * 160 - (160 - abs(200 - 280)) * 160)
    assert overlap > 0.3  # the two boxes count as the same face
    np.testing.assert_allclose(p2, 0.75 * p1 + 0.25 * p2_raw, atol=1e-5)


def test_detection_runs_every_nth_video_frame(model):
    detector = FixedFaces([(10, 10, 50, 50)])
    recognizer = EmotionRecognizer(model, detector, detect_every=3)
    for _ in range(7):
        assert len(recognizer.process_frame(synthetic_frame([]))) == 1
    assert detector.calls == 3  # frames 0, 3 and 6


def test_bad_settings_and_missing_model_are_clear_errors(model, tmp_path):
    with pytest.raises(FerbenchError, match="smoothing"):
        EmotionRecognizer(model, FixedFaces([]), smoothing=1.0)
    with pytest.raises(FerbenchError, match="margin"):
        EmotionRecognizer(model, FixedFaces([]), margin=-0.5)
    with pytest.raises(FerbenchError, match="no model card.*dvc repro"):
        EmotionModel(tmp_path)


def test_predict_cli_on_a_folder(model_folder, tmp_path, capsys):
    folder = tmp_path / "photos"
    (folder / "nested").mkdir(parents=True)
    Image.fromarray(astronaut()).save(folder / "astronaut.jpg")
    (folder / "notes.jpg").write_bytes(b"this is not an image")
    Image.fromarray(np.full((200, 300, 3), 200, np.uint8)).save(folder / "nested" / "wall.png")
    status = predict.main(
        [str(folder), "--model", str(model_folder), "--csv", str(tmp_path / "out.csv"), *detector_args()]
    )
    captured = capsys.readouterr()
    records = {json.loads(line)["file"].split("/")[-1]: json.loads(line) for line in captured.out.splitlines()}
    assert status == 1  # one file could not be read; the others were still processed
    assert set(records) == {"astronaut.jpg", "notes.jpg", "wall.png"}
    assert records["notes.jpg"]["error"] == "not an image" and "cannot read" in captured.err
    assert records["wall.png"]["faces"] == [] and records["wall.png"]["note"] == "no face found"
    (face,) = records["astronaut.jpg"]["faces"]
    assert len(face["box"]) == 4 and face["label"] in CLASSES
    assert sum(face["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    table = pd.read_csv(tmp_path / "out.csv")
    assert len(table) == 3 and list(table.columns[:7]) == ["file", "face", "x", "y", "width", "height", "label"]
    assert table["p_happy"].notna().sum() == 1


def test_predict_cli_whole_image_mode_and_errors(model_folder, tmp_path, capsys):
    Image.fromarray(render_face("happy", np.random.default_rng(0))).save(tmp_path / "crop.png")
    assert predict.main([str(tmp_path / "crop.png"), "--model", str(model_folder), "--whole-image"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["faces"][0]["box"] == [0, 0, 48, 48]
    assert predict.main([str(tmp_path / "crop.png"), "--model", str(tmp_path / "nowhere")]) == 2
    assert "no model card" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["onnx_fp32", "torch_fp32", "openvino_fp32"])
def test_the_card_temperature_and_tta_are_applied(variant, tmp_path):
    import torch

    from ferbench.models.classifier import load_classifier, with_tta

    views = tta(flip=True, shifts=4)
    folder = untrained_model_folder(tmp_path / variant, variant, tta=views, temperature=2.5)
    deployed = EmotionModel(folder, threads=1)
    assert deployed.card.tta.views == 6 and deployed.card.temperature == 2.5
    crops = np.stack([render_face(name, np.random.default_rng(1)) for name in CLASSES])
    reference = with_tta(load_classifier(deployed.card.spec, folder / "model.pt", 7), views)
    with torch.no_grad():
        expected = torch.softmax(reference(torch.from_numpy(crops)) / 2.5, dim=1).numpy()
    np.testing.assert_allclose(deployed.probabilities(crops), expected, rtol=1e-4, atol=1e-5)


STATIC_INT8 = {
    "onnx_int8_static": ("onnxruntime", ["model.int8-static.onnx"], "percentile"),
    "openvino_int8": ("openvino", ["model.openvino-int8.xml", "model.openvino-int8.bin"], "nncf"),
}


@pytest.mark.slow
@pytest.mark.parametrize("variant", list(STATIC_INT8))
def test_a_static_int8_model_folder_loads_in_the_inference_core_and_the_cli(variant, tmp_path, capsys):
    from ferbench.models.runtimes import RangeSample

    calibration = RangeSample(
        np.stack([render_face(name, np.random.default_rng(seed)) for seed in range(4) for name in CLASSES]),
        "percentile",
    )
    runtime, files, method = STATIC_INT8[variant]
    folder = untrained_model_folder(tmp_path / variant, variant, int8_ranges=calibration)
    deployed = EmotionModel(folder, threads=1)
    assert [deployed.card.files.model, deployed.card.files.weights] == [*files, None][:2]
    assert deployed.card.runtime == runtime and set(files) <= set(deployed.card.sha256)
    assert deployed.card.int8_ranges.model_dump() == {"split": "train", "images": 28, "method": method}
    assert "Static int8: activation ranges calibrated on 28 train images" in (folder / "MODEL_CARD.md").read_text()
    crops = np.stack([render_face(name, np.random.default_rng(9)) for name in CLASSES])
    probabilities = deployed.probabilities(crops)
    assert probabilities.shape == (7, 7) and np.allclose(probabilities.sum(1), 1, atol=1e-5)
    Image.fromarray(crops[0]).save(tmp_path / "crop.png")
    assert predict.main([str(tmp_path / "crop.png"), "--model", str(folder), "--whole-image"]) == 0
    assert "crop.png" in capsys.readouterr().out


@pytest.mark.slow
def test_an_openvino_folder_without_openvino_or_its_weights_is_one_line(tmp_path, monkeypatch, capsys):
    import importlib
    import shutil

    folder = untrained_model_folder(tmp_path / "ov", "openvino_fp32")
    real_import = importlib.import_module

    def without_openvino(name, *args):
        if name == "openvino":
            raise ImportError("No module named 'openvino'")
        return real_import(name, *args)

    with monkeypatch.context() as patched:
        patched.setattr(importlib, "import_module", without_openvino)
        with pytest.raises(FerbenchError, match=r"openvino is not installed; .* pip install openvino=="):
            EmotionModel(folder, threads=1)
    damaged = tmp_path / "damaged"
    shutil.copytree(folder, damaged)
    (damaged / "model.openvino.bin").unlink()
    Image.fromarray(render_face("happy", np.random.default_rng(0))).save(tmp_path / "face.png")
    assert predict.main([str(tmp_path / "face.png"), "--model", str(damaged), "--whole-image"]) == 2
    err = capsys.readouterr().err
    assert "model.openvino.bin: the weights file the card names is missing" in err and len(err.splitlines()) == 1


def _damage(folder, kind):
    """Apply one kind of damage to a copy of a good model folder."""
    card_path = folder / "model_card.json"
    card = json.loads(card_path.read_text())
    if kind == "escaping path":
        (folder.parent / "outside.onnx").write_bytes((folder / "model.onnx").read_bytes())
        card["files"]["model"] = "../outside.onnx"
    elif kind == "absolute path":
        card["files"]["model"] = str((folder / "model.onnx").resolve())
    elif kind == "bad json":
        card_path.write_text("{not json")
        return
    elif kind == "deeply nested card":
        card_path.write_text("[" * 200_000 + "]" * 200_000)
        return
    elif kind == "huge card":
        card_path.write_text(json.dumps({**card, "padding": "x" * (2 << 20)}))
        return
    elif kind.startswith("truncated model"):
        data = (folder / "model.onnx").read_bytes()
        (folder / "model.onnx").write_bytes(data[: len(data) // 2])
    elif kind.startswith("foreign model"):
        (folder / "model.onnx").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8)
    elif kind == "mismatched classes":
        card["classes"] = card["classes"][:6]
    elif kind == "unknown runtime":
        card["runtime"] = "tensorflow"
    elif kind == "missing model file":
        (folder / "model.onnx").unlink()
    elif kind == "bad checksum field":
        card["sha256"] = {"model.onnx": 42}
    elif kind == "classes not a list":
        card["classes"] = "angry"
    if kind.endswith("without checksums"):
        del card["sha256"]
    card_path.write_text(json.dumps(card))


DAMAGE = {
    "escaping path": "no absolute path, no '..'",
    "absolute path": "no absolute path, no '..'",
    "bad json": "not a readable model card",
    "deeply nested card": "not a readable model card (nested too deeply)",
    "huge card": "not a model card (a regular file of at most 1,048,576 bytes)",
    "truncated model": "its SHA-256 differs from the card's",
    "foreign model": "its SHA-256 differs from the card's",
    "truncated model, card without checksums": "cannot load the model",
    "foreign model, card without checksums": "cannot load the model",
    "bad checksum field": "the card's 'sha256.model.onnx' is 42; input should be a valid string",
    "mismatched classes": "outputs 7 scores but the card lists 6",
    "unknown runtime": "the card's 'runtime' is 'tensorflow'; use one of: torch, onnxruntime",
    "missing model file": "the model file the card names",
    "classes not a list": "the card's 'classes' is 'angry'; input should be a valid array",
}


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_a_damaged_model_folder_is_one_clear_error_and_exit_2(kind, model_folder, tmp_path, capsys):
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(model_folder, folder)
    _damage(folder, kind)
    with pytest.raises(FerbenchError, match=DAMAGE[kind].replace("(", r"\(").replace(")", r"\)")):
        EmotionModel(folder, threads=1)
    Image.fromarray(render_face("happy", np.random.default_rng(0))).save(tmp_path / "face.png")
    assert predict.main([str(tmp_path / "face.png"), "--model", str(folder), "--whole-image"]) == 2
    err = capsys.readouterr().err
    assert DAMAGE[kind] in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def torch_folder(tmp_path_factory):
    return untrained_model_folder(tmp_path_factory.mktemp("torch") / "model", variant="torch_fp32")


TORCH_CARD_DAMAGE = {
    # spec field -> value, and what loading says (None: it loads, from the folder's checkpoint alone)
    "weights outside the folder": ({"pretrained": True, "weights": "/nonexistent/weights.pt"}, None),
    "a hub model name": ({"source": "transformers", "model": "some-org/some-model"}, "cannot load the model"),
    "a huge input size": ({"input_size": 3000}, "'spec.input_size' is 3000; input should be less than or equal"),
    "bad tta": (None, "the card's 'tta.flip' is 'yes'; input should be a valid boolean"),
}


@pytest.mark.parametrize("kind", list(TORCH_CARD_DAMAGE))
def test_a_torch_card_never_reaches_outside_its_folder(kind, torch_folder, tmp_path, monkeypatch):
    import shutil

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a network call would fail loudly instead of waiting
    folder = tmp_path / "model"
    shutil.copytree(torch_folder, folder)
    card = json.loads((folder / "model_card.json").read_text())
    spec_change, message = TORCH_CARD_DAMAGE[kind]
    if spec_change is None:
        card["tta"]["flip"] = "yes"
    else:
        card["spec"].update(spec_change)
    (folder / "model_card.json").write_text(json.dumps(card))
    if message is None:
        assert EmotionModel(folder, threads=1).probabilities(np.zeros((1, 48, 48), np.uint8)).shape == (1, 7)
    else:
        with pytest.raises(FerbenchError, match=re.escape(message)):
            EmotionModel(folder, threads=1)


def test_a_students_card_names_its_teachers_and_the_recipe_that_made_it(tmp_path):
    teacher = {"name": "large", "stage": "finetune", "backbone": "resnet18", "views": 2}
    distillation = {
        "teachers": [{**teacher, "val_accuracy": 0.71, "test_accuracy": 0.7}],
        "ensemble": {"val": 0.71, "test": 0.7},
        "temperature": 4.0,
        "kd_weight": 0.5,
        "targets": "cached",
        "warm_start": "train@small",
    }
    provenance = card_provenance()
    provenance["training"] |= {"trainable": 2, "distillation": distillation, "training": {"epochs": 35}}
    folder = untrained_model_folder(tmp_path / "student", "torch_fp32", provenance=provenance)  # no export: the card
    card = EmotionModel(folder, threads=1).card
    assert card.provenance.training.distillation.teachers[0].name == "large"
    assert card.provenance.shipping.min_agreement == 0.99
    written = json.loads((folder / "model_card.json").read_text())["provenance"]
    assert written["shipping"] == provenance["shipping"]  # under params.yaml's names, as deploy wrote them
    markdown = (folder / "MODEL_CARD.md").read_text()
    assert "- Started from the weights of `train@small` (warm start)" in markdown
    assert "- Teachers, their probabilities averaged: `large` (finetune, 2 view(s); val 71.0%, test 70.0%)" in markdown
    assert "- Trainable: 2; seed 42" in markdown and "- Trained with ferbench `abc1234`" in markdown
