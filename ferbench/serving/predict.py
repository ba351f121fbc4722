"""Recognise emotions in photos and videos: one JSON line per file on stdout.

A photo's line: {"file": ..., "faces": [{"box": [x, y, w, h], "label": ..., "probabilities": {...}}]}.
An image without a face gets "faces": [] and a note; a file that cannot be read gets an
"error" line (and a message on stderr) and the run goes on.

A video (.mp4 .mov .avi .mkv .webm .m4v, an animated .gif) is followed face by face: each face keeps a track
id while it is in view (one that leaves for longer than --missing-seconds comes back with a new
id). Its results go to a folder (--out, default NAME-emotions/): faces.csv (a row per face and
analysed frame: time, frame, track, box, the 7 calibrated probabilities, label), tracks.csv
(per track: seconds in view, share of each emotion, dominant emotion, mean confidence),
timeline-track-N.png, and on request faces.jsonl and annotated.mp4; its stdout line sums it up.

Exit status: 0 when every file was read, 1 when some photo could not be read or a video broke off
part-way (its rows up to there are written), 2 on a usage or model error or a video that cannot
be analysed.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import stat
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ferbench.data.decode import UndecodableImage, decode_rgb
from ferbench.errors import FerbenchError
from ferbench.files import NOT_REGULAR
from ferbench.models.folder import EmotionModel
from ferbench.serving.faces import DETECTORS, WholeImage, build_detector
from ferbench.serving.inference import (
    MODEL_ORDER,
    EmotionRecognizer,
    FaceResult,
    choose_model_folder,
)
from ferbench.serving.video import MAX_FRAME_PIXELS, VideoOptions, analyse_video, is_video


def image_files(paths: Sequence[Path]) -> Iterator[Path]:
    """Files as given, and every non-hidden file under a folder (sorted), so bad files get reported too."""
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        else:
            yield path


MAX_IMAGE_MB = 50  # a photo is a few MB; a larger "image" is read whole only to be refused


def read_image_bytes(path: Path, max_mb: float = MAX_IMAGE_MB) -> bytes:
    """A photo's bytes: only a regular file (a FIFO would wait forever, /dev/zero never ends) of bounded size."""
    info = os.stat(path)
    if not stat.S_ISREG(info.st_mode):
        raise UndecodableImage(NOT_REGULAR)
    if info.st_size > max_mb * 1024 * 1024:
        raise UndecodableImage(f"too large ({info.st_size / 2**20:,.0f} MB; the limit is {max_mb:g} MB)")
    with open(path, "rb") as handle:
        return handle.read(int(max_mb * 1024 * 1024) + 1)


def shown(path: Path) -> str:
    """A path as text that any terminal can print (bytes that are not UTF-8 shown as escapes)."""
    return str(path).encode("utf-8", "backslashreplace").decode("utf-8")


def predict_file(recognizer: EmotionRecognizer, path: Path, max_pixels: int) -> tuple[dict[str, Any], list[FaceResult]]:
    try:
        rgb = decode_rgb(read_image_bytes(path), max_pixels)
    except (OSError, UndecodableImage) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return {"file": str(path), "error": reason}, []
    try:
        faces = recognizer.analyze(rgb)
    except Exception as exc:  # OpenCV's detectors fail in their own ways on odd images: one bad file, not the run
        return {"file": str(path), "error": f"face detection failed ({type(exc).__name__})"}, []
    record: dict[str, Any] = {"file": str(path), "faces": [face.to_dict() for face in faces]}
    if not faces:
        record["note"] = "no face found"
    return record, faces


