"""The HTTP API (`ferbench-serve`): every endpoint, the same answers as the CLI, every bad input a JSON
error with its status while the server keeps serving, the API key, the limits, job expiry, and a real
uvicorn process that leaves no temporary file after SIGTERM. Most checks go through FastAPI's test client
(the app in-process); the last ones through a real server on a free loopback port."""

import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from ferbench.serving import api, predict
from ferbench.serving.api import ServeLimits, ServeSettings, create_app
from ferbench.serving.faces import WholeImage
from tests.support import PROJECT_ROOT

pytestmark = pytest.mark.slow  # make test-fast leaves these out; make test runs them

KEY = "a-long-enough-test-key-0123456789"


@pytest.fixture(scope="module")
def model(untrained_model):
    return untrained_model  # read only


def astronaut_png() -> bytes:
    from skimage import data

    canvas = np.full((480, 640, 3), 128, np.uint8)
    canvas[:, 64:576] = np.asarray(Image.fromarray(data.astronaut()).resize((512, 480)))
    buffer = io.BytesIO()
    Image.fromarray(canvas).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def photo():
    return astronaut_png()


def client_for(model: Path, **limits) -> TestClient:
    settings = ServeSettings(model, detector="haar", limits=ServeLimits(**{"workers": 2, **limits}))
    return TestClient(create_app(settings))


def wait_ready(client: TestClient) -> None:
    for _ in range(200):
        if client.get("/v1/ready").status_code == 200:
            return
        time.sleep(0.05)
    raise AssertionError(client.get("/v1/ready").json())


@pytest.fixture(scope="module")
def client(model):
    with client_for(model) as client:
        wait_ready(client)
        yield client


def test_the_server_keeps_a_temporary_folder_only_while_it_serves(model, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where `tempfile.mkdtemp` makes its folders
    app = create_app(ServeSettings(model, detector="haar"))
    assert not list(tmp_path.glob("ferbench-serve-*"))  # built but not served, as by a test: nothing made
    with TestClient(app):
        assert len(list(tmp_path.glob("ferbench-serve-*"))) == 1
    assert not list(tmp_path.glob("ferbench-serve-*"))


def upload(data: bytes, name: str = "photo.png", kind: str = "image/png") -> dict:
    return {"file": (name, data, kind)}


def test_the_answer_for_a_photo_is_the_clis(client, model, photo, tmp_path, capsys):
    (tmp_path / "photo.png").write_bytes(photo)
    assert predict.main([str(tmp_path / "photo.png"), "--model", str(model), "--detector", "haar"]) == 0
    cli = json.loads(capsys.readouterr().out)
    served = client.post("/v1/predict", files=upload(photo)).json()
    assert served == cli | {"file": "photo.png"} and len(served["faces"]) == 1
    whole = client.post("/v1/predict?whole_image=true", files=upload(photo)).json()
    assert whole["faces"][0]["box"] == [0, 0, 640, 480]


def test_a_batch_answers_a_record_per_photo_in_order(client, photo):
    files = [("files", ("a.png", photo, "image/png")), ("files", ("b.png", b"not an image", "image/png"))]
    results = client.post("/v1/predict/batch", files=files).json()["results"]
    assert [r["file"] for r in results] == ["a.png", "b.png"]
    assert len(results[0]["faces"]) == 1 and results[1] == {"file": "b.png", "error": "not an image"}


def test_health_readiness_and_the_model_card(client, model):
    assert client.get("/v1/health").json() == {"status": "ok"}
    assert client.get("/v1/ready").status_code == 200
    card = client.get("/v1/model").json()
    assert card["backbone"] == "resnet18" and card["classes"][0] == "angry" and card["card"]["format"]
    paths = set(client.get("/openapi.json").json()["paths"])
    assert {"/v1/predict", "/v1/predict/batch", "/v1/videos", "/v1/videos/{job}", "/v1/model"} <= paths


def big_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (3000, 3000)).save(buffer, "PNG")  # 9 M pixels, a few KB
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("request_", "status", "message"),
    [
        (("post", "/v1/predict", {"files": upload(b"hello")}), 400, "photo.png: not an image"),
        (("post", "/v1/predict", {"files": upload(np.zeros(100, np.uint8).tobytes())}), 400, "not an image"),
        (
            ("post", "/v1/predict", {"files": upload(b"hello", "a.txt", "text/plain")}),
            415,
            "text/plain is not an image",
        ),
        (("post", "/v1/predict?whole_image=maybe", {"files": upload(b"x")}), 422, "whole_image: Input should be"),
        (("post", "/v1/predict", {}), 422, "file: Field required"),
        (("post", "/v1/predict", {"files": upload(big_png())}), 413, "too large (3000x3000 pixels"),
        (("post", "/v1/predict", {"content": b"x" * (11 << 20)}), 413, "the request body is over 10 MB"),
        (("post", "/v1/videos", {"files": upload(b"x", "clip.exe", "video/mp4")}), 415, "not a video file name"),
        (("get", "/v1/videos/" + "0" * 32, {}), 404, "no job"),
        (("get", "/v1/videos/../../etc/passwd", {}), 404, "Not Found"),
        (("get", "/v1/videos/" + "0" * 32 + "/secrets.txt", {}), 422, "name: Input should be"),
    ],
)
def test_a_bad_request_is_a_json_error_and_the_next_good_one_succeeds(request_, status, message, model, photo):
    with client_for(model, max_pixels=5_000_000) as client:
        wait_ready(client)
        method, path, kwargs = request_
        if "content" in kwargs:
            kwargs = {**kwargs, "headers": {"content-type": "multipart/form-data; boundary=x"}}
        answer = getattr(client, method)(path, **kwargs)
        assert answer.status_code == status and set(answer.json()) == {"error"}, answer.text
        assert message in answer.json()["error"] and "Traceback" not in answer.text
        assert client.post("/v1/predict", files=upload(photo)).status_code == 200


