"""The Streamlit app through Streamlit's own testing API: model card, upload flow, bad uploads."""

import io

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from ferbench.constants import FER2013_CLASSES
from ferbench.serving.video import VIDEO_DEFAULTS, analyse_video
from tests.support import (
    PROJECT_ROOT,
    cache_yunet,
    card_latency,
    card_metrics,
    card_provenance,
    untrained_model_folder,
)

pytestmark = pytest.mark.slow  # make test-fast leaves these out; make test runs them

APP = str(PROJECT_ROOT / "streamlit_app.py")


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("selected")
    criterion = {"name": "generalization", "gap_tolerance": 0.05, "gap_penalty": 1.0, "max_gap": None}
    selection = {"criterion": {**criterion, "latency_budget_ms": None}, "reason": "resnet18 ranks first"}
    return untrained_model_folder(
        folder,
        "onnx_int8",
        metrics=card_metrics(),
        latency=card_latency(),
        temperature=1.25,
        agreement_with_fp32_on_val={"onnx_int8": 0.995},
        selection=selection,
    )


@pytest.fixture
def app(model_folder, monkeypatch, tmp_path):
    """The app on the upload page, with YuNet from the local file when there is one, else Haar."""
    monkeypatch.setenv("FERBENCH_MODEL", str(model_folder))
    monkeypatch.setenv("FERBENCH_CACHE", str(tmp_path / "cache"))
    has_yunet = cache_yunet(tmp_path / "cache")
    test = AppTest.from_file(APP, default_timeout=60)
    test.run()
    assert not test.exception
    if not has_yunet:
        test.sidebar.selectbox[0].set_value("haar").run()
    test.radio[0].set_value("Upload a photo").run()
    return test


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def upload(app, name, content, mime="image/png"):
    app.file_uploader[0].set_value((name, content, mime)).run()
    assert not app.exception
    return app


def test_sidebar_shows_the_model_card(app):
    values = [metric.value for metric in app.sidebar.metric]
    assert "62.4%" in values and "12.5 ms" in values
    assert any("onnx_int8" in markdown.value for markdown in app.sidebar.markdown)
    assert any("generalization" in markdown.value for markdown in app.sidebar.markdown)
    captions = " ".join(caption.value for caption in app.sidebar.caption)
    assert "61.3% on the test images that do not also occur in the training folder" in captions
    assert "No test-time augmentation" in captions and "temperature 1.25" in captions


def test_an_uploaded_photo_shows_its_faces_and_probabilities(app):
    from skimage import data

    upload(app, "astronaut.png", png(data.astronaut()))
    assert not app.error and not app.warning
    assert len(app.dataframe) == 1
    table = app.dataframe[0].value
    assert len(table) == 1 and table.iloc[0]["emotion"] in FER2013_CLASSES
    assert table[list(FER2013_CLASSES)].iloc[0].sum() == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("notes.png", b"not an image at all", "Cannot read notes.png: not an image"),
        ("cut.png", png(np.zeros((300, 300, 3), np.uint8))[:200], "Cannot read cut.png: corrupt image"),
        ("huge.png", b"0" * (11 * 1024 * 1024), "the limit is 10 MB"),
        ("strip.png", png(np.full((2, 4000, 3), 90, np.uint8)), "Cannot read strip.png: not a photo of faces"),
    ],
)
def test_bad_uploads_get_a_message_and_the_app_keeps_running(app, name, content, message):
    upload(app, name, content)
    assert any(message in error.value for error in app.error), [error.value for error in app.error]
    upload(app, "blank.png", png(np.full((240, 320, 3), 180, np.uint8)))  # still working afterwards
    assert any("No face found" in warning.value for warning in app.warning)


