"""Reproducible webcam-like frames built from real FER-2013 faces, to measure face detection.

Each frame is 640x480 with 1-3 faces (upscaled from 48x48 to 90-220 px, some mirrored, in the
rotated set turned by up to +-30 degrees) pasted at random non-overlapping places on a smooth
random background; face-free frames are the same backgrounds, or mosaics of the corners of
other FER-2013 images (hair, background, sometimes part of a face: hard negatives). The ground
truth of every face (centre, side, angle, label and the original crop) goes with the frame, so
`match_faces` can score a detector and the classifier can be run on the original crops too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ferbench.serving.faces import Face

FRAME_SIZE = (640, 480)  # width, height


@dataclass(frozen=True)
class PlacedFace:
    """Where a FER-2013 face was pasted: centre and side of its square in the frame, its turn (degrees,
    counter-clockwise), whether it was mirrored, its label and the 48x48 crop as the dataset has it."""

    centre_x: float
    centre_y: float
    side: float
    angle: float
    mirrored: bool
    label: int
    crop: np.ndarray = field(repr=False)

    def seen_crop(self) -> np.ndarray:
        """The dataset crop as it appears in the frame before turning (mirrored when it was)."""
        return self.crop[:, ::-1] if self.mirrored else self.crop


@dataclass(frozen=True)
class Scene:
    rgb: np.ndarray = field(repr=False)
    faces: tuple[PlacedFace, ...]


def _background(rng: np.random.Generator) -> np.ndarray:
    """A smooth random grayscale-ish colour field (a wall, a room out of focus)."""
    import cv2

    width, height = FRAME_SIZE
    coarse = rng.uniform(40, 220, size=(6, 8, 3)).astype(np.float32)
    coarse = coarse * 0.4 + coarse.mean(axis=2, keepdims=True) * 0.6  # muted colours
    field_ = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    grain = rng.normal(0, 6, size=(height, width, 1)).astype(np.float32)
    return np.clip(field_ + grain, 0, 255).astype(np.uint8)


def _paste(frame: np.ndarray, crop: np.ndarray, placed: PlacedFace) -> None:
    import cv2

    side = round(placed.side)
    face = cv2.resize(crop, (side, side), interpolation=cv2.INTER_CUBIC)
    turn = cv2.getRotationMatrix2D((side / 2, side / 2), placed.angle, 1.0)
    turn[:, 2] += np.array([placed.centre_x, placed.centre_y]) - side / 2
    height, width = frame.shape[:2]
    warped = cv2.warpAffine(face, turn, (width, height), flags=cv2.INTER_LINEAR)
    mask = cv2.warpAffine(np.ones((side, side), np.uint8), turn, (width, height), flags=cv2.INTER_NEAREST)
    frame[mask > 0] = warped[mask > 0][:, None]


def build_scenes(
    images: np.ndarray, labels: np.ndarray, count: int, *, rotated: bool, seed: int, max_faces: int = 3
) -> list[Scene]:
    """`count` frames with faces drawn without replacement from `images` (uint8 N x 48 x 48)."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(images))
    used = 0
    width, height = FRAME_SIZE
    scenes = []
    for _ in range(count):
        frame = _background(rng)
        placed: list[PlacedFace] = []
        for _ in range(int(rng.integers(1, max_faces + 1))):
            side = float(rng.uniform(90, 220))
            reach = side * 0.75  # a turned square's half-diagonal, so the face stays inside the frame
            for _ in range(50):
                centre = rng.uniform([reach, reach], [width - reach, height - reach])
                if all(np.hypot(*(centre - (p.centre_x, p.centre_y))) > 0.75 * (side + p.side) for p in placed):
                    break
            else:
                continue
            index = int(order[used % len(order)])
            used += 1
            angle = float(rng.uniform(-30, 30)) if rotated else 0.0
            face = PlacedFace(
                float(centre[0]),
                float(centre[1]),
                side,
                angle,
                bool(rng.random() < 0.5),
                int(labels[index]),
                images[index],
            )
            _paste(frame, face.seen_crop(), face)
            placed.append(face)
        scenes.append(Scene(frame, tuple(placed)))
    return scenes