def predict_video(recognizer: EmotionRecognizer, path: Path, out: Path, options: VideoOptions) -> int:
    """Analyse one video into `out` with a progress bar; its exit code (0 done, 1 broke off, 2 refused)."""
    from tqdm import tqdm

    bars: list[tqdm] = []  # made at the first frame: a refused video prints its one line alone

    def progress(done: int, total: int) -> None:
        if not bars:
            bars.append(tqdm(desc=shown(path), total=total or None, unit="frame", file=sys.stderr, leave=False))
        bars[0].update(done - bars[0].n)

    try:
        result = analyse_video(path, recognizer, out, options, progress)
    except FerbenchError as exc:
        print(f"predict: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the results folder: not writable, a path under a file, the disk full
        print(
            f"predict: error: cannot write the results of {shown(path)} to {shown(out)} ({exc.strerror or exc})",
            file=sys.stderr,
        )
        return 2
    finally:
        for bar in bars:
            bar.close()
    print(json.dumps({"file": str(path), "video": result.to_dict()}), flush=True)
    seconds = result.frames_analysed * options.every / result.info.fps
    print(
        f"predict: {shown(path)}: {len(result.tracks)} track(s) over {seconds:.1f} s of video, "
        f"{result.frames_analysed} frames analysed; results in {shown(out)}",
        file=sys.stderr,
    )
    if result.stopped_at is not None:
        print(
            f"predict: {shown(path)}: the video breaks off at {result.stopped_at:.2f} s "
            f"(of {result.info.duration:.2f} s); the rows up to there are written",
            file=sys.stderr,
        )
        return 1
    return 0


def write_csv(path: Path, rows: list[tuple[dict[str, Any], list[FaceResult]]], classes: Sequence[str]) -> None:
    """One row per face (a file without faces, or unreadable, gets one row with an empty face)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", errors="surrogateescape") as handle:  # file names as they were on disk
        writer = csv.writer(handle)
        writer.writerow(["file", "face", "x", "y", "width", "height", "label", *[f"p_{c}" for c in classes], "error"])
        for record, faces in rows:
            if not faces:
                writer.writerow(
                    [
                        record["file"],
                        "",
                        "",
                        "",
                        "",
                        "",
                        "",
                        *[""] * len(classes),
                        record.get("error", record.get("note", "")),
                    ]
                )
            for index, face in enumerate(faces):
                writer.writerow(
                    [
                        record["file"],
                        index,
                        *face.box,
                        face.label,
                        *[f"{face.probabilities[c]:.6f}" for c in classes],
                        "",
                    ]
                )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ferbench-predict",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "paths", nargs="+", type=Path, metavar="PATH", help="image files or folders (searched recursively)"
    )
    parser.add_argument(
        "--model",
        type=Path,
        default=None,
        help=f"model folder with model_card.json (default: {MODEL_ORDER})",
    )
    parser.add_argument("--csv", type=Path, metavar="FILE", help="also write a table, one row per face")
    parser.add_argument(
        "--detector",
        choices=DETECTORS,
        default="yunet",
        help="face detector: yunet (OpenCV's CNN, with landmarks; default) or haar (OpenCV's "
        "bundled cascade: no file to fetch, misses turned and tilted faces)",
    )
    parser.add_argument(
        "--detector-model",
        type=Path,
        metavar="FILE",
        help="local YuNet model file (face_detection_yunet_2023mar.onnx) for offline use; default: "
        "the cached copy, fetched once from the OpenCV model zoo",
    )
    parser.add_argument(
        "--no-align",
        dest="align",
        action="store_false",
        help="do not rotate YuNet's faces to level the eyes before classifying (Haar faces never are)",
    )
    parser.add_argument(
        "--margin",
        type=float,
        default=0.0,
        help="extra context around FER-2013's framing of each face, as a share of its side "
        "(default 0: the framing the model was trained on)",
    )
    parser.add_argument(
        "--whole-image",
        action="store_true",
        help="skip face detection: each image is one face (for already-cropped faces such as FER-2013)",
    )
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for the model (0: all cores)")
    video = parser.add_argument_group("videos")
    video.add_argument(
        "--out", type=Path, metavar="DIR", help="a new folder for a video's results (several videos: one inside each)"
    )
    video.add_argument("--every", type=int, default=1, metavar="N", help="classify every Nth frame (default 1)")
    video.add_argument(
        "--detect-every",
        type=int,
        default=2,
        metavar="N",
        help="detect faces every Nth classified frame; tracks carry them in between (default 2)",
    )
    video.add_argument("--start", type=float, default=0.0, metavar="S", help="start at S seconds")
    video.add_argument("--end", type=float, default=None, metavar="S", help="stop at S seconds (default: the end)")
    video.add_argument(
        "--smoothing", type=float, default=0.5, help="weight of a track's past in its probabilities (0: none)"
    )
    video.add_argument(
        "--missing-seconds",
        type=float,
        default=1.0,
        help="a face unseen for longer gets a new track id when it comes back (default 1)",
    )
    video.add_argument("--jsonl", action="store_true", help="also write faces.jsonl, a JSON line per face and frame")
    video.add_argument("--annotate", action="store_true", help="also write annotated.mp4 (boxes, track ids, labels)")
    video.add_argument(
        "--max-frame-pixels", type=int, default=MAX_FRAME_PIXELS, help="refuse videos with larger frames"
    )
    parser.add_argument("--max-pixels", type=int, default=40_000_000, help="refuse images larger than this")
    args = parser.parse_args(argv)
    try:
        choice = choose_model_folder(args.model)
        model = EmotionModel(choice.folder, threads=args.threads or None)
        detector = WholeImage() if args.whole_image else build_detector(args.detector, model_file=args.detector_model)
        recognizer = EmotionRecognizer(model, detector, align=args.align, margin=args.margin, smoothing=0.0)
        print(
            f"predict: model {model.folder} ({choice.origin}): {model.card.summary()}; faces: "
            f"{detector.name}{', aligned' if args.align and detector.can_align else ''}",
            file=sys.stderr,
        )
        options = VideoOptions(
            every=args.every,
            detect_every=args.detect_every,
            start=args.start,
            end=args.end,
            smoothing=args.smoothing,
            missing_seconds=args.missing_seconds,
            jsonl=args.jsonl,
            annotate=args.annotate,
            max_frame_pixels=args.max_frame_pixels,
        )
    except FerbenchError as exc:
        print(f"predict: error: {exc}", file=sys.stderr)
        return 2
    if args.csv and args.csv.is_dir():
        print(f"predict: error: --csv {shown(args.csv)} is a folder; name a file for the table", file=sys.stderr)
        return 2
    rows = []
    failed = 0
    paths = list(image_files(args.paths))
    videos = [path for path in paths if is_video(path)]
    try:
        for path in paths:
            if path in videos:
                out = (args.out / path.stem if len(videos) > 1 else args.out) if args.out else None
                code = predict_video(recognizer, path, out or Path(f"{path.stem}-emotions"), options)
                failed = max(failed, code)
                continue
            record, faces = predict_file(recognizer, path, args.max_pixels)
            if "error" in record:
                failed = max(failed, 1)
                print(f"predict: cannot read {shown(path)}: {record['error']}", file=sys.stderr)
            print(json.dumps(record), flush=True)
            rows.append((record, faces))
    except BrokenPipeError:  # `predict folder | head -1`: the reader has gone; stop quietly, as `cat` would
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    if not paths:
        print("predict: error: no files found under the given paths", file=sys.stderr)
        return 2
    if args.csv and rows:
        try:
            write_csv(args.csv, rows, model.classes)
        except OSError as exc:
            print(f"predict: error: cannot write --csv {shown(args.csv)} ({exc.strerror or exc})", file=sys.stderr)
            return 2
    return failed


if __name__ == "__main__":
    sys.exit(main())
