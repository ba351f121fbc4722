"""Faces in the wild: detection recall, false positives, end-to-end emotion accuracy and time per frame,
per detector and with/without alignment, on frames built from real FER-2013 test faces (results and
command in docs/faces.md).

Frames (`scripts/face_scenes.py`, seeded): an upright set (1-3 faces per 640x480 frame, 90-220 px,
half mirrored), a rotated set (the same, each face turned by up to +-30 degrees) and face-free
frames. For every detector setting each frame is detected once; every found face is then framed,
aligned or not, and classified by the model folder's deployed model. "crop acc" is the same model
on the original 48x48 test crops of the same faces (the ceiling); "e2e acc" counts a missed face as
wrong, "acc found" only the faces found; "ms/frame" is detect + frame + classify.

Usage: .venv/bin/python scripts/bench_faces.py --prepared DIR --model DIR [--detector-model FILE]
       [--frames 150] [--threads 2]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from face_scenes import Scene, build_scenes, face_free_scenes, match_faces

from ferbench.data.prepared import load_split
from ferbench.models.folder import EmotionModel
from ferbench.serving.faces import HaarFaceDetector, YuNetFaceDetector, yunet_model_file
from ferbench.serving.inference import EmotionRecognizer


def evaluate(recognizer: EmotionRecognizer, scenes: list[Scene], align_both: bool) -> dict[str, dict[str, float]]:
    """Per alignment setting: recall, false positives per frame, accuracies and ms per frame."""
    settings = (True, False) if align_both else (False,)
    totals = {
        align: {"faces": 0, "found": 0, "false": 0, "right": 0, "crop_right": 0, "seconds": 0.0} for align in settings
    }
    for scene in scenes:
        rgb = scene.rgb
        start = time.perf_counter()
        detections = recognizer.detector(rgb)
        detect_seconds = time.perf_counter() - start
        matched, false_positives = match_faces(scene.faces, detections)
        crops = np.stack([face.seen_crop() for face in scene.faces]) if scene.faces else None
        crop_labels = recognizer.model.probabilities(crops).argmax(axis=1) if crops is not None else []
        crop_right = sum(int(p) == face.label for p, face in zip(crop_labels, scene.faces, strict=True))
        for align in settings:
            recognizer.align = align
            start = time.perf_counter()
            _, probabilities = recognizer.classify(rgb, detections)
            total = totals[align]
            total["seconds"] += detect_seconds + time.perf_counter() - start
            total["faces"] += len(scene.faces)
            total["found"] += len(matched)
            total["false"] += false_positives
            total["crop_right"] += crop_right
            total["right"] += sum(int(probabilities[j].argmax()) == scene.faces[i].label for i, j in matched.items())
    results = {}
    for align, total in totals.items():
        faces = max(total["faces"], 1)
        results["aligned" if align else "as found"] = {
            "recall": total["found"] / faces,
            "false_per_frame": total["false"] / len(scenes),
            "e2e_accuracy": total["right"] / faces,
            "accuracy_found": total["right"] / max(total["found"], 1),
            "crop_accuracy": total["crop_right"] / faces,
            "ms_per_frame": 1000 * total["seconds"] / len(scenes),
        }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--prepared",
        type=Path,
        default=Path("data/prepared"),
        help="prepared real dataset: its test.npz gives the faces (default data/prepared)",
    )
    parser.add_argument("--model", type=Path, default=Path("models/selected"), help="model folder to classify with")
    parser.add_argument("--detector-model", type=Path, help="local YuNet file (default: the cached download)")
    parser.add_argument("--frames", type=int, default=150, help="frames per set (default 150)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for the model (default 2)")
    args = parser.parse_args()
    import cv2

    cv2.setNumThreads(args.threads)
    test = load_split(args.prepared / "test.npz")
    model = EmotionModel(args.model, threads=args.threads)
    yunet = yunet_model_file(args.detector_model)
    sets = {
        "upright": build_scenes(test.images, test.labels, args.frames, rotated=False, seed=1),
        "rotated": build_scenes(test.images, test.labels, args.frames, rotated=True, seed=2),
        "no face": face_free_scenes(test.images, args.frames // 3, seed=3),
    }
    detectors = {
        "yunet photo (+-30 turns, eyes)": YuNetFaceDetector.for_photos(yunet),
        "yunet video (eyes)": YuNetFaceDetector.for_video(yunet),
        "haar photo": HaarFaceDetector.for_photos(),
        "haar video": HaarFaceDetector.for_video(),
    }
    faces = {name: sum(len(scene.faces) for scene in scenes) for name, scenes in sets.items()}
    print(
        f"model {args.model} ({model.card['backbone']}, {model.card['variant']}); {args.threads} threads; "
        f"frames 640x480: upright {len(sets['upright'])} ({faces['upright']} faces), rotated "
        f"{len(sets['rotated'])} ({faces['rotated']} faces), no face {len(sets['no face'])}"
    )
    print(
        f"{'detector':<32} {'framing':<9} {'set':<8} {'recall':>7} {'FP/frame':>9} {'e2e acc':>8} "
        f"{'acc found':>9} {'crop acc':>9} {'ms/frame':>9}"
    )
    for name, detector in detectors.items():
        recognizer = EmotionRecognizer(model, detector, smoothing=0.0)
        for set_name, scenes in sets.items():
            for framing, row in evaluate(recognizer, scenes, align_both=detector.can_align).items():
                if set_name == "no face":
                    print(
                        f"{name:<32} {framing:<9} {set_name:<8} {'':>7} {row['false_per_frame']:>9.3f} {'':>8} "
                        f"{'':>9} {'':>9} {row['ms_per_frame']:>9.1f}"
                    )
                    continue
                print(
                    f"{name:<32} {framing:<9} {set_name:<8} {row['recall']:>7.1%} {row['false_per_frame']:>9.3f} "
                    f"{row['e2e_accuracy']:>8.1%} {row['accuracy_found']:>9.1%} {row['crop_accuracy']:>9.1%} "
                    f"{row['ms_per_frame']:>9.1f}"
                )


if __name__ == "__main__":
    main()
