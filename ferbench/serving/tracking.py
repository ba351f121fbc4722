"""Faces followed through a video: each keeps one track id while it is in view.

Each detection frame, the live tracks' boxes are moved on by their own velocity and matched to the
new detections by SciPy's optimal assignment (`linear_sum_assignment`, the Hungarian method) on a
cost of overlap and centre distance, so two faces that cross keep their ids as long as they keep
moving. A track unseen for `max_missing` frames ends; a face that comes back after that gets a
new id. Written on SciPy rather than a tracker package: the pinned stack already has it, and
faces in a recording need only this motion model (no appearance model, no Kalman tuning).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from scipy.optimize import linear_sum_assignment

from ferbench.serving.faces import Box, Face, box_iou

MAX_CENTRE_SHIFT = 0.75  # a match moves its centre by at most this share of the face's side between detections,
SHIFT_PER_MISSED_FRAME = 0.02  # and by this much more for every frame it went unseen (the prediction drifts)
VELOCITY_BASELINE = 8  # detections a velocity is measured over: a half-hidden face's box jitters frame to frame


@dataclass
class Track:
    """One face in view: where it was last seen, how fast it moves (pixels per frame) and its
    smoothed probabilities."""

    track_id: int
    face: Face
    last_frame: int
    velocity: tuple[float, float] = (0.0, 0.0)
    probabilities: np.ndarray | None = field(default=None, repr=False)
    centres: deque[tuple[int, float, float]] = field(default_factory=lambda: deque(maxlen=VELOCITY_BASELINE))

    def __post_init__(self) -> None:
        self.centres.append((self.last_frame, *centre(self.face.box)))

    def face_at(self, frame: int) -> Face:
        """The face moved on to `frame` by the track's velocity (its landmarks with it)."""
        steps = frame - self.last_frame
        return shifted(self.face, self.velocity[0] * steps, self.velocity[1] * steps)


def shifted(face: Face, dx: float, dy: float) -> Face:
    x, y, w, h = face.box
    landmarks = None if face.landmarks is None else face.landmarks + np.array([dx, dy], dtype=face.landmarks.dtype)
    return replace(face, box=(round(x + dx), round(y + dy), w, h), landmarks=landmarks)


def centre(box: Box) -> tuple[float, float]:
    x, y, w, h = box
    return x + w / 2, y + h / 2


def match_cost(predicted: Box, detected: Box, missed: int = 0) -> float:
    """0 for the same box, up to 1 for touching boxes, above 1 for boxes apart (by centre distance);
    infinite past the shift a face can make in `missed` + 1 frames."""
    (px, py), (dx, dy) = centre(predicted), centre(detected)
    distance = np.hypot(px - dx, py - dy) / max(1.0, (predicted[2] + detected[2]) / 2)
    if distance > MAX_CENTRE_SHIFT + SHIFT_PER_MISSED_FRAME * missed:
        return np.inf
    return 1.0 - box_iou(predicted, detected) + distance


class FaceTracker:
    """Track ids for the faces of consecutive frames; `smoothing` is the weight of a track's past in
    its probabilities (0: none), applied per track, never per screen position."""

    def __init__(self, max_missing: int, smoothing: float = 0.5) -> None:
        if max_missing < 0:
            raise ValueError("max_missing must be 0 or more")
        if not 0 <= smoothing < 1:
            raise ValueError("smoothing must be in [0, 1)")
        self.max_missing = max_missing
        self.smoothing = smoothing
        self.tracks: list[Track] = []
        self.next_id = 1

    def predicted(self, frame: int) -> list[tuple[Track, Face]]:
        """The tracks seen at the last detection, with their faces moved on to `frame`."""
        latest = max((track.last_frame for track in self.tracks), default=None)
        return [(track, track.face_at(frame)) for track in self.tracks if track.last_frame == latest]

    def update(self, frame: int, faces: Sequence[Face]) -> list[Track]:
        """Assign the faces detected in `frame` to tracks (new ones for the unmatched); returns the
        track of each face, in order."""
        self.tracks = [track for track in self.tracks if frame - track.last_frame <= self.max_missing + 1]
        assigned: list[Track | None] = [None] * len(faces)
        if self.tracks and faces:
            cost = np.array(
                [
                    [match_cost(track.face_at(frame).box, face.box, frame - track.last_frame - 1) for face in faces]
                    for track in self.tracks
                ]
            )
            finite = np.where(np.isfinite(cost), cost, 1e6)
            for row, column in zip(*linear_sum_assignment(finite), strict=True):
                if np.isfinite(cost[row, column]):
                    assigned[column] = self._move(self.tracks[row], frame, faces[column])
        for index, face in enumerate(faces):
            if assigned[index] is None:
                track = Track(self.next_id, face, frame)
                self.next_id += 1
                self.tracks.append(track)
                assigned[index] = track
        return [track for track in assigned if track is not None]

    def _move(self, track: Track, frame: int, face: Face) -> Track:
        track.centres.append((frame, *centre(face.box)))
        (first, x0, y0), (last, x1, y1) = track.centres[0], track.centres[-1]
        track.velocity = ((x1 - x0) / (last - first), (y1 - y0) / (last - first)) if last > first else (0.0, 0.0)
        track.face, track.last_frame = face, frame
        return track

    def smooth(self, track: Track, probabilities: np.ndarray) -> np.ndarray:
        """The track's probabilities after this frame's: blended with its own past, never another's."""
        if track.probabilities is not None and self.smoothing > 0:
            probabilities = self.smoothing * track.probabilities + (1 - self.smoothing) * probabilities
        track.probabilities = probabilities
        return probabilities