def test_the_detector_is_a_setting_and_a_missing_yunet_file_is_explained(model_folder, monkeypatch, tmp_path):
    monkeypatch.setenv("FERBENCH_MODEL", str(model_folder))
    monkeypatch.setenv("FERBENCH_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr("ferbench.serving.faces.YUNET_URL", "http://127.0.0.1:9/face_detection_yunet_2023mar.onnx")
    test = AppTest.from_file(APP, default_timeout=60)
    test.run()
    assert not test.exception
    assert test.sidebar.selectbox[0].value == "yunet"  # the default; offline without the file: an explanation
    assert "--detector-model" in test.error[0].value and "haar" in test.info[0].value
    test.sidebar.selectbox[0].set_value("haar").run()
    test.radio[0].set_value("Upload a photo").run()
    assert not test.error and any("Faces: haar" in caption.value for caption in test.caption)
    if cache_yunet(tmp_path / "cache"):
        monkeypatch.setenv("FERBENCH_CACHE", str(tmp_path / "cache"))
        test.sidebar.selectbox[0].set_value("yunet").run()
        assert any("Faces: yunet, aligned" in caption.value for caption in test.caption)
        test.sidebar.checkbox[0].uncheck().run()
        assert any(caption.value == "Faces: yunet" for caption in test.caption)


def test_a_model_trained_on_synthetic_faces_carries_a_banner(monkeypatch, tmp_path, capsys):
    from ferbench.serving import predict

    provenance = card_provenance("synthetic")
    folder = untrained_model_folder(tmp_path / "synthetic", provenance=provenance, limitations=["drawn faces"])
    monkeypatch.setenv("FERBENCH_MODEL", str(folder))
    monkeypatch.setenv("FERBENCH_CACHE", str(tmp_path / "cache"))
    test = AppTest.from_file(APP, default_timeout=60)
    test.run()
    assert not test.exception
    assert any("synthetic drawn faces" in warning.value for warning in test.warning)
    assert any("($FERBENCH_MODEL)" in caption.value for caption in test.caption)
    assert "synthetic drawn faces generated by" in (folder / "MODEL_CARD.md").read_text()
    Image.fromarray(np.full((48, 48), 128, np.uint8)).save(tmp_path / "face.png")
    assert predict.main([str(tmp_path / "face.png"), "--model", str(folder), "--whole-image"]) == 0
    assert "(--model): " in (err := capsys.readouterr().err) and "synthetic drawn faces" in err
    assert "not for real photos" in err


def test_a_missing_model_is_explained(monkeypatch, tmp_path):
    monkeypatch.setenv("FERBENCH_MODEL", str(tmp_path))
    test = AppTest.from_file(APP, default_timeout=60)
    test.run()
    assert not test.exception
    assert "no model card" in test.error[0].value and "MODEL=DIR" in test.info[0].value


def astronaut_video(path, frames: int = 24) -> bytes:
    """A short clip of a real face (scikit-image's astronaut photo) drifting to the right, large enough for
    both detectors' video settings (Haar's wants a face of at least 15% of the frame height)."""
    import cv2
    from skimage import data

    photo = cv2.resize(data.astronaut(), (420, 420))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 12.0, (640, 480))
    for frame in range(frames):
        canvas = np.full((480, 640, 3), 120, np.uint8)
        canvas[30:450, 20 + 8 * frame : 440 + 8 * frame] = photo
        writer.write(cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
    writer.release()
    return path.read_bytes()


def test_an_uploaded_video_shows_a_timeline_per_track_and_the_table_to_download(app, tmp_path):
    app.radio[0].set_value("Upload a video").run()
    upload(app, "talk.mp4", astronaut_video(tmp_path / "talk.mp4"), "video/mp4")
    assert not app.error, [error.value for error in app.error]
    summary = app.dataframe[0].value
    assert len(summary) == 1 and summary.iloc[0]["frames_analysed"] == 24  # one face, followed throughout
    assert summary.iloc[0]["dominant"] in FER2013_CLASSES
    assert len(app.get("vega_lite_chart")) == 1 and len(app.get("download_button")) == 1  # a chart per track


def test_a_bad_video_upload_is_a_message(app):
    app.radio[0].set_value("Upload a video").run()
    upload(app, "notes.mp4", b"not a video" * 100, "video/mp4")
    assert any("Cannot analyse notes.mp4: not a video OpenCV can read" in error.value for error in app.error)


def test_an_uploaded_video_is_analysed_with_the_sidebar_settings(app, tmp_path, monkeypatch):
    from ferbench.serving import app as app_module

    used = []

    def recording(path, recognizer, out, options, progress=None):
        used.append(options)
        return analyse_video(path, recognizer, out, options, progress)

    monkeypatch.setattr(app_module, "analyse_video", recording)
    smoothing, _margin, detect_every = app.sidebar.slider
    assert (smoothing.value, detect_every.value) == (VIDEO_DEFAULTS.smoothing, VIDEO_DEFAULTS.detect_every)
    smoothing.set_value(0.2)
    detect_every.set_value(4)
    app.radio[0].set_value("Upload a video").run()
    upload(app, "talk.mp4", astronaut_video(tmp_path / "talk.mp4", frames=12), "video/mp4")
    assert not app.error, [error.value for error in app.error]
    assert [(options.smoothing, options.detect_every) for options in used] == [(0.2, 4)]