def test_the_api_key_is_required_everywhere_but_health(model, photo):
    settings = ServeSettings(model, detector="haar", api_key=KEY, limits=ServeLimits(workers=1))
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        assert client.get("/v1/health").status_code == 200 and client.get("/v1/ready").status_code == 200
        for headers in ({}, {"X-API-Key": "wrong"}, {"X-API-Key": KEY[:-1]}):
            answer = client.post("/v1/predict", files=upload(photo), headers=headers)
            assert answer.status_code == 401 and "API key" in answer.json()["error"]
            assert client.get("/v1/model", headers=headers).status_code == 401
        assert client.post("/v1/predict", files=upload(photo), headers={"X-API-Key": KEY}).status_code == 200
        assert client.get("/v1/model", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200


def test_busy_and_slow_requests_get_503(model, photo, monkeypatch):
    with client_for(model, waiting=0) as client:
        wait_ready(client)
        answer = client.post("/v1/predict", files=upload(photo))
        assert answer.status_code == 503 and answer.json()["error"].startswith("busy")
    original = api.Server._analyse

    def slow(self, photos, whole_image):
        time.sleep(1.5)
        return original(self, photos, whole_image)

    monkeypatch.setattr(api.Server, "_analyse", slow)
    with client_for(model, request_timeout_s=0.5) as client:
        wait_ready(client)
        answer = client.post("/v1/predict", files=upload(photo))
        assert answer.status_code == 503 and "took over 0.5 s" in answer.json()["error"]


def write_clip(path: Path, frames: int = 45) -> Path:
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (64, 64))
    for index in range(frames):
        writer.write(np.full((64, 64, 3), 60 + 2 * index, np.uint8))
    writer.release()
    return path


def wait_job(client: TestClient, job: str) -> dict:
    for _ in range(400):
        state = client.get(f"/v1/videos/{job}").json()
        if state["status"] in ("done", "failed"):
            return state
        time.sleep(0.05)
    raise AssertionError(state)


@pytest.fixture
def whole_frame_videos(monkeypatch):
    """Video jobs see the whole frame as one face (a made-up video has no face for a detector to find)."""
    monkeypatch.setattr(api, "build_detector", lambda *args, **kwargs: WholeImage())


def test_a_video_job_runs_and_serves_its_results(model, tmp_path, whole_frame_videos):
    clip = write_clip(tmp_path / "clip.avi").read_bytes()
    with client_for(model) as client:
        wait_ready(client)
        answer = client.post("/v1/videos", files=upload(clip, "clip.avi", "video/x-msvideo"))
        assert answer.status_code == 202 and answer.json()["status"] in ("queued", "running")
        state = wait_job(client, answer.json()["job"])
        assert state["status"] == "done" and state["progress"] == 1.0 and state["frames_done"] == 45
        summary = state["summary"]
        assert summary["frames_analysed"] == 45 and summary["track_count"] == 1 and "out" not in summary
        faces = client.get(state["results"]["faces"])
        assert faces.status_code == 200 and len(faces.text.splitlines()) == 46
        assert client.get(state["results"]["tracks"]).text.startswith("track,")
        timeline = client.get(state["results"]["timeline_1"])
        assert timeline.status_code == 200 and timeline.content[:4] == b"\x89PNG"
        assert client.get(state["results"]["timeline_1"].replace("/1", "/7")).status_code == 404


def test_a_broken_video_fails_its_job_with_one_line(client):
    answer = client.post("/v1/videos", files=upload(b"not a video at all" * 50, "clip.mp4", "video/mp4"))
    state = wait_job(client, answer.json()["job"])
    assert state["status"] == "failed" and "not a video OpenCV can read" in state["error"]
    assert "ferbench-serve-" not in state["error"]  # no server path in what a client sees


