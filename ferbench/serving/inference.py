"""Emotion recognition on photos and video frames with the selected model.

One module for both front ends (the Streamlit app and `ferbench-predict`):
- `EmotionModel` (`ferbench.models.folder`) loads a model folder through its card (runtime, file, classes); the
  preprocessing and any test-time augmentation live inside the exported model, so nothing is
  re-declared here; the card's temperature (fitted on val) calibrates the probabilities.
- `EmotionRecognizer` finds faces with a detector from `ferbench.serving.faces` (YuNet by default),
  frames each one as FER-2013 frames its faces (eyes levelled when aligning), makes the 48x48
  grayscale sample exactly as `prepare` did (`ferbench.data.decode.image_to_fer`), classifies
  all faces of a frame in one model call, and for video optionally smooths probabilities over
  frames.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ferbench.constants import IMAGE_SIZE
from ferbench.errors import FerbenchError
from ferbench.models.card import CARD_FILE
from ferbench.models.folder import EmotionModel
from ferbench.paths import PROJECT_ROOT, RELEASED_DIR, SELECTED_DIR
from ferbench.serving.faces import Box, Face, FaceDetector, crop_window
from ferbench.serving.tracking import FaceTracker

RELEASED_MODEL_DIR = PROJECT_ROOT / RELEASED_DIR  # trained on FER-2013, in git
MODEL_ORDER = "--model, else $FERBENCH_MODEL, else models/selected (after `dvc repro`), else the released model"


@dataclass(frozen=True)
class ModelChoice:
    """The model folder to serve and why it was chosen (said to the user by the app and the CLI)."""

    folder: Path
    origin: str


def choose_model_folder(explicit: Path | None = None) -> ModelChoice:
    """The folder to serve: `explicit` (--model), else $FERBENCH_MODEL, else the user's own models/selected,
    else the released real-data model. The synthetic demo model is never picked unless named."""
    if explicit is not None:
        return ModelChoice(Path(explicit), "--model")
    if os.environ.get("FERBENCH_MODEL"):
        return ModelChoice(Path(os.environ["FERBENCH_MODEL"]), "$FERBENCH_MODEL")
    if (SELECTED_DIR / CARD_FILE).is_file():  # the user's own, written by `dvc repro` in this folder
        return ModelChoice(SELECTED_DIR, "your pipeline's selected model (dvc repro)")
    released = RELEASED_MODEL_DIR
    if released.is_relative_to(Path.cwd()):
        released = released.relative_to(Path.cwd())  # models/released when run from the project, as users do
    return ModelChoice(released, "the released model")


@dataclass
class FaceResult:
    """One face: where it is, the most likely emotion and the probability of every class."""

    box: Box
    label: str
    probabilities: dict[str, float]
    crop: np.ndarray = field(repr=False)  # the 48x48 sample the model saw
    track: int | None = None  # in a video: the id the face keeps while it is in view

    def to_dict(self) -> dict[str, Any]:
        record: dict[str, Any] = {} if self.track is None else {"track": self.track}
        return record | {
            "box": list(self.box),
            "label": self.label,
            "probabilities": {name: round(float(p), 6) for name, p in self.probabilities.items()},
        }


class EmotionRecognizer:
    """Faces in a frame -> FaceResults. `analyze` treats every image on its own; `process_frame`
    is for video: it re-detects every `detect_every` frames (moving the tracked faces on in between),
    follows each face with a `FaceTracker` and blends its probabilities with its own track's past
    (`smoothing` is the weight of the past, 0 = none). `align` levels the eyes (detectors with
    landmarks); `margin` adds context around FER-2013's framing, as a share of its side (0: exactly
    FER's framing); a face unseen for `max_missing` frames loses its track."""

    def __init__(
        self,
        model: EmotionModel,
        detector: FaceDetector,
        align: bool = True,
        margin: float = 0.0,
        smoothing: float = 0.5,
        detect_every: int = 1,
        max_missing: int = 15,
    ) -> None:
        if not 0 <= smoothing < 1:
            raise FerbenchError(f"smoothing is {smoothing}; use a weight in [0, 1)")
        if detect_every < 1:
            raise FerbenchError(f"detect_every is {detect_every}; use 1 or more")
        if not -0.25 <= margin <= 1:
            raise FerbenchError(f"margin is {margin}; use a share of the face's side between -0.25 and 1")
        if max_missing < 0:
            raise FerbenchError(f"max_missing is {max_missing}; use 0 or more frames")
        self.model = model
        self.detector = detector
        self.align = align
        self.margin = margin
        self.smoothing = smoothing
        self.detect_every = detect_every
        self.max_missing = max_missing
        self.reset()

    def with_tracking(self, smoothing: float, detect_every: int, max_missing: int) -> EmotionRecognizer:
        """A recognizer of the same model, detector and framing for one video, with these tracking
        settings checked as any new one's are (this one, which others may share, is left as it is)."""
        return EmotionRecognizer(
            self.model, self.detector, self.align, self.margin, smoothing, detect_every, max_missing
        )

    def reset(self) -> None:
        """Forget every track (a new video)."""
        self._frame_index = 0
        self.detector_failures = 0
        self.tracker = FaceTracker(self.max_missing, self.smoothing)

    def crop(self, rgb: np.ndarray, face: Face) -> np.ndarray:
        """The 48x48 sample of one face, framed (and aligned) as FER-2013 frames its faces."""
        return crop_window(rgb, self.detector.window(face, self.align), self.margin)

    def classify(self, rgb: np.ndarray, faces: Sequence[Face]) -> tuple[np.ndarray, np.ndarray]:
        """Crops and probabilities for `faces`, all in one model call."""
        crops = (
            np.stack([self.crop(rgb, face) for face in faces])
            if faces
            else np.zeros((0, IMAGE_SIZE, IMAGE_SIZE), np.uint8)
        )
        return crops, self.model.probabilities(crops)

    def _results(
        self, faces: Sequence[Face], crops: np.ndarray, probabilities: np.ndarray, tracks: Sequence[int | None] = ()
    ) -> list[FaceResult]:
        classes = self.model.classes
        tracks = list(tracks) or [None] * len(faces)
        return [
            FaceResult(face.box, classes[int(p.argmax())], dict(zip(classes, p.tolist(), strict=True)), crop, track)
            for face, crop, p, track in zip(faces, crops, probabilities, tracks, strict=True)
        ]

    def analyze(self, rgb: np.ndarray) -> list[FaceResult]:
        """Every face in one image (RGB or grayscale uint8), without any memory of other images."""
        rgb = as_rgb(rgb)
        faces = self.detector(rgb)
        return self._results(faces, *self.classify(rgb, faces))

    def process_frame(self, rgb: np.ndarray) -> list[FaceResult]:
        """Every face in the next video frame, each with its track id and its track's smoothing."""
        rgb = as_rgb(rgb)
        frame = self._frame_index
        self._frame_index += 1
        if frame % self.detect_every == 0:
            try:
                faces = self.detector(rgb)
            except FerbenchError:
                raise
            except Exception:  # OpenCV's detectors fail in their own ways on odd frames: a frame without a face
                self.detector_failures += 1
                faces = []
            tracks = self.tracker.update(frame, faces)
        else:
            moved = self.tracker.predicted(frame)
            tracks, faces = [track for track, _ in moved], [face for _, face in moved]
        crops, probabilities = self.classify(rgb, faces)
        for index, track in enumerate(tracks):
            probabilities[index] = self.tracker.smooth(track, probabilities[index])
        return self._results(faces, crops, probabilities, [track.track_id for track in tracks])


