"""Video files: faces tracked through a recording (ids kept through crossings and short occlusions),
the per-frame table, the per-track summary, timelines, and bad videos as one line.

Videos are made at test time. The bookkeeping tests use a stand-in detector that sees exactly the
faces drawn (from the video's own ground truth) and a stand-in model that reads a face's expression
from its brightness, so every label is known; a real-data test (FER-2013 faces, YuNet, the released
model) runs where those files are present.
"""

import csv
import io
import json
import zipfile
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest
from face_scenes import MovingFace, write_moving_faces_video
from PIL import Image

from ferbench.constants import FER2013_CLASSES
from ferbench.errors import FerbenchError
from ferbench.models.folder import EmotionModel
from ferbench.serving import predict
from ferbench.serving.faces import Face, box_window
from ferbench.serving.inference import EmotionRecognizer
from ferbench.serving.tracking import FaceTracker
from ferbench.serving.video import TABLE_FILE, TRACKS_FILE, VideoOptions, analyse_video
from tests.support import REAL_ARCHIVE, YUNET_FILE

pytestmark = pytest.mark.slow  # make test-fast leaves these out; make test runs them

HAPPY, SAD = FER2013_CLASSES.index("happy"), FER2013_CLASSES.index("sad")
FRAMES, FPS = 90, 30.0


def patch(brightness: int, seed: int) -> np.ndarray:
    return np.clip(np.random.default_rng(seed).normal(brightness, 12, (48, 48)), 0, 255).astype(np.uint8)


class BrightnessModel:
    """A stand-in model: bright faces are happy, dark ones sad (what the test videos draw)."""

    classes: ClassVar[list[str]] = list(FER2013_CLASSES)

    def probabilities(self, crops: np.ndarray) -> np.ndarray:
        bright = crops.reshape(len(crops), 48 * 48).mean(axis=1) > 128
        out = np.full((len(crops), len(self.classes)), 0.02)
        out[bright, HAPPY] = 0.88
        out[~bright, SAD] = 0.88
        return out


class TruthDetector:
    """Sees the faces the video drew, frame by frame (its ground truth)."""

    name = "truth"
    can_align = False

    def __init__(self, truth) -> None:
        self.truth = truth
        self.frame = 0

    def __call__(self, rgb: np.ndarray) -> list[Face]:
        faces = [Face(box) for _, box, _ in self.truth[min(self.frame, len(self.truth) - 1)]]
        self.frame += 1
        return faces

    def window(self, face: Face, align: bool):
        return box_window(face.box)


def crossing_faces() -> list[MovingFace]:
    """Two faces that move towards each other, cross at mid-video (the second in front) and swap
    expressions at frame 60: the first happy then sad, the second sad then happy."""
    happy, sad = patch(210, 1), patch(50, 2)
    return [
        MovingFace((100, 240), (540, 240), 120, ((HAPPY, happy), (SAD, sad)), changes=(0, 60)),
        MovingFace((540, 240), (100, 240), 120, ((SAD, sad), (HAPPY, happy)), changes=(0, 60)),
    ]


def analyse(tmp_path, faces, options=None, name="clip.avi"):
    path = tmp_path / name
    truth = write_moving_faces_video(str(path), faces, FRAMES, FPS)
    detector = TruthDetector(truth)
    options = options or VideoOptions(detect_every=1, smoothing=0.0)
    detector.frame = round(options.start * FPS)  # the detector follows the frames the analysis reads
    recognizer = EmotionRecognizer(BrightnessModel(), detector, smoothing=0.0)
    result = analyse_video(path, recognizer, tmp_path / "out", options)
    table = pd.read_csv(tmp_path / "out" / TABLE_FILE)
    return result, table, truth


def test_two_crossing_faces_keep_their_ids_and_labels(tmp_path):
    result, table, truth = analyse(tmp_path, crossing_faces())
    assert any(len(faces) == 1 for faces in truth)  # the second face hides the first at the crossing
    assert sorted(table["track"].unique()) == [1, 2] and len(result.tracks) == 2
    first = table[table["track"] == 1].sort_values("frame")  # the face that starts on the left
    assert first["x"].iloc[0] < 200 and first["x"].iloc[-1] > 400  # it crossed to the right: no id swap
    for track, before, after in ((1, "happy", "sad"), (2, "sad", "happy")):
        rows = table[table["track"] == track]
        assert (rows[rows["frame"] < 60]["label"] == before).all(), track
        assert (rows[rows["frame"] >= 60]["label"] == after).all(), track