def test_a_full_job_queue_is_429_and_a_job_past_its_time_limit_is_gone(model, tmp_path, monkeypatch):
    release = threading.Event()
    original = api.analyse_video

    def held(*args, **kwargs):
        release.wait(10)
        return original(*args, **kwargs)

    monkeypatch.setattr(api, "analyse_video", held)
    monkeypatch.setattr(api, "build_detector", lambda *args, **kwargs: WholeImage())
    clip = write_clip(tmp_path / "clip.avi", 10).read_bytes()
    with client_for(model, jobs=1, job_ttl_s=0.2) as client:
        wait_ready(client)
        first = client.post("/v1/videos", files=upload(clip, "clip.avi")).json()["job"]
        refused = client.post("/v1/videos", files=upload(clip, "clip.avi"))
        assert refused.status_code == 429 and "1 video jobs are queued or running" in refused.json()["error"]
        release.set()
        assert wait_job(client, first)["status"] == "done"
        folder = client.app.state.server.jobs[first].folder
        time.sleep(0.3)
        assert client.get(f"/v1/videos/{first}").status_code == 404 and not folder.exists()


# A real server process.


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def multipart(field: str, name: str, data: bytes, kind: str) -> tuple[bytes, str]:
    boundary = "ferbench-test-boundary"
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{name}"\r\n'
    body = (head + f"Content-Type: {kind}\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


@pytest.fixture
def server(model, tmp_path):
    port = free_port()
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = dict(os.environ, TMPDIR=str(scratch), FERBENCH_API_KEY=KEY, OMP_NUM_THREADS="1")
    process = subprocess.Popen(
        [sys.executable, "-m", "ferbench.serving.api", "--model", str(model), "--detector", "haar",
         "--port", str(port), "--workers", "1"],
        cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            with urllib.request.urlopen(f"{url}/v1/ready", timeout=1) as answer:
                if answer.status == 200:
                    break
        except OSError:
            time.sleep(0.1)
    yield process, url, scratch
    if process.poll() is None:
        process.kill()
        process.wait()


def test_a_real_server_answers_like_the_cli_and_leaves_nothing_after_sigterm(server, photo, model, tmp_path, capsys):
    process, url, scratch = server
    body, kind = multipart("file", "photo.png", photo, "image/png")
    request = urllib.request.Request(f"{url}/v1/predict", body, {"Content-Type": kind, "X-API-Key": KEY})
    with urllib.request.urlopen(request, timeout=30) as answer:
        served = json.loads(answer.read())
    (tmp_path / "photo.png").write_bytes(photo)
    assert predict.main([str(tmp_path / "photo.png"), "--model", str(model), "--detector", "haar"]) == 0
    assert served == json.loads(capsys.readouterr().out) | {"file": "photo.png"}
    assert len(list(scratch.glob("ferbench-serve-*"))) == 1  # the server's own temporary folder, while it runs
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once shut down
    err = process.stderr.read()
    assert "serve: model" in err and "test accuracy" not in err.split("serve: model")[0]
    assert "Traceback" not in err and not list(scratch.glob("ferbench-serve-*"))


def test_the_curl_examples_of_the_docs_run(server, photo, tmp_path):
    """Every photo example of docs/api.md, against a real server (its port and the key put in)."""
    _, url, _ = server
    text = (PROJECT_ROOT / "docs/api.md").read_text()
    block = re.search(r"With the server running.*?```bash\n(.*?)```", text, re.S).group(1)
    (tmp_path / "photo.jpg").write_bytes(photo)
    for line in block.strip().splitlines():
        command = line.replace("http://127.0.0.1:8000", url).replace("curl -s", f"curl -s -f -H 'X-API-Key: {KEY}'")
        done = subprocess.run(["bash", "-c", command], cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, (line, done.stderr)
        json.loads(done.stdout)


def test_the_cli_refuses_bad_settings_in_one_line(model, capsys):
    for argv, message in (
        (["--port", "0"], "--port 0: use 1 to 65535"),
        (["--api-key", "short"], "shorter than 16 characters"),
        (["--model", "/no/such/model"], "no model card"),
    ):
        assert api.main(["--model", str(model), *argv]) == 2
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1 and message in err, err


def test_beyond_loopback_without_a_key_it_warns(model, monkeypatch, capsys):
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: None)
    monkeypatch.delenv("FERBENCH_API_KEY", raising=False)
    assert api.main(["--model", str(model), "--host", "0.0.0.0", "--detector", "haar"]) == 0
    assert "warning: listening on 0.0.0.0 beyond this machine with no API key" in capsys.readouterr().err
    assert api.main(["--model", str(model), "--detector", "haar"]) == 0
    assert "warning" not in capsys.readouterr().err
