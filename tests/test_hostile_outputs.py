"""Hostile inputs, third round: outputs that never replace a file, CSV cells that are never formulas,
videos that upset the detector, videos that make hundreds of tracks, models that answer NaN, numbers
out of range, links out of a folder and names that would drive a terminal. Each case is one line (exit 2
where the run cannot go on), never a traceback, a hang, a silent wrong answer or a lost file."""

import csv
import json
import os
import shutil
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest
import torch

from ferbench.constants import FER2013_CLASSES
from ferbench.errors import FerbenchError
from ferbench.files import spreadsheet_safe, write_frame_csv
from ferbench.models.folder import EmotionModel
from ferbench.serving import predict
from ferbench.serving.faces import Face, YuNetFaceDetector, box_window
from ferbench.serving.inference import EmotionRecognizer
from ferbench.serving.video import (
    MAX_TIMELINES,
    REPORTED_TRACKS,
    TABLE_FILE,
    TRACKS_FILE,
    VideoOptions,
    analyse_video,
)
from ferbench.shipping.release import release_model
from tests.support import card_calibration, predict_whole_images


@pytest.fixture(scope="module")
def model(untrained_model):
    return untrained_model


def problems(err: str) -> list[str]:
    return [line for line in err.splitlines() if not line.startswith("predict: model ")]


def write_gray_video(path: Path, width: int, height: int, frames: int, fps: float = 30.0) -> Path:
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
    assert writer.isOpened()
    for index in range(frames):
        writer.write(np.full((height, width, 3), 40 + index % 100, np.uint8))
    writer.release()
    return path


# 1. The photo table never replaces an input, nor an existing file unless asked.


@pytest.mark.parametrize(
    ("target", "options", "message"),
    [
        ("the photo", [], "is one of the inputs"),
        ("the photo", ["--overwrite"], "is one of the inputs"),
        ("an old table", [], "exists; name a new file, or pass --overwrite"),
    ],
)
def test_the_table_never_replaces_an_input_or_an_old_file(target, options, message, model, face, tmp_path, capsys):
    old = tmp_path / "old.csv"
    old.write_text("kept\n")
    path = face if target == "the photo" else old
    before = path.read_bytes()
    assert predict_whole_images([face], model, "--csv", path, *options) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(problems(err)) == 1 and message in problems(err)[0]
    assert path.read_bytes() == before


def test_overwrite_replaces_an_old_table(model, face, tmp_path, capsys):
    old = tmp_path / "old.csv"
    old.write_text("kept\n")
    assert predict_whole_images([face], model, "--csv", old, "--overwrite") == 0
    assert old.read_text().startswith("file,face,x,y")


def test_a_table_inside_the_folder_analysed_is_not_an_input_it_replaces(model, face, tmp_path, capsys):
    (tmp_path / "faces.csv").write_text("an older table\n")
    assert (
        predict_whole_images([tmp_path], model, "--csv", tmp_path / "faces.csv", "--overwrite") == 2
    )  # it is listed as an input
    assert "is one of the inputs" in capsys.readouterr().err
    assert (tmp_path / "faces.csv").read_text() == "an older table\n"


def test_the_table_is_written_as_the_photos_are_done(model, face, tmp_path, capsys, monkeypatch):
    """Rows go to the file photo by photo (memory does not grow with a folder), and a record keeps no crop."""
    table = tmp_path / "faces.csv"
    seen = []
    original = predict.predict_file

    def predict_file(recognizer, path, max_pixels):
        seen.append(len(table.read_text().splitlines()) if table.exists() else 0)
        record = original(recognizer, path, max_pixels)
        json.dumps(record, allow_nan=False)  # plain JSON: no array is kept per photo
        return record

    monkeypatch.setattr(predict, "predict_file", predict_file)
    assert predict_whole_images([face, face, face], model, "--csv", table) == 0
    assert seen == [0, 2, 3]  # the header and the first row before the second photo


# 2. CSV cells that a spreadsheet would run as formulas.