def test_a_face_hidden_for_a_few_frames_keeps_its_id(tmp_path):
    face = MovingFace((100, 200), (500, 220), 110, ((HAPPY, patch(200, 3)),), hidden=range(30, 42))
    _, table, _ = analyse(tmp_path, [face])
    assert list(table["track"].unique()) == [1]
    assert set(range(30, 42)).isdisjoint(table["frame"])  # no row while it was hidden


def test_a_face_away_longer_than_missing_seconds_comes_back_with_a_new_id(tmp_path):
    face = MovingFace((100, 200), (500, 220), 110, ((HAPPY, patch(200, 3)),), hidden=range(20, 70))
    options = VideoOptions(detect_every=1, smoothing=0.0, missing_seconds=0.5)
    _, table, _ = analyse(tmp_path, [face], options)
    assert sorted(table["track"].unique()) == [1, 2]


def test_a_video_leaves_the_shared_recognizer_as_it_was_and_tracking_values_are_checked(tmp_path):
    """The HTTP API and the app keep one recognizer for photos (no smoothing, detection on every call):
    a video analysed with it must not change it, and tracking values go through the recognizer's checks."""
    path = tmp_path / "clip.avi"
    truth = write_moving_faces_video(
        str(path), [MovingFace((100, 200), (500, 220), 110, ((HAPPY, patch(200, 3)),))], FRAMES, FPS
    )
    shared = EmotionRecognizer(BrightnessModel(), TruthDetector(truth), smoothing=0.0)
    analyse_video(path, shared, tmp_path / "out", VideoOptions(detect_every=3, smoothing=0.7))
    assert (shared.smoothing, shared.detect_every, shared.max_missing) == (0.0, 1, 15)
    with pytest.raises(FerbenchError, match="smoothing is 1.5"):
        shared.with_tracking(1.5, 1, 10)
    with pytest.raises(FerbenchError, match="detect_every is 0"):
        shared.with_tracking(0.5, 0, 10)


def test_the_table_and_the_summary_agree(tmp_path):
    result, table, _ = analyse(tmp_path, crossing_faces())
    probabilities = table[[f"p_{name}" for name in FER2013_CLASSES]]
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert list(table.columns[:7]) == ["time_s", "frame", "track", "x", "y", "width", "height"]
    np.testing.assert_allclose(table["time_s"], table["frame"] / FPS, atol=1e-3)
    summary = pd.read_csv(tmp_path / "out" / TRACKS_FILE).set_index("track")
    for track, rows in table.groupby("track"):
        row = summary.loc[track]
        assert row["frames_analysed"] == len(rows)
        assert row["seconds_in_view"] == pytest.approx(len(rows) / FPS, abs=1e-3)
        for name in FER2013_CLASSES:
            assert row[f"share_{name}"] == pytest.approx((rows["label"] == name).mean(), abs=1e-4)
        assert row["dominant"] == rows["label"].value_counts().idxmax()
        assert row["mean_confidence"] == pytest.approx(probabilities.loc[rows.index].max(axis=1).mean(), abs=1e-4)
    assert all((tmp_path / "out" / f"timeline-track-{track}.png").stat().st_size > 5_000 for track in (1, 2))
    assert [track["track"] for track in result.tracks] == [1, 2]


def test_every_nth_frame_and_a_time_range(tmp_path):
    options = VideoOptions(every=3, detect_every=1, start=1.0, end=2.0, smoothing=0.0)
    result, table, _ = analyse(tmp_path, crossing_faces(), options)
    frames = sorted(table["frame"].unique())
    assert frames == list(range(30, 60, 3)) and result.frames_analysed == 10


def test_smoothing_follows_a_track_not_a_screen_position():
    tracker = FaceTracker(max_missing=5, smoothing=0.5)
    left, right = Face((0, 100, 100, 100)), Face((400, 100, 100, 100))
    first = tracker.update(0, [left, right])
    first_left = tracker.smooth(first[0], np.array([1.0, 0.0]))
    tracker.smooth(first[1], np.array([0.0, 1.0]))
    moved = tracker.update(1, [Face((405, 100, 100, 100)), Face((5, 100, 100, 100))])  # listed the other way round
    assert [track.track_id for track in moved] == [2, 1]
    np.testing.assert_allclose(tracker.smooth(moved[1], np.array([0.0, 1.0])), 0.5 * first_left + [0.0, 0.5])