def face_free_scenes(images: np.ndarray, count: int, seed: int) -> list[Scene]:
    """Frames without a face: half smooth backgrounds, half mosaics of 16x16 corners of FER-2013 images."""
    import cv2

    rng = np.random.default_rng(seed)
    width, height = FRAME_SIZE
    scenes = []
    for index in range(count):
        if index % 2 == 0:
            scenes.append(Scene(_background(rng), ()))
            continue
        tile = 80
        rows = []
        for _ in range(height // tile):
            row = []
            for _ in range(width // tile):
                image = images[int(rng.integers(len(images)))]
                corner = [image[:16, :16], image[:16, -16:], image[-16:, :16], image[-16:, -16:]][int(rng.integers(4))]
                row.append(cv2.resize(corner, (tile, tile), interpolation=cv2.INTER_CUBIC))
            rows.append(np.hstack(row))
        scenes.append(Scene(np.repeat(np.vstack(rows)[:, :, None], 3, axis=2), ()))
    return scenes


def match_faces(placed: tuple[PlacedFace, ...], found: list[Face]) -> tuple[dict[int, int], int]:
    """Detections matched to pasted faces (index of placed face -> index of detection) and the number
    of false positives. A detection matches a face when its box centre lies within 0.35 x the face's
    side of the face's centre and its size is 0.3-1.5 x the side; each face and detection is used once,
    nearest pairs first."""
    pairs = []
    for i, face in enumerate(placed):
        for j, detection in enumerate(found):
            x, y, w, h = detection.box
            distance = float(np.hypot(x + w / 2 - face.centre_x, y + h / 2 - face.centre_y))
            if distance <= 0.35 * face.side and 0.3 * face.side <= max(w, h) <= 1.5 * face.side:
                pairs.append((distance, i, j))
    matched: dict[int, int] = {}
    used: set[int] = set()
    for _, i, j in sorted(pairs):
        if i not in matched and j not in used:
            matched[i] = j
            used.add(j)
    return matched, len(found) - len(used)


@dataclass(frozen=True)
class MovingFace:
    """A face that moves in a straight line from `start` to `end` (centres, pixels) over the video,
    showing `expressions[k]` (a label and its 48x48 crop) from frame `changes[k]` on, and hidden
    during `hidden` (a range of frames). Faces later in a video's list are drawn over earlier ones."""

    start: tuple[float, float]
    end: tuple[float, float]
    side: int
    expressions: tuple[tuple[int, np.ndarray], ...]
    changes: tuple[int, ...] = (0,)
    hidden: range = range(0)

    def box(self, frame: int, frames: int) -> tuple[int, int, int, int]:
        share = frame / max(1, frames - 1)
        x = self.start[0] + share * (self.end[0] - self.start[0])
        y = self.start[1] + share * (self.end[1] - self.start[1])
        return round(x - self.side / 2), round(y - self.side / 2), self.side, self.side

    def expression(self, frame: int) -> tuple[int, np.ndarray]:
        return self.expressions[max(k for k, first in enumerate(self.changes) if first <= frame)]


def write_moving_faces_video(
    path: str, faces: list[MovingFace], frames: int, fps: float = 30.0, seed: int = 0
) -> list[list[tuple[int, tuple[int, int, int, int], int]]]:
    """Write the video (MJPG in .avi, mp4v otherwise) and return, per frame, the faces a detector
    could see: (index in `faces`, box, label), leaving out a hidden face and one more than half
    covered by a face drawn over it."""
    import cv2

    from ferbench.serving.faces import box_iou

    background = _background(np.random.default_rng(seed))
    height, width = background.shape[:2]
    codec = "MJPG" if str(path).endswith(".avi") else "mp4v"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), fps, (width, height))
    truth = []
    try:
        for frame in range(frames):
            canvas = background.copy()
            drawn: list[tuple[int, tuple[int, int, int, int], int]] = []
            for index, face in enumerate(faces):
                if frame in face.hidden:
                    continue
                box = face.box(frame, frames)
                label, crop = face.expression(frame)
                x, y, side, _ = box
                patch = cv2.resize(crop, (side, side), interpolation=cv2.INTER_CUBIC)
                top, left = max(0, y), max(0, x)
                bottom, right = min(height, y + side), min(width, x + side)
                if bottom > top and right > left:
                    canvas[top:bottom, left:right] = patch[top - y : bottom - y, left - x : right - x, None]
                drawn = [(i, b, lab) for i, b, lab in drawn if box_iou(b, box) < 1 / 3]  # covered over half
                drawn.append((index, box, label))
            writer.write(cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
            truth.append(drawn)
    finally:
        writer.release()
    return truth
