"""The Streamlit app: emotions of every face, live from a webcam, from a snapshot or photo, or
through an uploaded video (every face tracked, a timeline each).

Run it with `make app` (or `streamlit run streamlit_app.py -- --model DIR`). The model folder
is `--model`, else $FERBENCH_MODEL, else models/selected (after `dvc repro`), else the released
model trained on FER-2013 (models/released/); the page says which and what it learned from.
Faces are found with YuNet (its file from `-- --detector-model FILE`, else the cache, else fetched
once from the OpenCV model zoo) or, when chosen in the sidebar or with `-- --detector haar`,
OpenCV's Haar cascade.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from ferbench.data.decode import DEFAULT_PHOTO_PIXELS, UndecodableImage, decode_rgb
from ferbench.errors import FerbenchError
from ferbench.models.folder import EmotionModel
from ferbench.provenance import SYNTHETIC_WARNING
from ferbench.serving.faces import DETECTORS, FaceDetector, build_detector
from ferbench.serving.inference import (
    EmotionRecognizer,
    FaceResult,
    ModelChoice,
    choose_model_folder,
    draw_results,
)
from ferbench.serving.video import (
    MAX_TIMELINES,
    TABLE_FILE,
    TRACKS_FILE,
    VIDEO_DEFAULTS,
    VIDEO_SUFFIXES,
    VideoOptions,
    analyse_video,
)

MAX_UPLOAD_MB = 10  # photos; videos up to the server's cap (.streamlit/config.toml: server.maxUploadSize)
MAX_VIDEO_MB = 200
MODES = ("Live webcam", "Snapshot", "Upload a photo", "Upload a video")
LOG_EVERY_FRAMES = 90
LIVE_MAX_MISSING_FRAMES = 15  # a face unseen this many webcam frames (about half a second) gets a new track


def app_arguments() -> argparse.Namespace:
    """The app's own options, after `--` on the streamlit command line."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--detector", choices=DETECTORS, default="yunet")
    parser.add_argument("--detector-model", type=Path)
    args, _ = parser.parse_known_args()
    args.choice = choose_model_folder(args.model)
    return args


@st.cache_resource
def load_model(folder: str) -> EmotionModel:
    return EmotionModel(folder)


def session_detector(name: str, video: bool, model_file: str | None) -> FaceDetector:
    """The face detector with these settings, built once per browser session (not on every rerun). Not
    shared between sessions: OpenCV's detectors are not safe to call from two threads at once."""
    key = f"detector:{name}:{video}:{model_file}"
    if key not in st.session_state:
        st.session_state[key] = build_detector(name, video=video, model_file=model_file)
    return st.session_state[key]


def synthetic_banner(model: EmotionModel) -> None:
    """A warning no one can miss when the model learned from the synthetic demo faces."""
    if model.card.trained_on_synthetic_data:
        st.warning(SYNTHETIC_WARNING)


@dataclass(frozen=True)
class Settings:
    """The sidebar's choices: how faces are found and framed, and how videos are tracked (live and uploaded
    alike; the video numbers are checked by `VideoOptions`, which also holds their defaults)."""

    detector: str
    align: bool
    margin: float
    video: VideoOptions

    def recognizer(self, model: EmotionModel, detector: FaceDetector) -> EmotionRecognizer:
        """A recognizer for photos (no smoothing: each photo stands alone)."""
        return EmotionRecognizer(model, detector, align=self.align, margin=self.margin, smoothing=0.0)


def sidebar(model: EmotionModel, default_detector: str) -> Settings:
    card = model.card
    st.sidebar.header("Model")
    st.sidebar.markdown(f"**{card.backbone}** (`{card.spec.model}`), {card.variant} on {card.runtime}")
    metrics, latency, selection = card.metrics, card.latency, card.selection
    if metrics is not None:
        synthetic = " (synthetic faces)" if card.trained_on_synthetic_data else ""
        st.sidebar.metric("Test accuracy" + synthetic, f"{metrics.test_accuracy:.1%}")
        st.sidebar.caption(
            f"{metrics.test_leakage_free_accuracy:.1%} on the test images that do not also occur in the training folder"
        )
    if latency is not None:
        st.sidebar.metric(
            "CPU latency (p50, batch 1)",
            f"{latency.p50_ms:.2f} ms" if latency.p50_ms < 10 else f"{latency.p50_ms:.1f} ms",
        )
    views = card.tta.views
    st.sidebar.caption(
        (f"Test-time augmentation: {views} views per face. " if views > 1 else "No test-time augmentation. ")
        + f"Probabilities calibrated with temperature {card.temperature:.2f}."
    )
    if selection is not None:
        st.sidebar.markdown(f"Criterion: `{selection.criterion.name}`")
        with st.sidebar.expander("Why this model"):
            st.write(selection.reason)
    st.sidebar.caption(f"Classes: {', '.join(model.classes)}. Folder: {model.folder}")
    st.sidebar.header("Settings")
    detector = st.sidebar.selectbox(
        "Face detector",
        DETECTORS,
        index=DETECTORS.index(default_detector),
        help="yunet: OpenCV's CNN with landmarks (finds turned and tilted faces); "
        "haar: OpenCV's bundled cascade, frontal faces only",
    )
    align = st.sidebar.checkbox(
        "Align faces (level the eyes)",
        value=True,
        help="rotate each face upright from YuNet's eye landmarks before classifying",
    )
    smoothing = st.sidebar.slider(
        "Smoothing over video frames",
        0.0,
        0.9,
        VIDEO_DEFAULTS.smoothing,
        0.05,
        help="weight of the previous frames' probabilities (0: none); live and uploaded videos",
    )
    margin = st.sidebar.slider(
        "Extra margin around each face",
        -0.2,
        0.4,
        0.0,
        0.05,
        help="context added around FER-2013's framing, as a share of its side (0: the "
        "framing the model was trained on)",
    )
    detect_every = st.sidebar.slider(
        "Detect faces every N video frames",
        1,
        5,
        VIDEO_DEFAULTS.detect_every,
        help="boxes are reused in between; every frame is classified (live and uploaded videos)",
    )
    video = replace(VIDEO_DEFAULTS, smoothing=float(smoothing), detect_every=int(detect_every))
    return Settings(str(detector), bool(align), float(margin), video)


