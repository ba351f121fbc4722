"""A classifier in every runtime variant (`ferbench.models.variants`): exported into a folder, run on a batch
of 48x48 uint8 faces, compared with PyTorch fp32 (agreement) and the fastest faithful one picked. Shared by
the latency stage, deploy and the benchmarks; serving loads a model folder's one file with `file_runtime`,
the one place a runtime is chosen for a file, and needs none of the exporting here.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ferbench.models.export import (
    export_onnx,
    fuse_transformer,
    onnx_logits,
    onnx_session,
    quantize_int8,
    quantize_int8_static,
    transformer_configs,
)
from ferbench.models.variants import OPENVINO_INSTALL, REFERENCE, VARIANTS, Variant, missing_packages


@dataclass(frozen=True)
class RangeSample:
    """What static int8 quantization measures activation ranges on: train images, and the method ONNX
    Runtime uses (NNCF, for OpenVINO, uses its own estimators on the same images)."""

    images: np.ndarray
    method: str


@dataclass
class Runtime:
    """One variant: a function from a uint8 batch (numpy) to logits (numpy)."""

    name: str
    logits: Callable[[np.ndarray], np.ndarray]


def torch_runtime(model: nn.Module) -> Runtime:
    model = model.eval().cpu()

    def logits(images: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(np.ascontiguousarray(images))).float().numpy()

    return Runtime(REFERENCE, logits)


def file_runtime(
    variant: Variant, model_file: Path, weights_file: Path | None, threads: int, spinning: bool = True
) -> Runtime:
    """An exported variant loaded for `threads` (0: the runtime's choice): its file, and for OpenVINO its weights
    file. The one place a runtime is chosen for a file: the latency stage, deploy and serving all load here
    (serving turns spinning threads off, as face detection shares the cores)."""
    if variant.openvino:
        from ferbench.models.openvino_runtime import OpenVinoModel

        if weights_file is None:
            raise ValueError(f"{variant.name} needs its weights file")
        model = OpenVinoModel(model_file, weights_file, threads, variant.precision)
        return Runtime(variant.name, model)
    if not variant.onnx:
        raise ValueError(f"{variant.name} is not an exported file; load the checkpoint (torch_runtime)")
    session = onnx_session(model_file, threads, spinning=spinning)
    return Runtime(variant.name, lambda images: onnx_logits(session, images))


class VariantExporter:
    """Exports one classifier (which already carries its TTA wrapper) in any variant, each intermediate ONNX
    graph made once: the fused one (ONNX Runtime's transformer fusions: fp32 and dynamic int8) and the plain
    one (what the static int8 calibrator and OpenVINO read)."""

    def __init__(self, model: nn.Module, scratch: Path) -> None:
        self.model = model.eval().cpu()
        self.scratch = scratch
        self._graphs: dict[bool, Path] = {}

    def graph(self, fused: bool) -> Path:
        """The plain graph, exported once (a PyTorch export takes seconds to a minute); the fused one made from it
        (for a model without transformer layers, the plain one itself)."""
        if fused not in self._graphs:
            configs = transformer_configs(self.model)
            if not fused:
                self._graphs[fused] = export_onnx(self.model, self.scratch / "plain.onnx", fuse=False)
            elif configs:
                self._graphs[fused] = fuse_transformer(configs[0], self.graph(fused=False), self.scratch / "fused.onnx")
            else:
                self._graphs[fused] = self.graph(fused=False)
        return self._graphs[fused]

    def export(self, variant: Variant, folder: Path, ranges: RangeSample | None = None) -> Path:
        """`variant`'s files in `folder`; the int8 ones with activation ranges measured on `ranges` (train images)."""
        if variant.int8 and ranges is None:
            raise ValueError(f"{variant.name}: static int8 needs the train images to measure its activation ranges on")
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / variant.file
        if variant.name == "onnx_fp32":
            shutil.copyfile(self.graph(fused=True), target)
        elif variant.name == "onnx_int8":
            quantize_int8(self.graph(fused=True), target)
        elif variant.name == "onnx_int8_static":
            quantize_int8_static(self.graph(fused=False), target, ranges.images, ranges.method)
        elif variant.openvino:
            from ferbench.models.openvino_runtime import convert_openvino

            images = ranges.images if variant.int8 else None
            convert_openvino(self.graph(fused=False), target, images, bool(transformer_configs(self.model)))
        else:
            raise ValueError(f"{variant.name} has no file to export")
        return target


def available_variants(with_int8: bool) -> tuple[list[Variant], list[str]]:
    """The exportable variants this machine can build (the int8 ones, whose ranges need train images, only `with_int8`),
    and one line per group skipped for a missing optional package."""
    chosen, skipped = [], {}
    for variant in VARIANTS.values():
        if variant.name == REFERENCE or (variant.int8 and not with_int8):
            continue
        missing = missing_packages(variant)
        if missing:
            skipped.setdefault(", ".join(missing), []).append(variant.name)
        else:
            chosen.append(variant)
    notes = [
        f"{', '.join(names)} skipped: {packages} not installed ({OPENVINO_INSTALL})"
        for packages, names in skipped.items()
    ]
    return chosen, notes


def agreement(reference: np.ndarray, predictions: np.ndarray) -> float:
    """Share of images on which two models predict the same class."""
    if reference.shape != predictions.shape or len(reference) == 0:
        raise ValueError("agreement needs two non-empty prediction arrays of the same length")
    return float((reference == predictions).mean())


def build_runtimes(
    model: nn.Module,
    folder: Path,
    threads: int,
    ranges: RangeSample | None = None,
    only: Collection[str] | None = None,
) -> dict[str, Runtime]:
    """Export every variant this machine can build (of those named in `only`, when given) into `folder` and
    return their runtimes (PyTorch eager first, the reference): the int8 variants (activation ranges measured on
    train images) only when `ranges` is given; OpenVINO's only when it is installed (one line says what was skipped)."""
    runtimes = {REFERENCE: torch_runtime(model)}
    variants, skipped = available_variants(with_int8=ranges is not None)
    variants = [variant for variant in variants if only is None or variant.name in only]
    for note in skipped:
        print(f"latency: {note}")
    with tempfile.TemporaryDirectory() as scratch:
        exporter = VariantExporter(model, Path(scratch))
        for variant in variants:
            exporter.export(variant, folder, ranges)
            runtimes[variant.name] = file_runtime(
                variant, folder / variant.file, folder / variant.weights if variant.weights else None, threads
            )
    return runtimes


def batched_logits(runtime: Runtime, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    return np.concatenate(
        [runtime.logits(images[start : start + batch_size]) for start in range(0, len(images), batch_size)]
    )


def batched_predictions(runtime: Runtime, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    return batched_logits(runtime, images, batch_size).argmax(1)


def fastest_faithful(p50_ms: Mapping[str, float], agreements: Mapping[str, float], min_agreement: float) -> str:
    """The variant with the lowest p50 among those agreeing with fp32 on >= min_agreement of val (the
    reference agrees with itself, so there always is one)."""
    faithful = [name for name in p50_ms if agreements[name] >= min_agreement]
    return min(faithful, key=lambda name: (p50_ms[name], name))
