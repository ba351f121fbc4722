"""CPU latency of a classifier at batch 1, per runtime variant, and how faithful each variant is.

Variants (`ferbench.models.variants`): PyTorch eager fp32, ONNX Runtime fp32, ONNX Runtime int8 with
dynamic quantization (weights int8, activation ranges found at run time: fast for transformers' matmuls)
and with static quantization (activation ranges measured beforehand on train images: int8 convolutions
for CNNs), and, where OpenVINO is installed, OpenVINO fp32 and OpenVINO int8 (NNCF, ranges from the same
train images). Each is timed on the same single 48x48 image after warm-up; faithfulness is the share of val
images on which a variant predicts the same class as PyTorch fp32. With test-time augmentation
of V views, each variant is also timed on the V views of that image in one call (`tta`), which
is the work the TTA graph does apart from its negligible flips and shifts.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ferbench.data.prepared import Split
from ferbench.errors import FerbenchError
from ferbench.models.classifier import forward_flops
from ferbench.models.runtimes import (
    RangeSample,
    Runtime,
    agreement,
    batched_predictions,
    build_runtimes,
    fastest_faithful,
)
from ferbench.models.variants import REFERENCE
from ferbench.provenance import machine_description
from ferbench.records import Int8Ranges, LatencyReport, VariantMeasurement, as_record
from ferbench.schema import Latency, Params


def range_sample(train: Split, count: int, seed: int) -> np.ndarray:
    """`count` train images drawn at random with `seed` (all of them when train has fewer). Only the train
    split: val decides which variant is faithful and test reports accuracy, so neither may shape the model."""
    if len(train.images) == 0:
        raise FerbenchError(
            "latency: the train split is empty; static int8 measures its activation ranges on train images"
        )
    chosen = np.random.default_rng(seed).permutation(len(train.images))[:count]
    return train.images[np.sort(chosen)]


def timing(call: Callable[[], object], warmup: int, runs: int) -> dict[str, float]:
    """Milliseconds per call (p50/p90/p99/mean) and calls per second, after `warmup` untimed calls."""
    for _ in range(warmup):
        call()
    samples = np.empty(runs)
    for index in range(runs):
        start = time.perf_counter()
        call()
        samples[index] = (time.perf_counter() - start) * 1000.0
    p50, p90, p99 = np.percentile(samples, [50, 90, 99])
    return {
        "p50_ms": float(p50),
        "p90_ms": float(p90),
        "p99_ms": float(p99),
        "mean_ms": float(samples.mean()),
        "fps": float(1000.0 / samples.mean()),
    }


def range_sample_from_params(params: Params, train: Split) -> RangeSample:
    """What static int8 measures activation ranges on: `latency.int8_range_images` train images drawn with `seed`."""
    return RangeSample(
        range_sample(train, params.latency.int8_range_images, params.seed), params.latency.int8_range_method
    )


def measure_variants(
    runtimes: Mapping[str, Runtime],
    images: np.ndarray,
    labels: np.ndarray,
    warmup: int,
    runs: int,
    tta_views: int = 1,
) -> dict[str, VariantMeasurement]:
    """Per variant: batch-1 timing on images[0] (and on its `tta_views` views), val accuracy, and
    agreement with torch_fp32."""
    if len(images) == 0:
        raise FerbenchError("latency: the val split is empty; nothing to measure agreement on")
    reference = batched_predictions(runtimes[REFERENCE], images)
    single = images[:1]
    results = {}
    for name, runtime in runtimes.items():
        predictions = reference if name == REFERENCE else batched_predictions(runtime, images)
        measured: dict[str, Any] = {
            **timing(lambda runtime=runtime: runtime.logits(single), warmup, runs),
            "agreement": agreement(reference, predictions),
            "val_accuracy": float((predictions == labels).mean()),
        }
        if tta_views > 1:
            views = np.repeat(single, tta_views, axis=0)

            def call(runtime: Runtime = runtime, views: np.ndarray = views) -> object:
                return runtime.logits(views)

            measured["tta"] = {"views": tta_views, **timing(call, warmup, runs)}
        results[name] = as_record(VariantMeasurement, measured)
    return results


@dataclass(frozen=True)
class LatencySource:
    """What is timed: the backbone's name and the checkpoint file its model came from."""

    backbone: str
    checkpoint: str


def latency_report(
    model: nn.Module, source: LatencySource, val: Split, settings: Latency, tta_views: int, ranges: RangeSample
) -> LatencyReport:
    """Everything latency@<backbone> records: per-variant timing (`settings`: threads, warm-up, runs) and
    faithfulness on `val`, FLOPs, and the fastest faithful variant."""
    torch.set_num_threads(settings.threads)
    with tempfile.TemporaryDirectory() as scratch:
        runtimes = build_runtimes(model, Path(scratch), settings.threads, ranges, only=settings.timed_variants())
        variants = measure_variants(runtimes, val.images, val.labels, settings.warmup, settings.runs, tta_views)
    p50 = {name: variant.p50_ms for name, variant in variants.items()}
    return LatencyReport(
        backbone=source.backbone,
        model=source.checkpoint,
        machine=machine_description(),
        threads=settings.threads,
        batch_size=1,
        runs=settings.runs,
        gflops=forward_flops(model) / 1e9,
        parameters_m=sum(p.numel() for p in model.parameters()) / 1e6,
        variants=variants,
        int8_ranges=Int8Ranges(split="train", images=len(ranges.images), method=ranges.method),
        min_agreement=settings.min_agreement,
        fastest_faithful=fastest_faithful(
            p50, {name: v.agreement for name, v in variants.items()}, settings.min_agreement
        ),
        speedup_vs_torch_fp32={name: p50[REFERENCE] / value for name, value in p50.items()},
    )