def as_rgb(image: np.ndarray) -> np.ndarray:
    """uint8 H x W (gray), H x W x 3 (RGB) or H x W x 4 (RGBA) -> H x W x 3 RGB."""
    if image.dtype != np.uint8:
        raise FerbenchError(f"expected a uint8 image, got {image.dtype}")
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim == 3 and image.shape[2] in (3, 4):
        return np.ascontiguousarray(image[:, :, :3])
    raise FerbenchError(f"expected an H x W or H x W x 3 image, got shape {image.shape}")


def draw_results(rgb: np.ndarray, faces: Sequence[FaceResult], fps: float | None = None) -> np.ndarray:
    """A copy of the frame with a box, the label and a probability bar chart per face, and the FPS."""
    import cv2

    canvas = np.ascontiguousarray(as_rgb(rgb).copy())
    green, white, dark = (40, 200, 80), (255, 255, 255), (30, 30, 30)
    scale = max(0.4, canvas.shape[1] / 1280)
    for face in faces:
        x, y, w, h = face.box
        cv2.rectangle(canvas, (x, y), (x + w, y + h), green, 2)
        label = f"{face.label} {face.probabilities[face.label]:.0%}"
        (text_w, text_h), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale * 2, 2)
        cv2.rectangle(canvas, (x, max(0, y - text_h - 8)), (x + text_w + 6, y), green, -1)
        cv2.putText(canvas, label, (x + 3, max(text_h, y - 5)), cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale * 2, dark, 2)
        bar_x = x + w + 6 if x + w + 130 < canvas.shape[1] else max(0, x - 130)
        row = int(14 * scale * 2)
        for index, (name, probability) in enumerate(face.probabilities.items()):
            top = y + index * row
            cv2.rectangle(canvas, (bar_x, top), (bar_x + 120, top + row - 3), dark, -1)
            cv2.rectangle(canvas, (bar_x, top), (bar_x + int(120 * probability), top + row - 3), green, -1)
            cv2.putText(canvas, name, (bar_x + 2, top + row - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.35 * scale * 2, white, 1)
    if fps is not None:
        cv2.putText(
            canvas,
            f"{fps:.1f} FPS",
            (10, int(30 * scale * 2)),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.8 * scale * 2,
            (255, 220, 0),
            2,
        )
    return canvas
