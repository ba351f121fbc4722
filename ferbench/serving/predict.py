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
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from ferbench.data.decode import (
    DEFAULT_PHOTO_PIXELS,
    PHOTO_PIXELS_LIMIT,
    ImageTooLarge,
    UndecodableImage,
    decode_rgb,
)
from ferbench.errors import FerbenchError
from ferbench.files import NOT_REGULAR, check_new_output, printable, safe_row
from ferbench.models.folder import EmotionModel
from ferbench.serving.faces import DETECTORS, WholeImage, build_detector
from ferbench.serving.inference import (
    MODEL_ORDER,
    EmotionRecognizer,
    choose_model_folder,
)
from ferbench.serving.video import (
    FRAME_PIXELS_LIMIT,
    MAX_EVERY,
    VIDEO_DEFAULTS,
    VideoOptions,
    analyse_video,
    is_video,
)


@dataclass
class FileList:
    """The files to analyse, and the links under a folder that were skipped (and why)."""

    files: list[Path] = field(default_factory=list)
    skipped_links: list[tuple[Path, str]] = field(default_factory=list)


def image_files(paths: Sequence[Path]) -> FileList:
    """Files as given, and every non-hidden file under a folder (sorted), so bad files get reported too.
    Under a folder, a link is followed only to a file inside that folder; links that lead outside it, to a
    folder, nowhere or round in a loop are skipped and listed (a folder of photos should not read
    /etc/passwd, nor walk for ever)."""
    found = FileList()
    for path in paths:
        if not path.is_dir():
            found.files.append(path)
            continue
        root = path.resolve()
        inside: list[Path] = []
        for folder, dirs, names in os.walk(path):  # never into linked folders: a loop cannot start
            for name in dirs:
                if os.path.islink(os.path.join(folder, name)):
                    found.skipped_links.append((Path(folder, name), "a link to a folder"))
            for name in names:
                candidate = Path(folder, name)
                if name.startswith("."):
                    continue
                if candidate.is_symlink():
                    reason = _link_problem(candidate, root)
                    if reason:
                        found.skipped_links.append((candidate, reason))
                        continue
                inside.append(candidate)
        found.files.extend(sorted(inside))
    return found


def _link_problem(link: Path, root: Path) -> str | None:
    """Why a link under `root` is not followed, or None for a link to a file inside `root`."""
    target = Path(os.path.realpath(link))
    try:
        target.stat()
    except OSError:
        return "a broken link or a loop"
    if not target.is_relative_to(root):
        return "a link leading outside the folder"
    return None if target.is_file() else "a link to something that is not a file"


MAX_IMAGE_MB = 50  # a photo is a few MB; a larger "image" is read whole only to be refused


def read_image_bytes(path: Path, max_mb: float = MAX_IMAGE_MB) -> bytes:
    """A photo's bytes: only a regular file (a FIFO would wait forever, /dev/zero never ends) of bounded size."""
    info = os.stat(path)
    if not stat.S_ISREG(info.st_mode):
        raise UndecodableImage(NOT_REGULAR)
    if info.st_size > max_mb * 1024 * 1024:
        raise ImageTooLarge(f"too large ({info.st_size / 2**20:,.0f} MB; the limit is {max_mb:g} MB)")
    with open(path, "rb") as handle:
        return handle.read(int(max_mb * 1024 * 1024) + 1)


def predict_file(recognizer: EmotionRecognizer, path: Path, max_pixels: int) -> dict[str, Any]:
    """One photo's JSON record: its faces (box, label, probabilities), a note when there is none, or the error."""
    try:
        rgb = decode_rgb(read_image_bytes(path), max_pixels)
    except (OSError, UndecodableImage) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return {"file": str(path), "error": reason}
    return faces_record(recognizer, str(path), rgb)


def faces_record(recognizer: EmotionRecognizer, name: str, rgb: np.ndarray) -> dict[str, Any]:
    """The record of one decoded photo, as the CLI prints it and the HTTP API answers it."""
    try:
        faces = recognizer.analyze(rgb)
    except FerbenchError:
        raise  # the model's own failure (non-finite scores): the same for every file, so the run stops
    except Exception as exc:  # OpenCV's detectors fail in their own ways on odd images: one bad file, not the run
        return {"file": name, "error": f"face detection failed ({type(exc).__name__})"}
    record: dict[str, Any] = {"file": name, "faces": [face.to_dict() for face in faces]}
    if not faces:
        record["note"] = "no face found"
    return record


