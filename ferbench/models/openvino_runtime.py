"""OpenVINO as a CPU runtime beside ONNX Runtime.

`openvino_fp32`: the classifier's plain ONNX export (preprocessing and TTA views inside, as for every
variant) converted by OpenVINO and run by its CPU plugin at fp32 precision: no quantization error at all,
OpenVINO's own fused kernels. `openvino_int8`: the same graph quantized by NNCF's post-training
quantization, its activation ranges calibrated on train images (the transformer preset for attention
models; the classifier head stays out of int8, as in ONNX Runtime's static int8), the operations it leaves
in floating point run in bf16 where the CPU has native bf16. Both are stored as OpenVINO IR
(`.xml` graph and `.bin` weights) in a model folder and loaded from those two files only.

Optional: without `openvino` (and `nncf` to quantize) `require` raises one line saying how to install them;
the latency stage skips the variants instead.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from ferbench.errors import FerbenchError
from ferbench.models.variants import OPENVINO_INSTALL


def require(package: str) -> ModuleType:
    """`openvino` or `nncf`, or one line naming what to install."""
    try:
        return importlib.import_module(package)
    except ImportError:
        raise FerbenchError(f"{package} is not installed; OpenVINO variants need it: {OPENVINO_INSTALL}") from None


@contextlib.contextmanager
def _quiet_nncf() -> Iterator[None]:
    """NNCF logs every step at INFO and draws progress bars: keep them out of the stage's output, for the
    call only."""
    logger = logging.getLogger("nncf")
    level = logger.level
    logger.setLevel(logging.ERROR)
    quiet = io.StringIO()
    try:
        with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
            yield
    finally:
        logger.setLevel(level)


def quantize_nncf(graph: Any, calibration: np.ndarray, transformer: bool) -> Any:
    """`graph` (an openvino.Model) with int8 weights and activations, ranges measured on `calibration`
    (uint8 faces, train only); the last MatMul, the classifier head, stays fp32."""
    nncf = require("nncf")
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    head = [op.get_friendly_name() for op in graph.get_ordered_ops() if op.get_type_name() == "MatMul"][-1:]
    dataset = nncf.Dataset([calibration[index : index + 1] for index in range(len(calibration))])
    # Activation ranges from the global min and max over the calibration faces, not NNCF's default mean of
    # per-face extremes, which clips the rarer large activations: on a small CLIP that memorised 70 faces,
    # agreement with fp32 rose from 90% to 100% (the CNN's was 100% either way); on the real fer_vgg8, 97.95%
    # against 97.7-97.8% on all of val.
    ranges = nncf.AdvancedQuantizationParameters(activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX)
    with _quiet_nncf():
        return nncf.quantize(
            graph,
            dataset,
            subset_size=len(calibration),
            preset=nncf.QuantizationPreset.MIXED if transformer else nncf.QuantizationPreset.PERFORMANCE,
            model_type=nncf.ModelType.TRANSFORMER if transformer else None,
            ignored_scope=nncf.IgnoredScope(names=head),
            advanced_parameters=ranges,
        )


def convert_openvino(source: Path, target: Path, calibration: np.ndarray | None, transformer: bool) -> Path:
    """The plain ONNX graph `source` as OpenVINO IR at `target` (.xml, with its .bin beside it): fp32, or int8
    by NNCF when `calibration` images are given (`transformer`: attention models get NNCF's transformer
    preset)."""
    ov = require("openvino")
    graph = ov.convert_model(str(source))
    if calibration is not None:
        graph = quantize_nncf(graph, calibration, transformer)
    target.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(graph, str(target), compress_to_fp16=False)
    return target


class OpenVinoModel:
    """An IR compiled for the CPU, callable on a uint8 batch; one inference request per thread (a request is
    not thread-safe, and the app serves several sessions at once).

    `precision` is that of the operations not quantized to int8: `f32` for `openvino_fp32` (OpenVINO's
    default on CPUs with native bf16 would be bf16, which is not fp32), `bf16` for the ones an int8 graph
    leaves (softmax, layer norms, the head), used only where the CPU has native bf16, else f32."""

    def __init__(self, graph: Path, weights: Path, threads: int, precision: str = "f32") -> None:
        ov = require("openvino")
        core = ov.Core()
        if precision == "bf16" and "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            precision = "f32"
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": precision}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        self.compiled = core.compile_model(core.read_model(str(graph), str(weights)), "CPU", config)
        self._local = threading.local()

    def __call__(self, images: np.ndarray) -> np.ndarray:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        request.infer({0: np.ascontiguousarray(images, dtype=np.uint8)})
        return request.get_output_tensor(0).data.copy()
