"""Emotions of every face through a video file: a row per face and frame, a summary per track, a
timeline per track and, on request, an annotated copy.

Frames are read as a stream (OpenCV's FFmpeg reader), so memory does not grow with the video's
length: the table is written row by row, and a track keeps only its running sums and its
timeline (8 numbers a frame). Faces are detected every `detect_every` analysed frames and moved
on by their tracks in between (`ferbench.serving.tracking`); probabilities are smoothed per track.
"""

from __future__ import annotations

import csv
import json
import math
import os
import stat
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from ferbench.data.decode import shape_problem
from ferbench.errors import FerbenchError
from ferbench.files import regular_file, safe_row
from ferbench.serving.inference import EmotionRecognizer, FaceResult, draw_results

VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".gif")
MAX_FRAME_PIXELS = 2_100_000  # 1920x1080; a 4K frame costs four times the detection for little gain
FRAME_PIXELS_LIMIT = 35_400_000  # the most --max-frame-pixels may allow: an 8K frame (7680x4320) and a little more
MAX_EVERY = 100_000  # --every and --detect-every: more frames than an hour of 25 fps video
TIMELINE_MIN_SECONDS = 1.0  # a track gets its own timeline plot once it was in view this long,
MAX_TIMELINES = 20  # and only the longest this many do: a flickering video makes hundreds of short tracks
REPORTED_TRACKS = 20  # tracks summed up on the stdout line (longest first); tracks.csv has them all
FALLBACK_FPS = 25.0  # when a file does not say its frame rate (some GIFs, raw streams)
TABLE_FILE, JSONL_FILE, TRACKS_FILE, ANNOTATED_FILE = "faces.csv", "faces.jsonl", "tracks.csv", "annotated.mp4"


Progress = Callable[[int, int, str], None]  # (done, total, step): step "frame", then "timeline"


def is_video(path: Path) -> bool:
    """A file to analyse as a video: by its suffix, and for a GIF only when it is animated (a still GIF
    is a photo)."""
    suffix = path.suffix.lower()
    if suffix != ".gif":
        return suffix in VIDEO_SUFFIXES
    from PIL import Image

    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return False  # a FIFO would wait for ever: the photo path reports it
        with Image.open(path) as image:
            return bool(getattr(image, "is_animated", False))
    except (OSError, ValueError, SyntaxError):
        return False  # not readable as a GIF: the photo path says why


@dataclass(frozen=True)
class VideoOptions:
    """What to analyse and what to write: the predict CLI's video flags, the app's video settings and the
    HTTP API's video jobs all build one, so each default is written here only (`VIDEO_DEFAULTS`)."""

    every: int = 1  # classify every Nth frame
    detect_every: int = 2  # detect faces every Nth analysed frame; tracks carry them in between
    start: float = 0.0  # seconds
    end: float | None = None  # seconds; None: to the end
    smoothing: float = 0.5  # weight of a track's past in its probabilities
    missing_seconds: float = 1.0  # a face unseen for longer gets a new id when it comes back
    jsonl: bool = False
    annotate: bool = False
    max_frame_pixels: int = MAX_FRAME_PIXELS

    def __post_init__(self) -> None:
        if not (1 <= self.every <= MAX_EVERY and 1 <= self.detect_every <= MAX_EVERY):
            raise FerbenchError(f"--every and --detect-every take 1 to {MAX_EVERY:,} frames")
        if not 1 <= self.max_frame_pixels <= FRAME_PIXELS_LIMIT:
            raise FerbenchError(f"--max-frame-pixels {self.max_frame_pixels}: use 1 to {FRAME_PIXELS_LIMIT:,} pixels")
        if not math.isfinite(self.start) or self.start < 0:
            raise FerbenchError(f"--start {self.start}: use seconds from 0")
        if self.end is not None and (not math.isfinite(self.end) or self.end <= self.start):
            raise FerbenchError(f"--end {self.end}: use seconds after --start ({self.start:g})")
        if not 0 <= self.smoothing < 1:
            raise FerbenchError(f"--smoothing {self.smoothing}: use a weight in [0, 1)")
        if not 0 <= self.missing_seconds <= 60:
            raise FerbenchError(f"--missing-seconds {self.missing_seconds}: use 0 to 60 seconds")


