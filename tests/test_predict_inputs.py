"""The predict CLI on hostile inputs and outputs: special files, huge files, odd file names, tables it
cannot write and a reader that goes away. Each bad item is one line and the run goes on; nothing hangs."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.support import PROJECT_ROOT, predict_whole_images


@pytest.fixture(scope="module")
def model(untrained_model):
    return untrained_model


def bad_input(kind, tmp_path):
    if kind == "fifo":
        os.mkfifo(tmp_path / "pipe.png")  # opening it would wait for a writer forever
        return tmp_path / "pipe.png"
    if kind == "device":
        return "/dev/zero"  # reading it never ends
    if kind == "huge":
        with open(tmp_path / "huge.png", "wb") as handle:  # sparse: 60 MB on paper, nothing on disk
            handle.truncate(60 * 1024 * 1024)
        return tmp_path / "huge.png"
    return tmp_path / "missing.png"


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("fifo", "not a regular file"),
        ("device", "not a regular file"),
        ("huge", "too large (60 MB; the limit is 50 MB)"),
        ("missing", "No such file or directory"),
    ],
)
def test_a_bad_input_is_one_line_and_the_rest_still_runs(kind, message, model, face, tmp_path, capsys):
    bad = bad_input(kind, tmp_path)
    assert predict_whole_images([bad, face], model) == 1
    out, err = capsys.readouterr()
    records = [json.loads(line) for line in out.splitlines()]
    assert records[0]["error"].startswith(message.split(" (")[0]) and "faces" in records[1]
    problems = [line for line in err.splitlines() if not line.startswith("predict: model ")]
    assert len(problems) == 1 and message in problems[0] and "Traceback" not in err


def test_a_file_name_that_is_not_utf8_is_reported_and_tabled(model, face, tmp_path, capsys):
    odd = tmp_path / os.fsdecode(b"caf\xe9.png")
    odd.write_bytes(face.read_bytes())
    assert predict_whole_images([odd], model, "--csv", tmp_path / "faces.csv") == 0
    record = json.loads(capsys.readouterr().out)
    assert record["file"] == str(odd) and len(record["faces"]) == 1
    assert b"caf\xe9.png" in (tmp_path / "faces.csv").read_bytes()  # the name as it is on disk


@pytest.mark.parametrize(
    ("where", "message"),
    [("folder", "is a folder"), ("under a file", "cannot write --csv"), ("/dev/full", "cannot write --csv")],
)
def test_a_table_it_cannot_write_is_one_line_and_exit_2(where, message, model, face, tmp_path, capsys):
    (tmp_path / "file.txt").write_text("x")
    target = {"folder": tmp_path, "under a file": tmp_path / "file.txt" / "faces.csv", "/dev/full": "/dev/full"}[where]
    assert (
        predict_whole_images([face], model, "--csv", target, "--overwrite") == 2
    )  # /dev/full exists: only --overwrite tries it
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("predict: model ")]
    assert len(err) == 1 and message in err[0]


def test_a_reader_that_goes_away_ends_the_run_quietly(model, face, tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    for index in range(40):
        (folder / f"{index:02d}.png").write_bytes(face.read_bytes())
    command = (
        f"{sys.executable} -m ferbench.serving.predict {folder} --model {model} --whole-image --threads 1 | head -1"
    )
    result = subprocess.run(["bash", "-c", command], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert len(result.stdout.splitlines()) == 1
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr, result.stderr[-400:]


@pytest.mark.parametrize("shape", [(1, 5000), (3000, 3), (60, 6000), (10, 10)])
def test_a_strip_of_pixels_is_one_line_and_the_good_face_after_it_still_runs(shape, model, face, tmp_path, capsys):
    strip = tmp_path / "strip.png"
    Image.fromarray(np.full(shape, 128, np.uint8)).save(strip)
    assert predict_whole_images([strip, face], model) == 1
    out, err = capsys.readouterr()
    records = [json.loads(line) for line in out.splitlines()]
    assert records[0]["error"].startswith("not a photo of faces") and len(records[1]["faces"]) == 1
    assert "Traceback" not in err


def test_a_detector_that_fails_on_one_image_fails_that_image_only(model, face, tmp_path, capsys, monkeypatch):
    from ferbench.serving.inference import EmotionRecognizer

    calls = []

    def analyze(self, rgb):
        calls.append(rgb.shape)
        if len(calls) == 1:
            raise RuntimeError("cv2.error: !dsize.empty()")
        return original(self, rgb)

    original = EmotionRecognizer.analyze
    monkeypatch.setattr(EmotionRecognizer, "analyze", analyze)
    assert predict_whole_images([face, face], model) == 1
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert records[0]["error"] == "face detection failed (RuntimeError)" and len(records[1]["faces"]) == 1
