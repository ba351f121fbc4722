"""The live webcam mode in a real browser: headless Chromium, its fake camera fed a video of a face.

Needs Debian's chromium and chromium-driver (`.ci/run` installs them; by hand:
`apt-get install chromium chromium-driver`); without them the test skips and says so.
Set FERBENCH_SCREENSHOT=path to keep the screenshot (the README's comes from here) and
FERBENCH_MODEL=folder to serve that model instead of an untrained one.
"""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ferbench.constants import FER2013_CLASSES
from tests.support import PROJECT_ROOT, detector_args

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (CHROMIUM and CHROMEDRIVER),
        reason="no chromium/chromedriver: install Debian's chromium and chromium-driver (.ci/run does) to run it",
    ),
]
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--window-size=1400,1000",
)


def write_y4m(path: Path, frames: list[np.ndarray], fps: int = 15) -> None:
    """Frames (RGB, even sides) as an uncompressed YUV 4:2:0 video, Chromium's fake-camera format."""
    height, width = frames[0].shape[:2]
    with path.open("wb") as handle:
        handle.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for frame in frames:
            r, g, b = (frame[:, :, i].astype(np.float32) for i in range(3))
            y = 0.299 * r + 0.587 * g + 0.114 * b
            u = (b - y) * 0.564 + 128
            v = (r - y) * 0.713 + 128
            handle.write(b"FRAME\n")
            for plane in (y, u[::2, ::2], v[::2, ::2]):
                handle.write(np.clip(plane, 0, 255).astype(np.uint8).tobytes())


def face_video(path: Path) -> Path:
    """A 640x480 clip of a real face moving slowly (the astronaut photo shipped with scikit-image)."""
    from skimage import data

    photo = np.asarray(Image.fromarray(data.astronaut()).resize((400, 400)))
    frames = []
    for step in range(30):
        frame = np.full((480, 640, 3), 60, dtype=np.uint8)
        left = 60 + step * 4
        frame[40:440, left : left + 400] = photo
        frames.append(frame)
    write_y4m(path, frames)
    return path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def served_app(tmp_path, untrained_model):
    # FERBENCH_MODEL: a relative folder is taken from the project root, where the app runs; the app only reads it
    folder = Path(os.environ["FERBENCH_MODEL"]) if os.environ.get("FERBENCH_MODEL") else untrained_model
    port = free_port()
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            "streamlit_app.py",
            "--server.port",
            str(port),
            "--server.headless",
            "true",
            "--",
            "--model",
            str(folder),
            *detector_args(),
        ],
        cwd=PROJECT_ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://localhost:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).status == 200:
                break
        except OSError:
            time.sleep(0.5)
    else:
        server.kill()
        pytest.fail("streamlit did not start: " + (tmp_path / "server.log").read_text()[-2000:])
    yield url, tmp_path / "server.log"
    server.terminate()
    server.wait(timeout=20)
    log.close()


def test_live_mode_labels_the_face_from_the_camera(served_app, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    url, server_log = served_app
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        *CHROMIUM_FLAGS,
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--use-file-for-fake-video-capture={face_video(tmp_path / 'face.y4m')}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.get(url)
        wait = WebDriverWait(driver, 90)
        frame = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "iframe[title*='webrtc']")))
        driver.switch_to.frame(frame)
        start = "//button[translate(normalize-space(), 'start', 'START')='START']"  # the label is styled upper-case
        wait.until(EC.element_to_be_clickable((By.XPATH, start))).click()
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and "face(s):" not in server_log.read_text():
            time.sleep(1)
        line = next((row for row in server_log.read_text().splitlines() if "face(s):" in row), "")
        assert line, "no labelled frame in the server log:\n" + server_log.read_text()[-3000:]
        assert any(name in line for name in FER2013_CLASSES)
        time.sleep(3)  # let a few annotated frames reach the page
        driver.switch_to.default_content()
        screenshot = tmp_path / "live.png"
        driver.save_screenshot(str(screenshot))
        assert screenshot.stat().st_size > 20_000
        if os.environ.get("FERBENCH_SCREENSHOT"):
            shutil.copyfile(screenshot, os.environ["FERBENCH_SCREENSHOT"])
    finally:
        driver.quit()