def write_video(tmp_path, name="clip.avi", frames=FRAMES):
    path = tmp_path / name
    write_moving_faces_video(str(path), crossing_faces(), frames, FPS)
    return path


@pytest.fixture(scope="module")
def model_folder(untrained_model):
    return untrained_model  # read only


def run_predict(paths, model_folder, *options):
    return predict.main([*map(str, paths), "--model", str(model_folder), "--detector", "haar", *map(str, options)])


def bad_video(kind: str, tmp_path: Path) -> Path:
    path = tmp_path / f"{kind}.mp4"
    if kind == "not a video":
        path.write_bytes(b"this is text, not a video\n" * 100)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated mp4":
        whole = write_video(tmp_path, "whole.mp4").read_bytes()
        path.write_bytes(whole[: len(whole) // 2])  # the index (moov) is at the end: nothing can be read
    elif kind == "audio only":
        import wave

        with wave.open(str(tmp_path / "a.wav"), "wb") as sound:
            sound.setnchannels(1)
            sound.setsampwidth(2)
            sound.setframerate(8000)
            sound.writeframes(np.zeros(8000, np.int16).tobytes())
        (tmp_path / "a.wav").rename(path)
    elif kind == "fifo":
        import os

        os.mkfifo(path)
    return path


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("not a video", "not a video OpenCV can read"),
        ("empty", "empty file"),
        ("truncated mp4", "not a video OpenCV can read"),
        ("audio only", "not a video OpenCV can read"),
        ("fifo", "not a regular file"),
    ],
)
def test_a_bad_video_is_one_line_and_exit_2(kind, message, model_folder, tmp_path, capsys):
    path = bad_video(kind, tmp_path)
    assert run_predict([path], model_folder, "--out", tmp_path / "out") == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("predict: error")]
    assert len(lines) == 1 and message in lines[0] and str(path) in lines[0], err
    assert "Traceback" not in err and not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--start", "10"], "--start 10 s is past the end (3.0 s)"),
        (["--start", "2", "--end", "1"], "--end 1.0: use seconds after --start"),
        (["--max-frame-pixels", "1000"], "frames are 640x480; at most 1,000 pixels a frame"),
        (["--every", "0"], "--every 0: use 1 to 100,000 frames"),
    ],
)
def test_a_time_range_outside_the_video_or_frames_too_large_are_one_line(
    options, message, model_folder, tmp_path, capsys
):
    assert run_predict([write_video(tmp_path)], model_folder, "--out", tmp_path / "out", *options) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_a_video_that_breaks_off_keeps_complete_rows_and_says_when(model_folder, tmp_path, capsys):
    whole = write_video(tmp_path, "whole.avi").read_bytes()  # MJPG in AVI: readable up to the cut
    cut = tmp_path / "cut.avi"
    cut.write_bytes(whole[: len(whole) // 2])
    assert run_predict([cut], model_folder, "--out", tmp_path / "out", "--whole-image") == 1
    out, err = capsys.readouterr()
    assert "the video breaks off at" in err and "the rows up to there are written" in err
    record = json.loads(out.splitlines()[-1])
    stopped = record["video"]["stopped_at_s"]
    assert 0.5 < stopped < 2.9
    with open(tmp_path / "out" / TABLE_FILE, newline="") as handle:
        rows = list(csv.reader(handle))
    assert all(len(row) == len(rows[0]) for row in rows) and len(rows) > 10
    assert float(rows[-1][0]) < stopped


def test_predict_writes_every_output_of_a_video(model_folder, tmp_path, capsys):
    video = write_video(tmp_path, "talk.mp4")
    assert run_predict([video], model_folder, "--out", tmp_path / "out", "--whole-image", "--jsonl", "--annotate") == 0
    out, err = capsys.readouterr()
    record = json.loads(out)
    assert record["file"] == str(video) and record["video"]["frames_analysed"] == FRAMES
    assert "1 track(s) over 3.0 s of video" in err  # the whole frame is one face
    names = sorted(path.name for path in (tmp_path / "out").iterdir())
    assert names == ["annotated.mp4", "faces.csv", "faces.jsonl", "timeline-track-1.png", "tracks.csv"]
    lines = (tmp_path / "out" / "faces.jsonl").read_text().splitlines()
    assert len(lines) == FRAMES and json.loads(lines[0])["track"] == 1
    import cv2

    annotated = cv2.VideoCapture(str(tmp_path / "out" / "annotated.mp4"))
    assert int(annotated.get(cv2.CAP_PROP_FRAME_COUNT)) == FRAMES
    assert run_predict([video], model_folder, "--out", tmp_path / "out", "--whole-image") == 2  # never overwrites
    assert "exists and is not an empty folder" in capsys.readouterr().err


def test_an_animated_gif_is_a_video(model_folder, tmp_path, capsys):
    frames = [Image.fromarray(patch(60 + 20 * k, k)).resize((96, 96)) for k in range(6)]
    frames[0].save(tmp_path / "clip.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert run_predict([tmp_path / "clip.gif"], model_folder, "--out", tmp_path / "out", "--whole-image") == 0
    assert json.loads(capsys.readouterr().out)["video"]["frames_analysed"] == 6
    frames[0].save(tmp_path / "still.gif")  # a still GIF is a photo: one line of faces, no results folder
    assert run_predict([tmp_path / "still.gif"], model_folder, "--out", tmp_path / "still", "--whole-image") == 0
    assert "faces" in json.loads(capsys.readouterr().out) and not (tmp_path / "still").exists()


@pytest.mark.skipif(
    not (Path(REAL_ARCHIVE).is_file() and YUNET_FILE.is_file()),
    reason="needs the FER-2013 zip (params-local.yaml) and the YuNet file",
)
def test_real_faces_crossing_are_two_timelines_with_the_released_model(tmp_path):
    """Two FER-2013 test faces the released model reads confidently (happy, surprise) cross and
    swap expressions; YuNet finds them, the tracker keeps them apart."""
    from ferbench.serving.faces import build_detector
    from ferbench.serving.inference import RELEASED_MODEL_DIR

    with zipfile.ZipFile(REAL_ARCHIVE) as archive:

        def faces(name: str) -> list[np.ndarray]:
            files = sorted(f for f in archive.namelist() if f.startswith(f"test/{name}/") and f.endswith(".jpg"))
            return [np.asarray(Image.open(io.BytesIO(archive.read(f))).convert("L")) for f in files[:3]]

        happy, surprise = faces("happy")[1], faces("surprise")[1]
    h, s = FER2013_CLASSES.index("happy"), FER2013_CLASSES.index("surprise")
    crossing = [
        MovingFace((110, 240), (530, 240), 150, ((h, happy), (s, surprise)), changes=(0, 100)),
        MovingFace((530, 240), (110, 240), 150, ((s, surprise), (h, happy)), changes=(0, 100)),
    ]
    path = tmp_path / "real.mp4"
    write_moving_faces_video(str(path), crossing, 150, FPS)
    recognizer = EmotionRecognizer(EmotionModel(RELEASED_MODEL_DIR), build_detector("yunet", model_file=YUNET_FILE))
    analyse_video(path, recognizer, tmp_path / "out", VideoOptions())
    table = pd.read_csv(tmp_path / "out" / TABLE_FILE)
    assert sorted(table["track"].unique()) == [1, 2]
    starts = table.sort_values("frame").groupby("track")["x"].first()
    left, right = int(starts.idxmin()), int(starts.idxmax())  # the left face: happy, then not; the right: the reverse
    before, after = range(0, 90), range(115, 150)  # clear of the swap at frame 100 (smoothing lags)

    def happy_share(track: int, frames: range) -> float:
        rows = table[(table["track"] == track) & table["frame"].isin(frames)]
        return float((rows["label"] == "happy").mean())

    assert happy_share(left, before) > 0.8 and happy_share(left, after) < 0.2
    assert happy_share(right, before) < 0.2 and happy_share(right, after) > 0.8


def test_a_results_folder_that_cannot_be_written_is_one_line(model_folder, tmp_path, capsys):
    (tmp_path / "file").write_text("a file, not a folder")
    assert run_predict([write_video(tmp_path)], model_folder, "--out", tmp_path / "file" / "out", "--whole-image") == 2
    err = capsys.readouterr().err
    assert "predict: error: cannot write the results of" in err and "Traceback" not in err