def predict_video(recognizer: EmotionRecognizer, path: Path, out: Path, options: VideoOptions) -> int:
    """Analyse one video into `out` with a progress bar; its exit code (0 done, 1 broke off, 2 refused)."""
    from tqdm import tqdm

    bars: dict[str, tqdm] = {}  # made at the first frame: a refused video prints its one line alone

    def progress(done: int, total: int, step: str = "frame") -> None:
        if step not in bars:
            for bar in bars.values():
                bar.close()
            bars[step] = tqdm(desc=printable(path), total=total or None, unit=step, file=sys.stderr, leave=False)
        bars[step].update(done - bars[step].n)

    try:
        result = analyse_video(path, recognizer, out, options, progress)
    except FerbenchError as exc:
        print(f"predict: error: {printable(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:  # the results folder: not writable, a path under a file, the disk full
        print(
            f"predict: error: cannot write the results of {printable(path)} to {printable(out)} "
            f"({exc.strerror or exc})",
            file=sys.stderr,
        )
        return 2
    finally:
        for bar in bars.values():
            bar.close()
    print(json.dumps({"file": str(path), "video": result.to_dict()}, allow_nan=False), flush=True)
    print(f"predict: {printable(path)}: {result.describe()}; results in {printable(out)}", file=sys.stderr)
    if result.detector_failures:
        print(
            f"predict: {printable(path)}: the face detector failed on {result.detector_failures} frame(s); "
            "they count as frames without a face",
            file=sys.stderr,
        )
    if result.stopped_at is not None:
        print(
            f"predict: {printable(path)}: the video breaks off at {result.stopped_at:.2f} s "
            f"(of {result.info.duration:.2f} s); the rows up to there are written",
            file=sys.stderr,
        )
        return 1
    return 0


class PhotoTable:
    """The --csv table, a row per face (a file without faces, or unreadable, gets one row with an empty
    face), written as each photo is done: memory does not grow with the number of photos. The file is
    created at the first row, never over an existing file unless `overwrite`."""

    def __init__(self, path: Path, classes: Sequence[str], overwrite: bool) -> None:
        self.path, self.classes, self.overwrite = path, list(classes), overwrite
        self._handle: IO[str] | None = None
        self._writer: Any = None

    def add(self, record: dict[str, Any]) -> None:
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            mode = "w" if self.overwrite else "x"  # "x": a file that appeared since the check is not replaced
            self._handle = self.path.open(mode, newline="", errors="surrogateescape")  # names as on disk
            self._writer = csv.writer(self._handle)
            header = ["file", "face", "x", "y", "width", "height", "label", *[f"p_{c}" for c in self.classes]]
            self._writer.writerow(safe_row([*header, "error"]))
        faces = record.get("faces") or []
        if not faces:
            empty = [""] * (6 + len(self.classes))
            self._writer.writerow(safe_row([record["file"], *empty, record.get("error", record.get("note", ""))]))
        for index, face in enumerate(faces):
            probabilities = [f"{face['probabilities'][c]:.6f}" for c in self.classes]
            self._writer.writerow(safe_row([record["file"], index, *face["box"], face["label"], *probabilities, ""]))
        self._handle.flush()  # type: ignore[union-attr]

    def close(self, after_error: bool = False) -> None:
        """Close the file (once); after an error writing it, a second failure to flush is the same error."""
        handle, self._handle = self._handle, None
        if handle is None:
            return
        try:
            handle.close()
        except OSError:
            if not after_error:
                raise


def video_folders(videos: Sequence[Path], out: Path | None) -> dict[Path, Path]:
    """Each video's results folder: --out itself for one video, else one inside --out (or NAME-emotions/
    beside the current folder) per video, named by its stem; videos of the same stem get -2, -3, ..."""
    folders: dict[Path, Path] = {}
    taken: set[str] = set()
    for video in videos:
        name, count = video.stem, 1
        while name in taken:
            count += 1
            name = f"{video.stem}-{count}"
        taken.add(name)
        if out is None:
            folders[video] = Path(f"{name}-emotions")
        else:
            folders[video] = out if len(videos) == 1 else out / name
    return folders


def _in_range(value: int, low: int, high: int, flag: str, unit: str = "") -> None:
    if not low <= value <= high:
        raise FerbenchError(f"{flag} {value}: use {low:,} to {high:,}{unit}")


def build_parser() -> argparse.ArgumentParser:
    """The CLI's options, with their help."""
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
    parser.add_argument(
        "--csv", type=Path, metavar="FILE", help="also write a table, one row per face (a new file, never an input)"
    )
    parser.add_argument("--overwrite", action="store_true", help="let --csv replace an existing file")
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
    parser.add_argument(
        "--threads", type=int, default=0, help=f"CPU threads for the model (0: all cores; at most {os.cpu_count()})"
    )
    add_video_options(parser.add_argument_group("videos"))
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=DEFAULT_PHOTO_PIXELS,
        help=f"refuse images with more pixels (default {DEFAULT_PHOTO_PIXELS:,}; at most {PHOTO_PIXELS_LIMIT:,})",
    )
    return parser