def show_results(rgb: np.ndarray, faces: list[FaceResult], classes: list[str]) -> None:
    st.image(draw_results(rgb, faces), caption=f"{len(faces)} face(s)", use_container_width=True)
    if not faces:
        st.warning("No face found. Try a photo with a frontal, well-lit face that is not too small.")
        return
    rows = [
        {"face": index + 1, "emotion": face.label, **{name: face.probabilities[name] for name in classes}}
        for index, face in enumerate(faces)
    ]
    st.dataframe(pd.DataFrame(rows).style.format(dict.fromkeys(classes, "{:.1%}")), hide_index=True)


def analyze_bytes(data: bytes | None, name: str, recognizer: EmotionRecognizer, classes: list[str]) -> None:
    """Decode, detect, classify and show; every failure becomes a message, never a crash."""
    if data is None:
        return
    if len(data) > MAX_UPLOAD_MB * 1024 * 1024:
        st.error(f"{name} is {len(data) / 2**20:.1f} MB; the limit is {MAX_UPLOAD_MB} MB.")
        return
    try:
        rgb = decode_rgb(data, DEFAULT_PHOTO_PIXELS)
    except UndecodableImage as exc:
        st.error(f"Cannot read {name}: {exc}. Upload a JPEG, PNG, BMP or WebP photo.")
        return
    try:
        faces = recognizer.analyze(rgb)
    except Exception as exc:  # OpenCV's detectors fail in their own ways on odd images: a message, not a crash
        st.error(f"Face detection failed on {name} ({type(exc).__name__}). Try another photo.")
        return
    show_results(rgb, faces, classes)


def analyze_video_upload(
    data: bytes | None, name: str, recognizer: EmotionRecognizer, options: VideoOptions, classes: list[str]
) -> None:
    """The predict CLI's video analysis with a progress bar, with the sidebar's tracking settings (`options`):
    a timeline per track, the summary, the table."""
    if data is None:
        return
    if len(data) > MAX_VIDEO_MB * 1024 * 1024:
        st.error(f"{name} is {len(data) / 2**20:.0f} MB; the limit is {MAX_VIDEO_MB} MB.")
        return
    bar = st.progress(0.0, text=f"Analysing {name}")

    def progress(done: int, total: int, step: str) -> None:
        if total and (done % 10 == 0 or step != "frame"):
            bar.progress(min(1.0, done / total), text=f"Analysing {name}: {step} {done} of {total}")

    with tempfile.TemporaryDirectory(prefix="ferbench-video-") as scratch:
        path = Path(scratch) / f"upload{Path(name).suffix.lower()}"
        path.write_bytes(data)
        try:
            result = analyse_video(path, recognizer, Path(scratch) / "out", options, progress)
        except FerbenchError as exc:
            bar.empty()
            st.error(f"Cannot analyse {name}: {str(exc).removeprefix(f'{path}: ')}")
            return
        except Exception as exc:  # OpenCV and FFmpeg fail in their own ways on odd files: a message, not a crash
            bar.empty()
            st.error(f"Cannot analyse {name} ({type(exc).__name__}). Try another video.")
            return
        table = pd.read_csv(result.out / TABLE_FILE)
        table_csv = (result.out / TABLE_FILE).read_bytes()
        summary = pd.read_csv(result.out / TRACKS_FILE)
    bar.empty()
    if result.stopped_at is not None:
        st.warning(f"{name} breaks off at {result.stopped_at:.1f} s; the results cover the video up to there.")
    if table.empty:
        st.warning(f"No face found in {name}. Try a video with frontal, well-lit faces that are not too small.")
        return
    st.subheader(f"{len(summary)} face track(s) over {result.seconds_covered:.1f} s")
    st.dataframe(summary, hide_index=True)
    charted = summary.nlargest(MAX_TIMELINES, "frames_analysed")["track"]  # a flickering video makes hundreds
    for track, rows in table[table["track"].isin(charted)].groupby("track"):
        st.markdown(f"**Track {track}**")
        timeline = rows.set_index("time_s")[[f"p_{name}" for name in classes]]
        st.line_chart(timeline.rename(columns=lambda column: column.removeprefix("p_")))
    st.download_button("Download the table (CSV)", table_csv, file_name=f"{Path(name).stem}-faces.csv")


