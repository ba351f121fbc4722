"""Video analysis speed and memory: frames analysed per second and resident memory along the way.

A 640x480 video at 30 frames/s with 1 or 4 real faces (the astronaut photo shipped with
scikit-image, ~150 px faces, each drifting slowly) is written to a scratch folder, then analysed
by `ferbench.serving.video.analyse_video` exactly as `ferbench-predict VIDEO` does: YuNet every
`--detect-every` frames, tracks in between, the released model (or `--model`), the table written
row by row. Resident memory (VmRSS) is sampled every 300 frames, so a long `--seconds` shows
whether it stays flat.

Usage: .venv/bin/python scripts/bench_video.py [--faces 1 4] [--seconds 60] [--detect-every 2] [--model DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from face_scenes import MovingFace, write_moving_faces_video
from PIL import Image

from ferbench.models.folder import EmotionModel
from ferbench.serving.faces import build_detector
from ferbench.serving.inference import EmotionRecognizer, choose_model_folder
from ferbench.serving.video import VideoOptions, analyse_video

FPS = 30.0


def resident_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def astronaut_face() -> np.ndarray:
    """Head and shoulders of the astronaut photo, grayscale (the faces are pasted as FER's are)."""
    from skimage import data

    return np.asarray(Image.fromarray(data.astronaut()[10:202, 96:352]).convert("L").resize((192, 192)))


def moving_faces(count: int) -> list[MovingFace]:
    face = astronaut_face()
    if count == 1:
        return [MovingFace((260, 240), (380, 240), 200, ((3, face),))]
    centres = [(160, 120), (480, 120), (160, 360), (480, 360)][:count]
    return [MovingFace((x - 20, y), (x + 20, y), 150, ((3, face),)) for x, y in centres]


def run(faces: int, seconds: float, detect_every: int, model_dir: Path | None, scratch: Path) -> dict:
    video = scratch / f"faces{faces}.avi"
    write_moving_faces_video(str(video), moving_faces(faces), round(seconds * FPS), FPS)
    choice = choose_model_folder(model_dir)
    recognizer = EmotionRecognizer(EmotionModel(choice.folder, threads=2), build_detector("yunet", video=True))
    samples: list[tuple[int, float]] = []

    def progress(done: int, total: int) -> None:
        if done % 300 == 0:
            samples.append((done, resident_mb()))

    started = time.perf_counter()
    options = VideoOptions(detect_every=detect_every)
    result = analyse_video(video, recognizer, scratch / f"out{faces}", options, progress)
    elapsed = time.perf_counter() - started
    found = sum(track["frames_analysed"] for track in result.tracks) / max(1, result.frames_analysed)
    return {
        "faces": faces,
        "frames": result.frames_analysed,
        "fps": result.frames_analysed / elapsed,
        "faces_per_frame": found,
        "tracks": len(result.tracks),
        "rss_mb": samples,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", type=int, nargs="+", default=[1, 4], choices=[1, 2, 3, 4])
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each video (default 60)")
    parser.add_argument("--detect-every", type=int, default=2, help="detect every Nth frame (default 2)")
    parser.add_argument("--model", type=Path, help="model folder (default: as predict chooses)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-video-") as scratch:
        for faces in args.faces:
            row = run(faces, args.seconds, args.detect_every, args.model, Path(scratch))
            memory = ", ".join(f"{frame}: {mb:.0f}" for frame, mb in row["rss_mb"][:: max(1, len(row["rss_mb"]) // 6)])
            print(
                f"{faces} face(s), {row['frames']} frames of 640x480: {row['fps']:.1f} frames/s "
                f"({row['fps'] / FPS:.2f}x real time), {row['faces_per_frame']:.2f} faces found a frame, "
                f"{row['tracks']} track(s); resident MB by frame: {memory}",
                flush=True,
            )


if __name__ == "__main__":
    main()
