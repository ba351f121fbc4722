"""CPU latency of seed backbones at batch 1 in each runtime variant (results and command in the README).

Builds each backbone with its seed spec from params.yaml but without pretrained weights (speed
does not depend on the weights; faithfulness does, and the latency stage measures it on val),
adds the 7-class head, exports it and times PyTorch eager fp32, ONNX Runtime fp32 and ONNX
Runtime int8 on one 48x48 image, interleaving rounds so that load changes hit every variant
alike. Prints a table and the speed-up of each variant over PyTorch eager fp32.

Usage: .venv/bin/python scripts/bench_latency.py [--backbones clip_vit_b32 resnet18] [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ferbench.latency import VARIANTS, build_runtimes, count_flops, set_threads, timing
from ferbench.models.backbones import BackboneSpec, build_backbone
from ferbench.models.classifier import ImageClassifier, build_head
from ferbench.params import load_params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbones", nargs="+", default=["clip_vit_b32", "resnet18"],
                        help="names under params.yaml: backbones (default: clip_vit_b32 resnet18)")  # fmt: skip
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for every runtime (default 2)")
    parser.add_argument("--runs", type=int, default=100, help="timed runs per variant and round (default 100)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median round counts")
    args = parser.parse_args()
    set_threads(args.threads)
    specs = load_params()["backbones"]
    image = np.random.default_rng(0).integers(0, 256, (1, 48, 48), dtype=np.uint8)
    print(f"CPU, batch 1, {args.threads} threads, {args.runs} runs x {args.rounds} rounds (median round)")
    print(f"{'backbone':<14} {'GFLOPs':>7} {'variant':<11} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'FPS':>7}"
          f" {'speed-up':>9}")  # fmt: skip
    for name in args.backbones:
        spec = replace(BackboneSpec.from_params(name, specs[name]), pretrained=False, weights=None)
        torch.manual_seed(0)
        backbone = build_backbone(spec)
        model = ImageClassifier(backbone, build_head(backbone.feature_dim, 7)).eval()
        gflops = count_flops(model) / 1e9
        with tempfile.TemporaryDirectory() as scratch:
            runtimes = build_runtimes(model, Path(scratch), args.threads)
            rounds = {variant: [] for variant in VARIANTS}
            for _ in range(args.rounds):
                for variant in VARIANTS:
                    rounds[variant].append(timing(lambda run=runtimes[variant].logits: run(image), 10, args.runs))
        results = {variant: sorted(rows, key=lambda row: row["p50_ms"])[len(rows) // 2]
                   for variant, rows in rounds.items()}  # fmt: skip
        eager = results["torch_fp32"]["p50_ms"]
        for variant, result in results.items():
            print(f"{name:<14} {gflops:>7.2f} {variant:<11} {result['p50_ms']:>8.2f} {result['p90_ms']:>8.2f} "
                  f"{result['p99_ms']:>8.2f} {result['fps']:>7.1f} {eager / result['p50_ms']:>8.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
