"""Finding faces in photos and video frames, and framing each one the way FER-2013 frames its faces.

- `YuNetFaceDetector` (the default): OpenCV's YuNet CNN through `cv2.FaceDetectorYN`, boxes and
  five landmarks; it finds turned, tilted and small faces that Haar misses. Its model file comes
  from `--detector-model PATH`, else the cache, else the OpenCV model zoo's official release
  (downloaded once, checked against its SHA-256): see `yunet_model_file`.
- `HaarFaceDetector`: OpenCV's bundled Haar cascade (no file to fetch), the fallback when asked.
- `WholeImage`: every image is one already-cropped face (FER-2013 samples).

Each detector turns a face into a `Window`: the square of the frame that holds the face as a
FER-2013 sample would (centre, side and, when aligning, the rotation that levels the eyes).
The rules were measured by running each detector on real FER-2013 test faces (README, "Faces in
the wild"), and `crop_window` cuts the window out and passes it through the one `image_to_fer`
that `prepare` uses, so served crops look like the training data.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from ferbench.data.decode import image_to_fer
from ferbench.errors import FerbenchError

Box = tuple[int, int, int, int]  # x, y, width, height in frame pixels
DETECTORS = ("yunet", "haar")

YUNET_URL = (
    "https://github.com/opencv/opencv_zoo/raw/main/models/face_detection_yunet/face_detection_yunet_2023mar.onnx"
)
YUNET_SHA256 = "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4"  # the model zoo's Git LFS record
YUNET_FILE = "face_detection_yunet_2023mar.onnx"

# FER-2013 framing from YuNet's landmarks (medians over 989 real test faces): the sample's side is
# 2.57 x the eye-midpoint-to-mouth-midpoint distance, and its centre lies 0.17 of that distance
# above the mean of the five landmarks (left-right offset 0, faces being symmetric on average).
YUNET_SIDE_PER_EYE_MOUTH = 2.57
YUNET_CENTRE_ABOVE_LANDMARKS = 0.17
# FER-2013 framing from a Haar box (means over 760 real test faces): the sample's side is the box
# width / 0.917, its centre 0.024 box widths below the box centre.
HAAR_SIDE_PER_WIDTH = 1 / 0.917
HAAR_CENTRE_BELOW_BOX = 0.024


@dataclass(frozen=True)
class Face:
    """One detected face: its box for drawing and tracking, and YuNet's landmarks when known."""

    box: Box
    landmarks: np.ndarray | None = None  # 5 x (x, y): the subject's right eye, left eye, nose, right/left mouth corner
    score: float = 1.0
    tilt: float | None = None  # degrees the eye line is turned, when measured on the eyes themselves


@dataclass(frozen=True)
class Window:
    """A square of the frame, rotated by `angle` degrees (counter-clockwise) about its centre."""

    centre_x: float
    centre_y: float
    side: float
    angle: float = 0.0


class FaceDetector(Protocol):
    name: str
    can_align: bool  # gives landmarks, so `window(face, align=True)` levels the eyes

    def __call__(self, rgb: np.ndarray) -> list[Face]: ...

    def window(self, face: Face, align: bool) -> Window: ...


def eye_angle(landmarks: np.ndarray) -> float:
    """Degrees the eye line is turned from level (positive: the subject's left eye lower in the image)."""
    (right_x, right_y), (left_x, left_y) = landmarks[0], landmarks[1]
    return math.degrees(math.atan2(left_y - right_y, left_x - right_x))