VIDEO_DEFAULTS = VideoOptions()


@dataclass
class VideoInfo:
    width: int
    height: int
    fps: float
    frames: int  # as the container says (0 when unknown)

    @property
    def duration(self) -> float:
        return self.frames / self.fps


class VideoReader:
    """Frames of a video file as RGB arrays, checked before the first frame is decoded."""

    def __init__(self, path: Path, max_frame_pixels: int = MAX_FRAME_PIXELS) -> None:
        import cv2

        info = regular_file(path, "video")
        if info.st_size == 0:
            raise FerbenchError(f"{path}: empty file")
        self.path = path
        # FFmpeg and OpenCV print their own complaints about a bad file; the error below says it in one line
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # read when FFmpeg opens a file: quiet
        level = cv2.utils.logging.getLogLevel()
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # while opening only
        try:
            self.capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
        finally:
            cv2.utils.logging.setLogLevel(level)
        if not self.capture.isOpened():
            raise FerbenchError(
                f"{path}: not a video OpenCV can read (not a video, audio only, an unknown codec, or truncated)"
            )
        width = int(self.capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(self.capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if width <= 0 or height <= 0:
            self.close()
            raise FerbenchError(f"{path}: has no video stream (an audio-only file?)")
        problem = shape_problem(width, height, "video")
        if problem:
            self.close()
            raise FerbenchError(f"{path}: {problem}")
        if width * height > max_frame_pixels:
            self.close()
            raise FerbenchError(
                f"{path}: frames are {width}x{height}; at most {max_frame_pixels:,} pixels a frame "
                "(downscale it first, e.g. ffmpeg -i IN -vf scale=1280:-2 OUT, or raise --max-frame-pixels)"
            )
        fps = float(self.capture.get(cv2.CAP_PROP_FPS))
        frames = max(0, int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT)))
        self.info = VideoInfo(width, height, fps if math.isfinite(fps) and 0 < fps <= 1000 else FALLBACK_FPS, frames)

    def frames(self) -> Iterator[np.ndarray]:
        """Every frame, RGB uint8, until the file ends or breaks."""
        import cv2

        while True:
            ok, bgr = self.capture.read()
            if not ok or bgr is None:
                return
            yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def skip(self) -> bool:
        """Move past one frame without converting it; False at the end."""
        return bool(self.capture.grab())

    def close(self) -> None:
        self.capture.release()


@dataclass
class TrackSummary:
    """Running sums of one track: enough for its summary row and its timeline (32 bytes a frame), never
    its frames."""

    track: int
    classes: list[str]
    first: float = math.inf
    last: float = 0.0
    rows: int = 0
    label_counts: np.ndarray = field(default=None)  # type: ignore[assignment]
    confidence_sum: float = 0.0
    timeline: array = field(default_factory=lambda: array("f"))  # time and probabilities, 4 bytes each

    def __post_init__(self) -> None:
        self.label_counts = np.zeros(len(self.classes), np.int64)

    def add(self, seconds: float, face: FaceResult) -> None:
        probabilities = [face.probabilities[name] for name in self.classes]
        self.first, self.last = min(self.first, seconds), max(self.last, seconds)
        self.rows += 1
        self.label_counts[self.classes.index(face.label)] += 1
        self.confidence_sum += max(probabilities)
        self.timeline.extend((seconds, *probabilities))

    def row(self, frame_seconds: float) -> dict[str, Any]:
        shares = self.label_counts / max(1, self.rows)
        return {
            "track": self.track,
            "first_s": round(self.first, 3),
            "last_s": round(self.last, 3),
            "seconds_in_view": round(self.rows * frame_seconds, 3),
            "frames_analysed": self.rows,
            **{f"share_{name}": round(float(share), 4) for name, share in zip(self.classes, shares, strict=True)},
            "dominant": self.classes[int(self.label_counts.argmax())],
            "mean_confidence": round(self.confidence_sum / max(1, self.rows), 4),
        }


