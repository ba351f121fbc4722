"""End-to-end frame time of the app's pipeline: detect, crop, classify, draw (results: docs/latency.md).

A 640x480 frame with one real face in webcam framing (the astronaut photo shipped with
scikit-image) goes through `EmotionRecognizer.process_frame` with the live mode's detector
settings (YuNet with eye alignment, the default, and the Haar fallback) and `draw_results`, as
the live mode does for each video frame.
Deployment models are built from the seed specs without pretrained weights (speed does not
depend on them) and exported as the select stage would, in the variants that can ship: ResNet18 as
ONNX Runtime static int8 and OpenVINO int8 (activation ranges measured here on synthetic faces, which sets speed,
not quality) and, for comparison, ONNX fp32; CLIP ViT-B/32 as ONNX Runtime dynamic int8 and as
OpenVINO fp32 and int8 (the OpenVINO rows only where it is installed).

Usage: .venv/bin/python scripts/bench_app.py [--detector-model FILE] [--threads 2] [--frames 200]
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ferbench.constants import FER2013_CLASSES
from ferbench.data.synthetic import render_face
from ferbench.models.backbones import build_backbone
from ferbench.models.classifier import ImageClassifier, build_head
from ferbench.models.folder import EmotionModel
from ferbench.models.runtimes import RangeSample
from ferbench.models.variants import OPENVINO_INSTALL, VARIANTS, missing_packages
from ferbench.params import load_params
from ferbench.serving.faces import build_detector
from ferbench.serving.inference import EmotionRecognizer, draw_results
from ferbench.shipping.deploy import FolderSources, write_model_folder
from ferbench.shipping.latency import timing
from ferbench.training.settings import backbone_spec

DEPLOYMENTS = (
    ("resnet18", "onnx_int8_static"),
    ("resnet18", "openvino_int8"),
    ("resnet18", "onnx_fp32"),
    ("clip_vit_b32", "onnx_int8"),
    ("clip_vit_b32", "openvino_fp32"),
    ("clip_vit_b32", "openvino_int8"),
)


def face_frame() -> np.ndarray:
    """Webcam framing: head and shoulders of the astronaut photo scaled to 640x480 (face ~240 px)."""
    from skimage import data

    return np.asarray(Image.fromarray(data.astronaut()[10:202, 96:352]).resize((640, 480)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for the model (default 2)")
    parser.add_argument("--frames", type=int, default=200, help="timed frames per setting (default 200)")
    parser.add_argument("--detector-model", type=Path, help="local YuNet file (default: the cached download)")
    args = parser.parse_args()
    detectors = {name: build_detector(name, video=True, model_file=args.detector_model) for name in ("yunet", "haar")}
    torch.set_num_threads(args.threads)
    params = load_params()
    frame = face_frame()
    rng = np.random.default_rng(0)
    drawn = np.stack([render_face(FER2013_CLASSES[index % 7], rng) for index in range(64)])
    ranges = RangeSample(drawn, params.latency.int8_range_method)
    print(f"640x480 frame, one face, {args.threads} threads, {args.frames} frames after 20 warm-up frames")
    print(f"{'model':<30} {'faces':<15} {'detect every':>12} {'p50 ms':>8} {'p90 ms':>8} {'mean ms':>8} {'FPS':>6}")
    for name, variant in DEPLOYMENTS:
        if missing_packages(VARIANTS[variant]):
            print(f"{name} {variant}: skipped ({OPENVINO_INSTALL})")
            continue
        spec = backbone_spec(params, name).model_copy(update={"pretrained": False, "weights": None})
        torch.manual_seed(0)
        backbone = build_backbone(spec)
        model = ImageClassifier(backbone, build_head(backbone.feature_dim, 7)).eval()
        with tempfile.TemporaryDirectory() as scratch:
            write_model_folder(
                Path(scratch),
                spec,
                model,
                list(FER2013_CLASSES),
                variant,
                sources=FolderSources(int8_ranges=ranges),
            )
            deployed = EmotionModel(scratch, threads=args.threads)
            for (detector_name, detector), detect_every in itertools.product(detectors.items(), (1, 2)):
                recognizer = EmotionRecognizer(deployed, detector, detect_every=detect_every)
                assert len(recognizer.process_frame(frame)) == 1, "the benchmark face was not found"
                result = timing(
                    lambda r=recognizer: draw_results(frame, r.process_frame(frame), fps=30.0), 20, args.frames
                )
                faces = detector_name + (" aligned" if detector.can_align else "")
                print(
                    f"{name + ' ' + variant:<30} {faces:<15} {detect_every:>12} {result['p50_ms']:>8.2f} "
                    f"{result['p90_ms']:>8.2f} {result['mean_ms']:>8.2f} {result['fps']:>6.1f}"
                )


if __name__ == "__main__":
    main()
