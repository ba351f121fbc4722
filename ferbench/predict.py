"""Recognise emotions in photos: one JSON line per image on stdout.

Each line: {"file": ..., "faces": [{"box": [x, y, w, h], "label": ..., "probabilities": {...}}]}.
An image without a face gets "faces": [] and a note; a file that cannot be read gets an
"error" line (and a message on stderr) and the run goes on. Exit status: 0 when every file was
read, 1 when some could not be, 2 on a usage or model error.
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
from ferbench.faces import DETECTORS, WholeImage, build_detector
from ferbench.inference import (
    MODEL_ORDER,
    EmotionModel,
    EmotionRecognizer,
    FaceResult,
    choose_model_folder,
)
from ferbench.model_folder import model_summary


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
        raise UndecodableImage("not a regular file (a folder, FIFO, device or socket)")
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
        prog="python -m ferbench.predict", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
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
    parser.add_argument("--max-pixels", type=int, default=40_000_000, help="refuse images larger than this")
    args = parser.parse_args(argv)
    try:
        choice = choose_model_folder(args.model)
        model = EmotionModel(choice.folder, threads=args.threads or None)
        detector = WholeImage() if args.whole_image else build_detector(args.detector, model_file=args.detector_model)
        recognizer = EmotionRecognizer(model, detector, align=args.align, margin=args.margin, smoothing=0.0)
        print(
            f"predict: model {model.folder} ({choice.origin}): {model_summary(model.card)}; faces: "
            f"{detector.name}{', aligned' if args.align and detector.can_align else ''}",
            file=sys.stderr,
        )
    except FerbenchError as exc:
        print(f"predict: error: {exc}", file=sys.stderr)
        return 2
    if args.csv and args.csv.is_dir():
        print(f"predict: error: --csv {shown(args.csv)} is a folder; name a file for the table", file=sys.stderr)
        return 2
    rows = []
    failed = 0
    try:
        for path in image_files(args.paths):
            record, faces = predict_file(recognizer, path, args.max_pixels)
            if "error" in record:
                failed += 1
                print(f"predict: cannot read {shown(path)}: {record['error']}", file=sys.stderr)
            print(json.dumps(record), flush=True)
            rows.append((record, faces))
    except BrokenPipeError:  # `predict folder | head -1`: the reader has gone; stop quietly, as `cat` would
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    if not rows:
        print("predict: error: no files found under the given paths", file=sys.stderr)
        return 2
    if args.csv:
        try:
            write_csv(args.csv, rows, model.classes)
        except OSError as exc:
            print(f"predict: error: cannot write --csv {shown(args.csv)} ({exc.strerror or exc})", file=sys.stderr)
            return 2
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
