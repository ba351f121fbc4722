"""A classifier in every runtime variant (`ferbench.models.variants`): exported into a folder, and run on a
batch of 48x48 uint8 faces. Shared by the latency stage, deploy and the benchmarks; serving loads a model
folder's one file through `ferbench.models.folder` and needs none of the exporting here.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
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
class Calibration:
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


def file_runtime(variant: Variant, folder: Path, threads: int) -> Runtime:
    """The exported variant in `folder` (its file, and its weights file for OpenVINO), loaded for `threads`."""
    if variant.openvino:
        from ferbench.models.openvino_runtime import OpenVinoModel

        model = OpenVinoModel(folder / variant.file, folder / variant.weights, threads, variant.precision)
        return Runtime(variant.name, model)
    session = onnx_session(folder / variant.file, threads)
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

    def export(self, variant: Variant, folder: Path, calibration: Calibration | None = None) -> Path:
        """`variant`'s files in `folder`; the int8 variants calibrated on `calibration` (train images)."""
        if variant.int8 and calibration is None:
            raise ValueError(f"{variant.name}: int8 calibrated on train images needs its calibration images")
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / variant.file
        if variant.name == "onnx_fp32":
            shutil.copyfile(self.graph(fused=True), target)
        elif variant.name == "onnx_int8":
            quantize_int8(self.graph(fused=True), target)
        elif variant.name == "onnx_int8_static":
            quantize_int8_static(self.graph(fused=False), target, calibration.images, calibration.method)
        elif variant.openvino:
            from ferbench.models.openvino_runtime import convert_openvino

            images = calibration.images if variant.int8 else None
            convert_openvino(self.graph(fused=False), target, images, bool(transformer_configs(self.model)))
        else:
            raise ValueError(f"{variant.name} has no file to export")
        return target


def available_variants(with_int8: bool) -> tuple[list[Variant], list[str]]:
    """The exportable variants this machine can build (the int8 ones calibrated on train only `with_int8`),
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
