"""Face detection for the app and the CLI: YuNet with eye alignment, Haar on request, the model file."""

import hashlib
import io
import json
import zipfile

import numpy as np
import pytest
from face_scenes import build_scenes, face_free_scenes, match_faces
from PIL import Image

from ferbench.errors import FerbenchError
from ferbench.serving import predict
from ferbench.serving.faces import (
    HaarFaceDetector,
    Window,
    YuNetFaceDetector,
    build_detector,
    crop_window,
    yunet_model_file,
)
from tests.support import REAL_ARCHIVE, YUNET_FILE, needs_yunet


def astronaut() -> np.ndarray:
    """A real photo with one frontal face, shipped inside scikit-image (public domain, NASA)."""
    from skimage import data

    return data.astronaut()


def turned(rgb: np.ndarray, angle: float, centre: tuple[float, float]) -> np.ndarray:
    import cv2

    rotation = cv2.getRotationMatrix2D(centre, angle, 1.0)
    return cv2.warpAffine(rgb, rotation, (rgb.shape[1], rgb.shape[0]), borderMode=cv2.BORDER_REPLICATE)


@pytest.fixture(scope="module")
def yunet():
    if not YUNET_FILE.is_file():
        pytest.skip(f"{YUNET_FILE} not present (YuNet face detector)")
    return YuNetFaceDetector.for_photos(YUNET_FILE)


@pytest.fixture(scope="module")
def level_astronaut(yunet):
    """The astronaut turned so that her eye line (as the detector measures it) is level."""
    photo = astronaut()
    (face,) = yunet(photo)
    window = yunet.window(face, align=True)
    return turned(photo, window.angle, (window.centre_x, window.centre_y))


@needs_yunet
def test_yunet_finds_the_one_face_in_the_astronaut_photo(yunet):
    (face,) = yunet(astronaut())
    x, y, w, h = face.box
    assert 180 < x + w / 2 < 260 and 80 < y + h / 2 < 160  # her face (about x 225, y 120), nothing else
    right_eye, left_eye = face.landmarks[0], face.landmarks[1]
    assert right_eye[0] < left_eye[0] and abs(right_eye[1] - left_eye[1]) < 10 and face.score > 0.8


@needs_yunet
@pytest.mark.parametrize("angle", [-25, 20])
def test_alignment_turns_a_tilted_face_upright(yunet, level_astronaut, angle):
    centre = (223.0, 120.0)
    tilted = turned(level_astronaut, angle, centre)
    (face,) = yunet(tilted)
    window = yunet.window(face, align=True)
    assert window.angle == pytest.approx(-angle, abs=3)  # eye line level again within 3 degrees
    upright = yunet.window(yunet(level_astronaut)[0], align=True)
    reference = crop_window(level_astronaut, upright).astype(float)
    aligned = crop_window(tilted, window).astype(float)
    unaligned = crop_window(tilted, yunet.window(face, align=False)).astype(float)
    assert np.corrcoef(aligned.ravel(), reference.ravel())[0, 1] > 0.85  # framing within a few percent
    assert np.abs(aligned - reference).mean() < np.abs(unaligned - reference).mean()


@needs_yunet
def test_aligning_an_upright_face_changes_its_crop_very_little(yunet, level_astronaut):
    (face,) = yunet(level_astronaut)
    aligned = crop_window(level_astronaut, yunet.window(face, align=True)).astype(float)
    unaligned = crop_window(level_astronaut, yunet.window(face, align=False)).astype(float)
    assert abs(yunet.window(face, align=True).angle) < 1.5
    assert np.abs(aligned - unaligned).mean() < 4  # grey levels out of 255


def test_a_window_crop_goes_through_the_datasets_conversion():
    from ferbench.data.decode import image_to_fer

    frame = np.random.default_rng(0).integers(0, 256, (200, 300, 3), dtype=np.uint8)
    crop = crop_window(frame, Window(150, 100, 96))
    np.testing.assert_array_equal(crop, image_to_fer(Image.fromarray(frame[52:148, 102:198])).pixels)
    edge = crop_window(frame, Window(10, 10, 60))  # outside the frame: border pixels repeated, still square
    assert edge.shape == (48, 48)