@pytest.mark.parametrize(
    ("cell", "safe"),
    [
        ('=HYPERLINK("http://x")', '\'=HYPERLINK("http://x")'),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("+1", "'+1"),
        ("-2+3", "'-2+3"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\r=1"),
        ("happy", "happy"),
        ("a=b", "a=b"),
        (-2, -2),
        (0.5, 0.5),
    ],
)
def test_a_cell_that_starts_like_a_formula_is_neutralised(cell, safe):
    assert spreadsheet_safe(cell) == safe


def test_photo_names_never_become_formulas_in_the_table(model, face, tmp_path, capsys, monkeypatch):
    names = ["=HYPERLINK(1).png", "@SUM(1).png", "+1.png", "-2+3.png"]
    for name in names:
        (tmp_path / name).write_bytes(face.read_bytes())
    monkeypatch.chdir(tmp_path)  # relative names: each cell starts with the name itself
    options = ["--model", str(model), "--whole-image", "--threads", "1", "--csv", "faces.csv"]
    assert predict.main([*options, "--", *names]) == 0  # "-2+3.png" is a file, not an option
    with open(tmp_path / "faces.csv", newline="") as handle:
        cells = [row[0] for row in list(csv.reader(handle))[1:]]
    assert cells == [f"'{name}" for name in names]


class FirstClassModel:
    """A stand-in model whose first class, named like a formula, wins every face."""

    classes: ClassVar[list[str]] = ["=cmd|'/C calc'!A0", *FER2013_CLASSES[1:]]

    def probabilities(self, crops):
        out = np.full((len(crops), 7), 0.05)
        out[:, 0] = 0.7
        return out


def test_video_tables_and_report_tables_neutralise_class_names(tmp_path):
    """Class names (from a model card) reach the label of every row of faces.csv and tracks.csv."""
    recognizer = EmotionRecognizer(FirstClassModel(), WholeFrame(), smoothing=0.0)
    video = write_gray_video(tmp_path / "clip.avi", 64, 64, 40)
    analyse_video(video, recognizer, tmp_path / "out", VideoOptions(detect_every=1))
    for name in (TABLE_FILE, TRACKS_FILE):
        with open(tmp_path / "out" / name, newline="") as handle:
            rows = list(csv.DictReader(handle))
        labels = [row["label" if name == TABLE_FILE else "dominant"] for row in rows]
        assert labels and set(labels) == {"'=cmd|'/C calc'!A0"}, name
    frame = pd.DataFrame({"predicted": ["=1+1", "happy"], "=col": [1, 2]})
    write_frame_csv(frame, tmp_path / "report.csv")
    assert (tmp_path / "report.csv").read_text().splitlines() == ["predicted,'=col", "'=1+1,1", "happy,2"]


class WholeFrame:
    """A stand-in detector: the whole frame is one face."""

    name = "whole"
    can_align = False

    def __call__(self, rgb):
        return [Face((0, 0, rgb.shape[1], rgb.shape[0]))]

    def window(self, face, align):
        return box_window(face.box)


# 3. Videos that upset the detector.


def test_a_blank_strip_video_is_one_line_and_writes_nothing(model, tmp_path, capsys):
    video = write_gray_video(tmp_path / "strip.avi", 2000, 16, 10)
    code = predict.main([str(video), "--model", str(model), "--detector", "haar", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "not a video of faces (2000x16 pixels" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


class FailingDetector(WholeFrame):
    """Raises on every third frame, as OpenCV does on frames it cannot take."""

    def __init__(self):
        self.calls = 0

    def __call__(self, rgb):
        self.calls += 1
        if self.calls % 3 == 0:
            raise ValueError("cannot convert float NaN to integer")
        return super().__call__(rgb)


def test_frames_the_detector_fails_on_count_as_frames_without_a_face(model, tmp_path):
    recognizer = EmotionRecognizer(EmotionModel(model, threads=1), FailingDetector(), smoothing=0.0)
    video = write_gray_video(tmp_path / "clip.avi", 64, 64, 30)
    result = analyse_video(video, recognizer, tmp_path / "out", VideoOptions(detect_every=1))
    assert result.detector_failures == 10 and result.frames_analysed == 30
    rows = (tmp_path / "out" / TABLE_FILE).read_text().splitlines()
    assert len(rows) == 1 + 20  # the header, and a row for each frame the detector took
    assert result.to_dict()["detector_failures"] == 10


def test_yunet_rows_that_are_nan_or_empty_are_no_faces():
    class Answers:
        def setInputSize(self, size):
            pass

        def detect(self, image):
            rows = np.zeros((3, 15), np.float32)
            rows[0, :4] = (10, 10, 20, 20)
            rows[1, :4] = (np.nan, 10, 20, 20)
            rows[2, :4] = (10, 10, 0, 20)
            return 1, rows

    detector = YuNetFaceDetector.__new__(YuNetFaceDetector)
    detector._detector = Answers()
    found = detector._detect(np.zeros((64, 64, 3), np.uint8))
    assert found.shape == (1, 15) and found[0, 2] == 20


# 4. A video that makes hundreds of tracks.


class Flicker(WholeFrame):
    """25 faces in a grid that stay (long tracks) and one that jumps somewhere new every frame (a new track
    each frame when --missing-seconds is 0)."""

    def __init__(self):
        self.calls = 0

    def __call__(self, rgb):
        self.calls += 1
        grid = [Face((20 + 60 * (k % 5), 20 + 60 * (k // 5), 40, 40)) for k in range(25)]
        jump = Face((400 + 300 * (self.calls % 2), 20 + 13 * (self.calls % 29), 40, 40))
        return [*grid, jump]


@pytest.mark.slow
def test_hundreds_of_tracks_make_a_bounded_number_of_plots_and_a_bounded_line(model, tmp_path):
    recognizer = EmotionRecognizer(EmotionModel(model, threads=1), Flicker(), smoothing=0.0)
    video = write_gray_video(tmp_path / "flicker.avi", 800, 400, 60)
    steps = []
    options = VideoOptions(detect_every=1, missing_seconds=0.0)
    result = analyse_video(video, recognizer, tmp_path / "out", options, lambda d, t, step: steps.append(step))
    assert len(result.tracks) > 60 and result.timelines == MAX_TIMELINES
    plots = list((tmp_path / "out").glob("timeline-track-*.png"))
    assert len(plots) == MAX_TIMELINES and "timeline" in steps  # the plotting step reports progress too
    record = result.to_dict()
    assert record["track_count"] == len(result.tracks) and len(record["tracks"]) == REPORTED_TRACKS
    assert len(json.dumps(record)) < 20_000
    assert "a timeline for 20 (not for" in result.describe()
    assert len((tmp_path / "out" / TRACKS_FILE).read_text().splitlines()) == 1 + len(result.tracks)


# 5. Models whose answers are not probabilities.


def broken_model_folder(folder: Path, value: float) -> Path:
    """A model whose head answers `value` (NaN or infinity) for every class."""
    from ferbench.models.backbones import build_backbone
    from ferbench.models.classifier import ImageClassifier, build_head
    from ferbench.shipping.deploy import write_model_folder
    from tests.support import backbone_spec

    spec = backbone_spec("resnet18", "torchvision", "resnet18", input_size=48)
    backbone = build_backbone(spec)
    model = ImageClassifier(backbone, build_head(backbone.feature_dim, 7)).eval()
    with torch.no_grad():
        for parameter in model.head.parameters():
            parameter.fill_(value)
    write_model_folder(folder, spec, model, list(FER2013_CLASSES), "onnx_fp32")
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_model_that_answers_nan_or_infinity_is_refused_by_predict_and_release(value, face, tmp_path, capsys):
    folder = broken_model_folder(tmp_path / "broken", value)
    assert predict_whole_images([face], folder) == 2
    out, err = capsys.readouterr()
    assert out == "" and "NaN or infinite scores" in err and str(folder) in err and "Traceback" not in err
    with pytest.raises(FerbenchError, match="NaN or infinite scores"):
        release_model(folder, tmp_path / "released")
    assert not (tmp_path / "released").exists()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("temperature", 1e-320, "temperature"),
        ("temperature", 1e308, "temperature"),
        ("classes", ["x" * 41, *FER2013_CLASSES[1:]], "classes.0"),
        ("classes", ["ang\x1bry", *FER2013_CLASSES[1:]], "printable"),
        ("classes", ["\u202eyrgna", *FER2013_CLASSES[1:]], "printable"),
    ],
)
def test_a_card_temperature_or_class_name_out_of_bounds_is_one_line(
    field, value, message, model, face, tmp_path, capsys
):
    folder = Path(shutil.copytree(model, tmp_path / "model"))  # a copy of the module's folder, its card edited
    card = json.loads((folder / "model_card.json").read_text())
    card[field] = value
    (folder / "model_card.json").write_text(json.dumps(card))
    assert predict_whole_images([face], folder) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and message in err and "\x1b" not in err and "\u202e" not in err


def test_a_card_whose_temperature_is_not_the_one_it_fitted_is_one_line(model, face, tmp_path, capsys):
    folder = Path(shutil.copytree(model, tmp_path / "model"))
    card = json.loads((folder / "model_card.json").read_text())
    card["calibration"] = card_calibration()  # fitted at temperature 1.0
    (folder / "model_card.json").write_text(json.dumps(card | {"temperature": 1.0}))
    assert predict_whole_images([face], folder) == 0
    capsys.readouterr()
    (folder / "model_card.json").write_text(json.dumps(card | {"temperature": 1.5}))
    assert predict_whole_images([face], folder) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "temperature 1.5 differs from calibration.temperature 1.0" in err


# 6 and 7. Numbers in range, names apart, links inside, names escaped.


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--threads", "100000"], f"--threads 100000: use 0 to {os.cpu_count()}"),
        (["--threads", "-1"], "--threads -1: use 0 to"),
        (["--every", str(10**22)], f"--every {10**22}: use 1 to 100,000 frames"),
        (["--detect-every", "0"], "--detect-every 0: use 1 to 100,000 frames"),
        (["--max-pixels", "-1"], "--max-pixels -1: use 1 to 250,000,000 pixels"),
        (["--max-frame-pixels", "0"], "--max-frame-pixels 0: use 1 to"),
    ],
)
def test_a_number_out_of_range_is_one_line_before_anything_loads(options, message, face, tmp_path, capsys):
    code = predict.main([str(face), "--model", str(tmp_path / "no-model-here"), *options])
    err = capsys.readouterr().err
    assert code == 2 and len(err.splitlines()) == 1 and message in err, err


def test_two_videos_of_the_same_name_get_folders_apart(model, tmp_path, capsys):
    for folder in ("x", "y"):
        (tmp_path / folder).mkdir()
    first = write_gray_video(tmp_path / "x" / "clip.avi", 64, 64, 10)
    second = write_gray_video(tmp_path / "y" / "clip.avi", 64, 64, 10)
    code = predict.main(
        [str(first), str(second), "--model", str(model), "--whole-image", "--out", str(tmp_path / "res")]
    )
    assert code == 0, capsys.readouterr().err
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [record["video"]["out"] for record in records] == [str(tmp_path / "res/clip"), str(tmp_path / "res/clip-2")]


def test_links_are_followed_only_inside_the_folder_and_the_rest_are_listed(model, face, tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.png").write_bytes(face.read_bytes())
    (folder / "inside.png").symlink_to(folder / "a.png")
    (folder / "passwd.png").symlink_to("/etc/passwd")
    (folder / "loop.png").symlink_to(folder / "loop.png")
    (folder / "up").symlink_to(tmp_path)  # a folder link: walking it would loop
    assert predict_whole_images([folder], model) == 0
    out, err = capsys.readouterr()
    assert [Path(json.loads(line)["file"]).name for line in out.splitlines()] == ["a.png", "inside.png"]
    (skipped,) = problems(err)
    assert "skipped 3 link(s)" in skipped and "passwd.png (a link leading outside the folder)" in skipped
    assert "loop.png (a broken link or a loop)" in skipped and "up (a link to a folder)" in skipped


def test_control_and_bidi_characters_in_names_are_escaped_on_the_terminal(model, tmp_path, capsys):
    name = "evil\x1b[2J\u202egnp.png"
    (tmp_path / name).write_bytes(b"not an image")
    assert predict_whole_images([tmp_path / name], model) == 1
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\u202e" not in err and "evil\\x1b[2J\\u202egnp.png" in err