def upright_patch(rgb: np.ndarray, window: Window, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The window turned upright and scaled to size x size pixels, and the 2x3 affine map from patch
    back to frame coordinates. Pixels outside the frame repeat its border, so a face at the edge
    keeps its proportions."""
    import cv2

    to_patch = cv2.getRotationMatrix2D((window.centre_x, window.centre_y), window.angle, size / window.side)
    to_patch[:, 2] += size / 2 - np.array([window.centre_x, window.centre_y])
    patch = cv2.warpAffine(
        np.ascontiguousarray(rgb), to_patch, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    return patch, cv2.invertAffineTransform(to_patch)


def crop_window(rgb: np.ndarray, window: Window, margin: float = 0.0) -> np.ndarray:
    """The window (grown by `margin` x its side on each side, turned upright) as a 48x48 FER sample,
    through the same `image_to_fer` as `prepare`."""
    grown = Window(window.centre_x, window.centre_y, window.side * (1 + 2 * margin), window.angle)
    patch, _ = upright_patch(rgb, grown, max(2, round(grown.side)))
    return image_to_fer(Image.fromarray(patch)).pixels


def _apply(affine: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ affine[:, :2].T + affine[:, 2]


def box_iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes."""
    inter_w = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    inter_h = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    union = a[2] * a[3] + b[2] * b[3] - inter_w * inter_h
    return inter_w * inter_h / union if union else 0.0


def bundled_cascade(file_name: str) -> Any:
    """One of the Haar cascades that ship inside opencv-python (no download)."""
    import cv2

    path = Path(cv2.data.haarcascades) / file_name
    cascade = cv2.CascadeClassifier(str(path))
    if cascade.empty():
        raise FerbenchError(f"{path}: cannot load OpenCV's bundled cascade; reinstall opencv-python-headless")
    return cascade


class EyeLine:
    """The tilt of a face from its two eyes, found by OpenCV's bundled eye cascade on an upright patch.

    YuNet's landmarks place the eyes well on an upright face but under-read tilt (measured on
    scikit-image's astronaut photo turned by 10-20 degrees: the landmark eye line moves by 1-4
    degrees), so the eyes themselves are looked for near where YuNet put them."""

    def __init__(self, patch: int = 96, scale_factor: float = 1.05) -> None:
        """`patch`: pixels of the face's FER window (turned by YuNet's estimate) searched for eyes; 128
        finds the eyes of more blurry faces than 96, at about 3x the time (~4 ms a face at 96 here)."""
        import cv2

        self._cv2 = cv2
        self._cascade = bundled_cascade("haarcascade_eye.xml")
        self.patch = patch
        self.scale_factor = scale_factor

    def __call__(self, gray: np.ndarray, window: Window, landmarks: np.ndarray) -> float | None:
        """The eye line's angle in the frame, or None when the cascade does not find one eye on each
        side within half an eye distance of YuNet's eye points."""
        size = self.patch
        patch, back = upright_patch(gray, window, size)
        to_patch = self._cv2.invertAffineTransform(back)
        expected = _apply(to_patch, landmarks[:2])  # YuNet's right and left eye, in the patch
        spread = float(np.linalg.norm(expected[1] - expected[0]))
        if spread < 4:
            return None
        eye_sizes = {"minSize": (size // 10, size // 10), "maxSize": (size // 3, size // 3)}
        found = self._cascade.detectMultiScale(patch[: size * 6 // 10], self.scale_factor, 3, **eye_sizes)
        centres = np.array([[x + w / 2, y + h / 2] for x, y, w, h in np.asarray(found).reshape(-1, 4)])
        if len(centres) < 2:
            return None
        eyes = []
        for point in expected:
            distances = np.linalg.norm(centres - point, axis=1)
            nearest = int(distances.argmin())
            if distances[nearest] > spread / 2:
                return None
            eyes.append(centres[nearest])
        if np.allclose(eyes[0], eyes[1]):
            return None
        return window.angle + eye_angle(np.array(eyes)) if eyes[1][0] > eyes[0][0] else None


class YuNetFaceDetector:
    """OpenCV's YuNet CNN face detector: boxes and five landmarks, searched on a downscaled copy.

    YuNet was trained on mostly upright faces: past about 20 degrees of tilt it finds fewer faces,
    so it also searches copies of the frame turned by `rotations` degrees (merged by non-maximum
    suppression). Its landmarks under-read tilt, so the eyes are levelled with `EyeLine` on an
    `eye_patch`-pixel patch (None: the landmarks' own eye line), falling back to the landmarks'
    eye line where the eyes are not found."""

    name = "yunet"
    can_align = True

    def __init__(
        self,
        model_file: Path,
        detection_width: int = 640,
        rotations: tuple[float, ...] = (0.0,),
        eye_patch: int | None = 96,
        score_threshold: float = 0.6,
        nms_threshold: float = 0.3,
    ) -> None:
        import cv2

        self._cv2 = cv2
        self.model_file = Path(model_file)
        self.detection_width = detection_width
        self.rotations = rotations
        self._eye_line = EyeLine(eye_patch) if eye_patch else None
        try:
            self._detector = cv2.FaceDetectorYN.create(
                str(self.model_file), "", (320, 320), score_threshold, nms_threshold, 5000
            )
        except cv2.error as exc:
            raise FerbenchError(
                f"{self.model_file}: not a YuNet face detector that OpenCV can load "
                f"({str(exc).strip().splitlines()[-1][:120]}); pass --detector-model with "
                f"{YUNET_FILE} from the OpenCV model zoo, or use --detector haar"
            ) from exc

    @classmethod
    def for_photos(cls, model_file: Path) -> YuNetFaceDetector:
        """Thorough: searched at up to 960 px wide, upright and turned by +-30 degrees, eyes looked for
        on 128 px patches."""
        return cls(model_file, detection_width=960, rotations=(0.0, 30.0, -30.0), eye_patch=128)

    @classmethod
    def for_video(cls, model_file: Path) -> YuNetFaceDetector:
        """For webcam frames: one upright search at up to 640 px wide (a 640x480 webcam frame at full
        size: at 320 px YuNet misses one face in six of the benchmark's), a score threshold of 0.5
        (0.6 misses a few more blurry faces), eyes on 96 px patches."""
        return cls(model_file, detection_width=640, score_threshold=0.5)

    def _detect(self, bgr: np.ndarray) -> np.ndarray:
        """YuNet's rows (box, 5 landmarks, score: 15 floats) on one BGR image."""
        self._detector.setInputSize((bgr.shape[1], bgr.shape[0]))
        _, found = self._detector.detect(bgr)
        if found is None:
            return np.zeros((0, 15))
        found = found.astype(np.float64)
        # on frames far from what it was trained on YuNet can answer NaN or empty boxes: no face there
        return found[np.isfinite(found).all(axis=1) & (found[:, 2] > 0) & (found[:, 3] > 0)]

    def __call__(self, rgb: np.ndarray) -> list[Face]:
        cv2 = self._cv2
        height, width = rgb.shape[:2]
        scale = min(1.0, self.detection_width / width)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA) if scale < 1 else rgb
        bgr = cv2.cvtColor(small, cv2.COLOR_GRAY2BGR if small.ndim == 2 else cv2.COLOR_RGB2BGR)
        candidates: list[Face] = []
        for angle in self.rotations:
            turn = cv2.getRotationMatrix2D((size[0] / 2, size[1] / 2), angle, 1.0)
            view = bgr if angle == 0 else cv2.warpAffine(bgr, turn, size, borderMode=cv2.BORDER_REPLICATE)
            back = cv2.invertAffineTransform(turn) / scale  # view pixels -> frame pixels
            for row in self._detect(view):
                x, y, w, h = row[:4]
                centre = _apply(back, np.array([[x + w / 2, y + h / 2]]))[0]
                w, h = w / scale, h / scale
                box = (round(centre[0] - w / 2), round(centre[1] - h / 2), round(w), round(h))
                candidates.append(Face(box, _apply(back, row[4:14].reshape(5, 2)), float(row[14])))
        # The same face found in several rotated views: OpenCV's non-maximum suppression keeps the most
        # confident box of each group overlapping by more than 0.3 IoU, in order of confidence.
        keep = cv2.dnn.NMSBoxes([list(face.box) for face in candidates], [face.score for face in candidates], 0.0, 0.3)
        kept = [candidates[int(index)] for index in np.asarray(keep).reshape(-1)]
        if self._eye_line is None or not kept:
            return kept
        gray = rgb if rgb.ndim == 2 else cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        return [
            replace(face, tilt=self._eye_line(gray, self.window(face, align=True), face.landmarks)) for face in kept
        ]

    def window(self, face: Face, align: bool) -> Window:
        """FER framing from the landmarks (rotation-invariant: the eye-to-mouth distance sets the size),
        turned by the measured eye line when aligning."""
        if face.landmarks is None:
            raise FerbenchError("a YuNet face without landmarks; detect it with YuNetFaceDetector")
        points = face.landmarks
        eyes, mouth = points[:2].mean(axis=0), points[3:5].mean(axis=0)
        eye_to_mouth = float(np.linalg.norm(mouth - eyes))
        angle = (eye_angle(points) if face.tilt is None else face.tilt) if align else 0.0
        up = np.array([math.sin(math.radians(angle)), -math.cos(math.radians(angle))])  # the face's up, in the image
        centre = points.mean(axis=0) + up * YUNET_CENTRE_ABOVE_LANDMARKS * eye_to_mouth
        return Window(float(centre[0]), float(centre[1]), YUNET_SIDE_PER_EYE_MOUTH * eye_to_mouth, angle)


class HaarFaceDetector:
    """Frontal faces with OpenCV's bundled Haar cascade, searched on a downscaled grayscale copy.
    It gives no landmarks, so its faces are never rotated."""

    name = "haar"
    can_align = False

    def __init__(
        self,
        detection_width: int = 320,
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
        min_face_fraction: float = 0.08,
    ) -> None:
        import cv2

        self._cv2 = cv2
        self._cascade = bundled_cascade("haarcascade_frontalface_default.xml")
        self.detection_width = detection_width
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self.min_face_fraction = min_face_fraction

    @classmethod
    def for_photos(cls) -> HaarFaceDetector:
        """Thorough: small faces too (down to 5% of the shorter side), searched at up to 640 px wide."""
        return cls(detection_width=640, scale_factor=1.1, min_face_fraction=0.05)

    @classmethod
    def for_video(cls) -> HaarFaceDetector:
        """Fast, for webcam frames: faces of at least 15% of the frame height, searched at 320 px wide
        (about 10 ms a 640x480 frame on 2 cores instead of 20-40 ms)."""
        return cls(detection_width=320, scale_factor=1.15, min_face_fraction=0.15)

    def __call__(self, rgb: np.ndarray) -> list[Face]:
        cv2 = self._cv2
        gray = rgb if rgb.ndim == 2 else cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        scale = min(1.0, self.detection_width / gray.shape[1])
        small = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else gray
        side = max(20, int(self.min_face_fraction * min(small.shape)))
        found = self._cascade.detectMultiScale(
            small, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors, minSize=(side, side)
        )
        return [Face(tuple(round(int(v) / scale) for v in box)) for box in np.asarray(found).reshape(-1, 4)]

    def window(self, face: Face, align: bool) -> Window:
        x, y, w, h = face.box
        return Window(x + w / 2, y + h / 2 + HAAR_CENTRE_BELOW_BOX * w, HAAR_SIDE_PER_WIDTH * w)


def box_window(box: Box) -> Window:
    """The square on a box's centre with the box's longer side: the box itself when it is square."""
    x, y, w, h = box
    return Window(x + w / 2, y + h / 2, float(max(w, h)))


class WholeImage:
    """A 'detector' that takes the whole image as the face (for already-cropped faces such as FER-2013)."""

    name = "whole image"
    can_align = False

    def __call__(self, rgb: np.ndarray) -> list[Face]:
        return [Face((0, 0, rgb.shape[1], rgb.shape[0]))]

    def window(self, face: Face, align: bool) -> Window:
        return box_window(face.box)


def cache_folder() -> Path:
    """$FERBENCH_CACHE, else $XDG_CACHE_HOME/ferbench, else ~/.cache/ferbench."""
    if os.environ.get("FERBENCH_CACHE"):
        return Path(os.environ["FERBENCH_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ferbench"


def yunet_model_file(path: Path | str | None = None, *, url: str | None = None, sha256: str | None = None) -> Path:
    """The YuNet model: `path` when given (offline use), else the cached copy, else downloaded once
    (from `url`, default the OpenCV model zoo's release) into the cache, with a progress bar, and
    checked against `sha256` (default the release's)."""
    url, sha256 = url or YUNET_URL, sha256 or YUNET_SHA256
    if path:
        path = Path(path).expanduser()
        if not path.is_file():
            raise FerbenchError(
                f"{path}: no such YuNet model file; pass --detector-model with the path of "
                f"{YUNET_FILE} (OpenCV model zoo), or use --detector haar"
            )
        return path
    cached = cache_folder() / YUNET_FILE
    if cached.is_file():
        return cached
    cached.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=cached.parent, prefix=".download-", delete=False) as handle:
        partial = Path(handle.name)
    try:
        _download(url, partial)
        digest = hashlib.sha256(partial.read_bytes()).hexdigest()
        if digest != sha256:
            raise FerbenchError(
                f"{url}: the download's SHA-256 is {digest}, not the model zoo's {sha256}; "
                "try again, or pass --detector-model with a copy you trust"
            )
        partial.replace(cached)
    finally:
        partial.unlink(missing_ok=True)
    return cached


def _download(url: str, destination: Path) -> None:
    """Ours rather than torch.hub's `download_url_to_file` (same progress bar and hash check): that one opens
    the URL without a timeout, so a server that accepts and never answers would hang the app for ever, and it
    would make an ONNX-only app import torch for one 230 KB file."""
    from tqdm import tqdm

    try:
        with urllib.request.urlopen(url, timeout=30) as response, destination.open("wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"download {YUNET_FILE}") as progress:
                while chunk := response.read(1 << 16):
                    out.write(chunk)
                    progress.update(len(chunk))
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise FerbenchError(
            f"cannot download the YuNet face detector from {url} ({reason}); offline, pass "
            f"--detector-model with a local copy of {YUNET_FILE}, or use --detector haar"
        ) from exc


def build_detector(name: str, *, video: bool = False, model_file: Path | str | None = None) -> FaceDetector:
    """The named detector with the photo (thorough) or video (fast) settings; YuNet's file is found or
    fetched by `yunet_model_file`. Haar is used only when named: a missing YuNet file is an error."""
    if name == "yunet":
        path = yunet_model_file(model_file)
        return YuNetFaceDetector.for_video(path) if video else YuNetFaceDetector.for_photos(path)
    if name == "haar":
        return HaarFaceDetector.for_video() if video else HaarFaceDetector.for_photos()
    raise FerbenchError(f"unknown face detector {name!r}; use one of: {', '.join(DETECTORS)}")