def real_test_faces(count: int) -> tuple[np.ndarray, np.ndarray]:
    from ferbench.constants import FER2013_CLASSES

    with zipfile.ZipFile(REAL_ARCHIVE) as archive:
        names = sorted(n for n in archive.namelist() if n.startswith("test/") and n.endswith(".jpg"))[::37][:count]
        images = np.stack([np.asarray(Image.open(io.BytesIO(archive.read(n))).convert("L")) for n in names])
    labels = np.array([FER2013_CLASSES.index(name.split("/")[1]) for name in names])
    return images, labels


@pytest.mark.slow
@needs_yunet
@pytest.mark.skipif(not REAL_ARCHIVE.is_file(), reason=f"{REAL_ARCHIVE} not present (real FER-2013 zip)")
def test_yunet_finds_real_faces_in_benchmark_frames_upright_and_turned(yunet):
    images, labels = real_test_faces(120)
    for rotated, target in ((False, 0.95), (True, 0.85)):
        scenes = build_scenes(images, labels, 30, rotated=rotated, seed=5)
        faces = sum(len(scene.faces) for scene in scenes)
        found = sum(len(match_faces(scene.faces, yunet(scene.rgb))[0]) for scene in scenes)
        assert found / faces >= target, f"rotated={rotated}: found {found} of {faces} faces"
    false_positives = sum(match_faces((), yunet(scene.rgb))[1] for scene in face_free_scenes(images, 10, seed=6))
    assert false_positives <= 3


def test_the_model_file_is_fetched_once_checked_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("FERBENCH_CACHE", str(tmp_path / "cache"))
    release = tmp_path / "release.onnx"
    release.write_bytes(b"stand-in for the model zoo's file")
    digest = hashlib.sha256(release.read_bytes()).hexdigest()
    path = yunet_model_file(url=release.as_uri(), sha256=digest)
    assert path == tmp_path / "cache" / "face_detection_yunet_2023mar.onnx"
    assert path.read_bytes() == release.read_bytes()
    release.unlink()
    assert yunet_model_file(url=release.as_uri(), sha256=digest) == path  # the cache, no second download


def test_a_tampered_or_unreachable_download_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("FERBENCH_CACHE", str(tmp_path / "cache"))
    release = tmp_path / "release.onnx"
    release.write_bytes(b"not what the model zoo published")
    with pytest.raises(FerbenchError, match="SHA-256 .* --detector-model"):
        yunet_model_file(url=release.as_uri(), sha256="0" * 64)
    assert list((tmp_path / "cache").iterdir()) == []  # nothing half-written is left to be trusted later
    with pytest.raises(FerbenchError, match="cannot download the YuNet face detector .* --detector-model .* haar"):
        yunet_model_file(url="http://127.0.0.1:9/face_detection_yunet_2023mar.onnx")


def test_a_missing_or_foreign_model_file_names_the_option(tmp_path):
    with pytest.raises(FerbenchError, match="no such YuNet model file; pass --detector-model"):
        build_detector("yunet", model_file=tmp_path / "nowhere.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"\x00" * 100)
    with pytest.raises(FerbenchError, match="not a YuNet face detector .* --detector haar"):
        build_detector("yunet", model_file=tmp_path / "junk.onnx")
    with pytest.raises(FerbenchError, match="unknown face detector 'dlib'"):
        build_detector("dlib")
    assert isinstance(build_detector("haar", video=True), HaarFaceDetector)


@pytest.fixture(scope="module")
def model_folder(untrained_model):
    return untrained_model


def test_predict_uses_the_detector_it_is_given_and_never_falls_back(model_folder, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FERBENCH_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr("ferbench.serving.faces.YUNET_URL", "http://127.0.0.1:9/face_detection_yunet_2023mar.onnx")
    Image.fromarray(astronaut()).save(tmp_path / "astronaut.jpg")
    photo = str(tmp_path / "astronaut.jpg")
    assert predict.main([photo, "--model", str(model_folder), "--detector", "haar"]) == 0
    captured = capsys.readouterr()
    assert "faces: haar" in captured.err and len(json.loads(captured.out)["faces"]) == 1
    assert predict.main([photo, "--model", str(model_folder)]) == 2  # offline, no YuNet file: no silent Haar
    captured = capsys.readouterr()
    assert captured.out == "" and "--detector-model" in captured.err and len(captured.err.strip().splitlines()) == 1
    if YUNET_FILE.is_file():
        assert predict.main([photo, "--model", str(model_folder), "--detector-model", str(YUNET_FILE)]) == 0
        captured = capsys.readouterr()
        assert "faces: yunet, aligned" in captured.err and len(json.loads(captured.out)["faces"]) == 1