@dataclass
class VideoResult:
    """What one analysis wrote and saw."""

    out: Path
    info: VideoInfo
    frames_analysed: int
    stopped_at: float | None  # seconds where the file broke off before its announced end, else None
    tracks: list[dict[str, Any]]  # every track's summary row (tracks.csv), by track id
    seconds_covered: float = 0.0  # of video, from the first frame read to the last
    detector_failures: int = 0  # frames on which the face detector raised (counted as frames without a face)
    timelines: int = 0  # timeline plots written (the longest tracks only)

    def to_dict(self) -> dict[str, Any]:
        """The stdout record: bounded in size however many tracks the video made (the longest few; tracks.csv
        holds every one)."""
        longest = sorted(self.tracks, key=lambda row: -row["frames_analysed"])[:REPORTED_TRACKS]
        record: dict[str, Any] = {
            "out": str(self.out),
            "duration_s": round(self.info.duration, 3),
            "fps": round(self.info.fps, 3),
            "seconds_analysed": round(self.seconds_covered, 3),
            "frames_analysed": self.frames_analysed,
            "track_count": len(self.tracks),
            "tracks": sorted(longest, key=lambda row: row["track"]),
            "timelines": self.timelines,
        }
        if self.detector_failures:
            record["detector_failures"] = self.detector_failures
        if self.stopped_at is not None:
            record["stopped_at_s"] = round(self.stopped_at, 3)
        return record

    def describe(self) -> str:
        """What the analysis covered, for a person: tracks, seconds and frames, timelines."""
        skipped = len(self.tracks) - self.timelines
        plots = f"; a timeline for {self.timelines}"
        if skipped:
            plots += f" (not for {skipped} shorter than {TIMELINE_MIN_SECONDS:g} s or past the longest {MAX_TIMELINES})"
        return (
            f"{len(self.tracks)} track(s) over {self.seconds_covered:.1f} s of video, "
            f"{self.frames_analysed} frames analysed{plots}"
        )


def table_columns(classes: list[str]) -> list[str]:
    """The per-frame, per-face table's header."""
    return ["time_s", "frame", "track", "x", "y", "width", "height", *[f"p_{c}" for c in classes], "label"]