def live(model: EmotionModel, detector: FaceDetector, settings: Settings) -> None:
    import av
    from streamlit_webrtc import WebRtcMode, webrtc_streamer

    recognizer = settings.recognizer(model, detector).with_tracking(
        settings.video.smoothing, settings.video.detect_every, LIVE_MAX_MISSING_FRAMES
    )
    lock = threading.Lock()
    clock = {"last": None, "fps": None, "frames": 0}

    def on_frame(frame: av.VideoFrame) -> av.VideoFrame:
        rgb = frame.to_ndarray(format="rgb24")
        with lock:
            faces = recognizer.process_frame(rgb)
            now = time.perf_counter()
            if clock["last"] is not None:
                rate = 1.0 / max(now - clock["last"], 1e-6)
                clock["fps"] = rate if clock["fps"] is None else 0.9 * clock["fps"] + 0.1 * rate
            clock["last"] = now
            fps = clock["fps"]
            clock["frames"] += 1
            if faces and clock["frames"] % LOG_EVERY_FRAMES == 1:  # a trace in the server log, every few seconds
                labels = ", ".join(f"{face.label} {face.probabilities[face.label]:.2f}" for face in faces)
                print(f"live: frame {clock['frames']}: {len(faces)} face(s): {labels}; {fps or 0:.1f} FPS", flush=True)
        return av.VideoFrame.from_ndarray(draw_results(rgb, faces, fps=fps), format="rgb24")

    st.caption(
        "Allow the camera in your browser, then press START. Boxes, labels, probabilities and the measured "
        "FPS are drawn on the video."
    )
    webrtc_streamer(
        key="live",
        mode=WebRtcMode.SENDRECV,
        video_frame_callback=on_frame,
        media_stream_constraints={"video": True, "audio": False},
        rtc_configuration={"iceServers": []},
        async_processing=True,
    )


def main() -> None:
    st.set_page_config(page_title="ferbench: facial emotions", layout="wide")
    st.title("Facial emotion recognition")
    args = app_arguments()
    choice: ModelChoice = args.choice
    try:
        model = load_model(str(choice.folder))
    except FerbenchError as exc:
        st.error(f"{exc}")
        st.info("Pass a model folder with `make app MODEL=DIR` (or `-- --model DIR`), or run `dvc repro` first.")
        return
    st.caption(f"Model: {model.card.summary()}. Folder {choice.folder} ({choice.origin}).")
    synthetic_banner(model)
    settings = sidebar(model, args.detector)
    mode = st.radio(
        "Mode", MODES, horizontal=True, help="Live needs WebRTC in the browser; Snapshot and Upload work everywhere"
    )
    model_file = str(args.detector_model) if args.detector_model else None
    try:
        detector = session_detector(settings.detector, mode in (MODES[0], MODES[3]), model_file)
    except FerbenchError as exc:
        st.error(f"{exc}")
        st.info("Choose the haar detector in the sidebar, or start the app with `-- --detector-model FILE`.")
        return
    st.caption(
        f"Faces: {detector.name}" + (", aligned (eyes levelled)" if settings.align and detector.can_align else "")
    )
    recognizer = settings.recognizer(model, detector)
    if mode == MODES[0]:
        try:
            live(model, detector, settings)
        except Exception as exc:  # WebRTC needs a running Streamlit server and a browser that supports it
            st.error(f"Live mode is not available here ({type(exc).__name__}: {exc}). Use Snapshot or Upload.")
    elif mode == MODES[1]:
        shot = st.camera_input("Take a snapshot")
        analyze_bytes(shot.getvalue() if shot else None, "the snapshot", recognizer, model.classes)
    elif mode == MODES[2]:
        upload = st.file_uploader(f"A photo (up to {MAX_UPLOAD_MB} MB)", type=["jpg", "jpeg", "png", "bmp", "webp"])
        analyze_bytes(upload.getvalue() if upload else None, upload.name if upload else "", recognizer, model.classes)
    else:
        upload = st.file_uploader(
            f"A video (up to {MAX_VIDEO_MB} MB)", type=[suffix.removeprefix(".") for suffix in VIDEO_SUFFIXES]
        )
        data, name = (upload.getvalue(), upload.name) if upload else (None, "")
        analyze_video_upload(data, name, recognizer, settings.video, model.classes)