def add_video_options(video: argparse._ArgumentGroup) -> None:
    """The video flags, their defaults those of `VideoOptions`."""
    video.add_argument(
        "--out", type=Path, metavar="DIR", help="a new folder for a video's results (several videos: one inside each)"
    )
    video.add_argument(
        "--every",
        type=int,
        default=VIDEO_DEFAULTS.every,
        metavar="N",
        help=f"classify every Nth frame (default {VIDEO_DEFAULTS.every})",
    )
    video.add_argument(
        "--detect-every",
        type=int,
        default=VIDEO_DEFAULTS.detect_every,
        metavar="N",
        help=f"detect faces every Nth classified frame; tracks carry them in between "
        f"(default {VIDEO_DEFAULTS.detect_every})",
    )
    video.add_argument("--start", type=float, default=VIDEO_DEFAULTS.start, metavar="S", help="start at S seconds")
    video.add_argument("--end", type=float, default=None, metavar="S", help="stop at S seconds (default: the end)")
    video.add_argument(
        "--smoothing",
        type=float,
        default=VIDEO_DEFAULTS.smoothing,
        help=f"weight of a track's past in its probabilities (0: none; default {VIDEO_DEFAULTS.smoothing:g})",
    )
    video.add_argument(
        "--missing-seconds",
        type=float,
        default=VIDEO_DEFAULTS.missing_seconds,
        help=f"a face unseen for longer gets a new track id when it comes back "
        f"(default {VIDEO_DEFAULTS.missing_seconds:g})",
    )
    video.add_argument("--jsonl", action="store_true", help="also write faces.jsonl, a JSON line per face and frame")
    video.add_argument("--annotate", action="store_true", help="also write annotated.mp4 (boxes, track ids, labels)")
    video.add_argument(
        "--max-frame-pixels",
        type=int,
        default=VIDEO_DEFAULTS.max_frame_pixels,
        help=f"refuse videos with larger frames (default {VIDEO_DEFAULTS.max_frame_pixels:,}; "
        f"at most {FRAME_PIXELS_LIMIT:,})",
    )


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Analyse every file named; the exit status (0 all read, 1 some not, 2 a usage or model error)."""
    try:
        check_numbers(args)
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
        listed = image_files(args.paths)
        if not listed.files:
            raise FerbenchError("no files found under the given paths")
        if args.csv:
            check_new_output(args.csv, listed.files, args.overwrite, flag="--csv")
        choice = choose_model_folder(args.model)
        model = EmotionModel(choice.folder, threads=args.threads or None)
        detector = WholeImage() if args.whole_image else build_detector(args.detector, model_file=args.detector_model)
        recognizer = EmotionRecognizer(model, detector, align=args.align, margin=args.margin, smoothing=0.0)
    except FerbenchError as exc:
        print(f"predict: error: {printable(exc)}", file=sys.stderr)
        return 2
    print(
        f"predict: model {printable(model.folder)} ({choice.origin}): {printable(model.card.summary())}; faces: "
        f"{detector.name}{', aligned' if args.align and detector.can_align else ''}",
        file=sys.stderr,
    )
    if listed.skipped_links:
        report_skipped(listed.skipped_links)
    table = PhotoTable(args.csv, model.classes, args.overwrite) if args.csv else None
    videos = video_folders([path for path in listed.files if is_video(path)], args.out)
    failed = 0
    try:
        for path in listed.files:
            if path in videos:
                failed = max(failed, predict_video(recognizer, path, videos[path], options))
                continue
            record = predict_file(recognizer, path, args.max_pixels)
            if "error" in record:
                failed = max(failed, 1)
                print(f"predict: cannot read {printable(path)}: {printable(record['error'])}", file=sys.stderr)
            print(json.dumps(record, allow_nan=False), flush=True)
            if table is not None:
                table.add(record)
        if table is not None:
            table.close()
    except BrokenPipeError:  # `predict folder | head -1`: the reader has gone; stop quietly, as `cat` would
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except FerbenchError as exc:  # the model answered what no probability can be: stop, say which model
        print(f"predict: error: {printable(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:  # the table: not writable, the disk full, or a file made there since the check
        print(f"predict: error: cannot write --csv {printable(args.csv)} ({exc.strerror or exc})", file=sys.stderr)
        return 2
    finally:
        if table is not None:
            table.close(after_error=True)
    return failed


MAX_THREADS = os.cpu_count() or 1
LIMITS = {  # flag -> (attribute, lowest, highest, unit): every number a user passes, range-checked
    "--threads": ("threads", 0, MAX_THREADS, f" (0: all cores; this machine has {MAX_THREADS})"),
    "--max-pixels": ("max_pixels", 1, PHOTO_PIXELS_LIMIT, " pixels"),
    "--max-frame-pixels": ("max_frame_pixels", 1, FRAME_PIXELS_LIMIT, " pixels"),
    "--every": ("every", 1, MAX_EVERY, " frames"),
    "--detect-every": ("detect_every", 1, MAX_EVERY, " frames"),
}


def check_numbers(args: argparse.Namespace) -> None:
    """Every numeric option in its range, before anything is loaded (the video ones again in VideoOptions)."""
    for flag, (attribute, low, high, unit) in LIMITS.items():
        _in_range(getattr(args, attribute), low, high, flag, unit)


def report_skipped(skipped: Sequence[tuple[Path, str]], shown_at_most: int = 5) -> None:
    """One stderr line for the links under a folder that were not followed."""
    listed = "; ".join(f"{printable(path)} ({reason})" for path, reason in skipped[:shown_at_most])
    more = f"; and {len(skipped) - shown_at_most} more" if len(skipped) > shown_at_most else ""
    print(f"predict: skipped {len(skipped)} link(s) under the folders given: {listed}{more}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