def prepare_output_folder(out: Path) -> None:
    """A new or empty folder: results never overwrite files that are already there."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FerbenchError(f"{out}: exists and is not an empty folder; choose a new one for the results (--out)")
    out.mkdir(parents=True, exist_ok=True)


def analyse_video(
    path: Path,
    recognizer: EmotionRecognizer,
    out: Path,
    options: VideoOptions,
    progress: Progress | None = None,
) -> VideoResult:
    """Analyse one video into `out`; `progress(done, total, "frame")` after each frame read, then
    `progress(done, total, "timeline")` after each timeline plotted."""
    reader = VideoReader(path, options.max_frame_pixels)
    try:
        return _analyse(reader, recognizer, out, options, progress)
    finally:
        reader.close()


def _analyse(
    reader: VideoReader,
    recognizer: EmotionRecognizer,
    out: Path,
    options: VideoOptions,
    progress: Progress | None,
) -> VideoResult:
    info = reader.info
    if info.frames and options.start >= info.duration:
        raise FerbenchError(f"{reader.path}: --start {options.start:g} s is past the end ({info.duration:.1f} s)")
    first = round(options.start * info.fps)
    last = info.frames if options.end is None else round(options.end * info.fps)
    if info.frames:
        last = min(last, info.frames)
    prepare_output_folder(out)
    classes = list(recognizer.model.classes)
    frame_seconds = options.every / info.fps
    recognizer = recognizer.with_tracking(
        options.smoothing, options.detect_every, math.ceil(options.missing_seconds / frame_seconds)
    )
    summaries: dict[int, TrackSummary] = {}
    total = max(0, last - first)
    index, analysed, stopped_at = 0, 0, None
    with open(out / TABLE_FILE, "w", newline="") as table, _optional(out / JSONL_FILE, options.jsonl) as jsonl:
        writer = csv.writer(table)
        writer.writerow(safe_row(table_columns(classes)))
        annotated = _writer(out / ANNOTATED_FILE, info, options) if options.annotate else None
        try:
            while index < first and reader.skip():
                index += 1
            for rgb in reader.frames():
                if index >= last and (info.frames or options.end is not None):
                    break
                if (index - first) % options.every == 0:
                    seconds = index / info.fps
                    faces = recognizer.process_frame(rgb)
                    analysed += 1
                    for face in faces:
                        writer.writerow(
                            [f"{seconds:.3f}", index, face.track, *face.box]
                            + [f"{face.probabilities[c]:.6f}" for c in classes]
                            + safe_row([face.label])
                        )
                        summaries.setdefault(face.track, TrackSummary(face.track, classes)).add(seconds, face)
                        if jsonl:
                            jsonl.write(json.dumps({"time_s": round(seconds, 3), "frame": index, **face.to_dict()}))
                            jsonl.write("\n")
                    if annotated is not None:
                        annotated.write(_annotate(rgb, faces))
                index += 1
                if progress:
                    progress(index - first, total, "frame")
        finally:
            if annotated is not None:
                annotated.release()
    if index <= first:
        raise FerbenchError(f"{reader.path}: no frame could be read from {options.start:g} s on (zero frames?)")
    if info.frames and index < last - 1:  # a frame short of the count is the container rounding, not a break
        stopped_at = index / info.fps
    rows = [summaries[track].row(frame_seconds) for track in sorted(summaries)]
    write_track_table(out / TRACKS_FILE, rows)
    plotted = timeline_tracks(summaries.values(), frame_seconds)
    for done, summary in enumerate(plotted, start=1):
        plot_timeline(out / f"timeline-track-{summary.track}.png", summary)
        if progress:
            progress(done, len(plotted), "timeline")
    seconds = (index - first) / info.fps
    return VideoResult(out, info, analysed, stopped_at, rows, seconds, recognizer.detector_failures, len(plotted))


def timeline_tracks(summaries: Iterable[TrackSummary], frame_seconds: float) -> list[TrackSummary]:
    """The tracks that get a timeline plot: in view for TIMELINE_MIN_SECONDS or more, the MAX_TIMELINES
    longest of them (by track id)."""
    long_enough = [summary for summary in summaries if summary.rows * frame_seconds >= TIMELINE_MIN_SECONDS]
    longest = sorted(long_enough, key=lambda summary: (-summary.rows, summary.track))[:MAX_TIMELINES]
    return sorted(longest, key=lambda summary: summary.track)


class _optional:
    """A text file to write when wanted, else None (one `with` for both)."""

    def __init__(self, path: Path, wanted: bool) -> None:
        self.handle: IO[str] | None = open(path, "w") if wanted else None  # noqa: SIM115 (closed in __exit__)

    def __enter__(self) -> IO[str] | None:
        return self.handle

    def __exit__(self, *exc: object) -> None:
        if self.handle:
            self.handle.close()


def _writer(path: Path, info: VideoInfo, options: VideoOptions) -> Any:
    import cv2

    writer = cv2.VideoWriter(
        str(path), cv2.VideoWriter_fourcc(*"mp4v"), info.fps / options.every, (info.width, info.height)
    )
    if not writer.isOpened():
        raise FerbenchError(f"{path}: OpenCV cannot write an MP4 here; run without --annotate")
    return writer


def _annotate(rgb: np.ndarray, faces: list[FaceResult]) -> np.ndarray:
    import cv2

    drawn = draw_results(rgb, faces)
    for face in faces:
        x, y, _, h = face.box
        cv2.putText(drawn, f"#{face.track}", (x, y + h + 18), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 0), 2)
    return cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR)


def write_track_table(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="") as handle:
        if not rows:
            handle.write("track\n")
            return
        writer = csv.writer(handle)
        writer.writerow(safe_row(rows[0]))
        writer.writerows(safe_row(row.values()) for row in rows)


def plot_timeline(path: Path, summary: TrackSummary) -> None:
    """The track's probability of every emotion against time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timeline = np.frombuffer(summary.timeline, dtype=np.float32).reshape(-1, 1 + len(summary.classes))
    figure, axis = plt.subplots(figsize=(9, 3.2), constrained_layout=True)
    for column, name in enumerate(summary.classes, start=1):
        axis.plot(timeline[:, 0], timeline[:, column], label=name, linewidth=1.4)
    axis.set(
        xlabel="time (s)",
        ylabel="probability",
        ylim=(0, 1),
        title=f"track {summary.track}: {summary.row(0)['dominant']} most of the time",
    )
    axis.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    figure.savefig(path, dpi=100)
    plt.close(figure)
