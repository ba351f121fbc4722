"""Score the popular `fer` package (mini-Xception, PyPI `fer`) on the same FER-2013 test split as ferbench.

It needs TensorFlow, which ferbench does not, so it runs in an environment of its own:

    python -m venv .fer-venv && .fer-venv/bin/pip install fer tensorflow-cpu && .fer-venv/bin/pip install --no-deps -e .
    .fer-venv/bin/python scripts/bench_fer_package.py runs/real-cpu/data/prepared/test.npz

Two ways, both on every test image (48x48 grayscale faces, ferbench's class order):
- `package`: the package as its users call it on a known face, `fer.fer.FER().detect_emotions(image,
  face_rectangles=[(0, 0, 48, 48)])` (its defaults: the quantized TFLite model, its own padding and
  margin around the box);
- `model`: its Keras model (`fer/data/emotion_model.hdf5`) on the face alone, resized to its 64x64
  input with its own scaling: the model's best case, as it was trained.
Prints accuracy with a 95% Wilson interval and macro-F1 for each.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from ferbench.constants import FER2013_CLASSES  # numpy-only modules: no torch needed
from ferbench.evaluation.metrics import classification_metrics, wilson_interval


def package_predictions(images: np.ndarray) -> np.ndarray:
    """The package's default path on the whole 48x48 face."""
    import cv2
    from fer.fer import FER

    detector = FER()
    predictions = np.empty(len(images), dtype=np.int64)
    for row, image in enumerate(images):
        faces = detector.detect_emotions(cv2.cvtColor(image, cv2.COLOR_GRAY2BGR), face_rectangles=[(0, 0, 48, 48)])
        scores = faces[0]["emotions"] if faces else {}
        label = max(scores, key=scores.get) if scores else "neutral"
        predictions[row] = FER2013_CLASSES.index(label)
    return predictions


def model_predictions(images: np.ndarray) -> np.ndarray:
    """The package's Keras model on the face itself, 64x64, scaled as the package scales."""
    import cv2
    import fer
    from tensorflow.keras.models import load_model

    model = load_model(Path(fer.__file__).parent / "data" / "emotion_model.hdf5", compile=False)
    size = model.input_shape[1:3]
    faces = np.stack([cv2.resize(image, size[::-1]) for image in images]).astype("float32")
    faces = ((faces / 255.0) - 0.5) * 2.0
    scores = model.predict(faces[..., None], batch_size=256, verbose=0)
    package_order = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")  # fer's output order
    return np.array([FER2013_CLASSES.index(package_order[i]) for i in scores.argmax(1)], dtype=np.int64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("test", type=Path, help="a prepared test split (data/prepared/test.npz)")
    args = parser.parse_args()
    with np.load(args.test) as split:
        images, labels = split["images"], split["labels"]
    print(f"{len(images)} test images of {args.test}")
    for name, predict in (("package", package_predictions), ("model", model_predictions)):
        start = time.perf_counter()
        predictions = predict(images)
        seconds = time.perf_counter() - start
        scores = classification_metrics(labels, predictions, FER2013_CLASSES)
        low, high = wilson_interval(int((predictions == labels).sum()), len(labels))
        print(
            f"{name:8s} accuracy {scores['accuracy']:.4f} (95% CI {low:.4f}-{high:.4f}), "
            f"macro-F1 {scores['macro_f1']:.4f}, {seconds:.0f} s"
        )


if __name__ == "__main__":
    main()
