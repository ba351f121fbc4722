"""ONNX export of a whole classifier (uint8 48x48 in, logits out) and its int8 quantizations.

The exported graph contains the preprocessing (resize, 3 channels, mean/std), so every runtime
gets the same input as training did: the 48x48 grayscale crop from `ferbench.data.decode`.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ferbench.constants import IMAGE_SIZE
from ferbench.errors import FerbenchError

INPUT_NAME = "images"  # uint8, batch x 48 x 48
OUTPUT_NAME = "logits"  # float32, batch x classes


def transformer_configs(model: nn.Module) -> list[Any]:
    """Configs of the Hugging Face models inside `model` (the CLIP vision tower), if any."""
    return [
        module.config
        for module in model.modules()
        if hasattr(module, "config") and hasattr(module.config, "num_attention_heads")
    ]


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """ONNX Runtime's quantizer logs advice at WARNING on the root logger: raise its level for the call only."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


@contextlib.contextmanager
def _eager_attention(configs: list[Any]) -> Iterator[None]:
    """Export attention as plain MatMul/Softmax (not SDPA), the pattern ONNX Runtime fuses into one op."""
    saved = [config._attn_implementation for config in configs]
    for config in configs:
        config._attn_implementation = "eager"
    try:
        yield
    finally:
        for config, value in zip(configs, saved, strict=True):
            config._attn_implementation = value


def export_onnx(model: nn.Module, path: Path, fuse: bool = True) -> Path:
    """Export `model` (eval mode, on the CPU) with a dynamic batch axis, optimised for the CPU.

    A transformers tower is exported with eager attention and then (with `fuse`) fused by ONNX
    Runtime's transformer optimizer (one Attention op per layer, QuickGelu, SkipLayerNorm): both
    fp32 and the dynamic int8 model made from it run markedly faster (docs/latency.md).
    Static int8 needs the plain graph: its calibrator cannot see through the fused ops.
    """
    import onnx

    model = model.eval().cpu()
    example = torch.zeros(2, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.uint8)  # batch 2: 1 would be specialised away
    path.parent.mkdir(parents=True, exist_ok=True)
    configs = transformer_configs(model)
    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet), _eager_attention(configs):
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            external_data=False,
        )
    graph = onnx.load(str(path))
    # The exporter's intermediate shape annotations trip ONNX Runtime's quantizer; they are optional.
    del graph.graph.value_info[:]
    onnx.save(graph, str(path))
    return fuse_transformer(configs[0], path, path) if configs and fuse else path


def fuse_transformer(config: Any, source: Path, target: Path) -> Path:
    """The plain ONNX export `source` of a transformers tower (`config`: its Hugging Face config) through ONNX
    Runtime's transformer optimizer, at `target`: one Attention op per layer, QuickGelu, SkipLayerNorm."""
    from onnxruntime.transformers.optimizer import optimize_model

    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
        optimized = optimize_model(
            str(source),
            model_type="clip",
            num_heads=int(config.num_attention_heads),
            hidden_size=int(config.hidden_size),
            opt_level=0,
        )
    optimized.save_model_to_file(str(target))
    return target


def quantize_int8(source: Path, target: Path) -> Path:
    """Dynamic int8 quantization (weights int8, activations quantized on the fly): no calibration data."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # Fused ONNX Runtime ops have no ONNX shape inference: their outputs are float32.
    with _quiet_root_logger():
        quantize_dynamic(
            str(source),
            str(target),
            weight_type=QuantType.QInt8,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    return target


COMPUTE_OPS = ("Conv", "MatMul", "Gemm")  # the first of these in the graph starts the network proper


class CalibrationReader:
    """Feeds calibration images to ONNX Runtime's static quantizer one batch at a time.

    The quantizer reads it in windows of batches (`set_range`) and folds each window's activation
    statistics into running ones, so memory stays that of one batch's activations (a ViT-B's are
    ~1 GB per 32 images) instead of growing with the number of calibration images.
    """

    def __init__(self, images: np.ndarray, batch_size: int = 16) -> None:
        if images.ndim != 3 or images.dtype != np.uint8 or len(images) == 0:
            raise FerbenchError("static int8 calibration needs a non-empty uint8 batch x 48 x 48 array of images")
        self.batches = [images[start : start + batch_size] for start in range(0, len(images), batch_size)]
        self.window = range(len(self.batches))
        self.position = 0

    def __len__(self) -> int:
        return len(self.batches)

    def set_range(self, start_index: int, end_index: int) -> None:
        self.window = range(start_index, min(end_index, len(self.batches)))
        self.position = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.position >= len(self.window):
            return None
        batch = self.batches[self.window[self.position]]
        self.position += 1
        return {INPUT_NAME: np.ascontiguousarray(batch)}


def preprocessing_nodes(graph: Any) -> list[str]:
    """Names of the nodes that feed the first convolution or matmul: the in-graph preprocessing (cast, resize,
    normalisation, and the test-time-augmentation views)."""
    producers = {output: node for node in graph.node for output in node.output}
    first = next((node for node in graph.node if node.op_type in COMPUTE_OPS), None)
    if first is None:
        return []
    names: set[str] = set()
    pending = [first.input[0]]
    while pending:
        node = producers.get(pending.pop())
        if node is not None and node.name not in names:
            names.add(node.name)
            pending.extend(node.input)
    return sorted(names)


def fp32_nodes(graph: Any) -> list[str]:
    """What static int8 leaves in fp32: the preprocessing, and the classifier head (the last matmul), whose
    error moves the logits directly for a negligible share of the work (measured on a ResNet18 trained on
    FER-2013: agreement with fp32 0.985 -> 0.995, and no slower)."""
    compute = [node.name for node in graph.node if node.op_type in COMPUTE_OPS]
    return preprocessing_nodes(graph) + compute[-1:]


def quantize_int8_static(source: Path, target: Path, calibration: np.ndarray, method: str = "percentile") -> Path:
    """Static int8 quantization in QDQ form: per-channel int8 weights, uint8 activations whose ranges are
    measured on `calibration` (train images only: val and test judge the result).

    ONNX Runtime fuses every Q/DQ pair around a convolution or matmul into one int8 kernel. The graph
    first goes through ONNX Runtime's documented quantization pre-processing (shape inference, constant
    folding). The in-graph preprocessing and the head stay fp32 (`fp32_nodes`).
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    target.parent.mkdir(parents=True, exist_ok=True)
    prepared = target.with_name(target.stem + ".prepared.onnx")
    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet), _quiet_root_logger():
        quant_pre_process(str(source), str(prepared))
    graph = onnx.load(str(prepared))
    for index, node in enumerate(graph.graph.node):
        node.name = node.name or f"{node.op_type}_{index}"
    onnx.save(graph, str(prepared))
    calibrate_method = {
        "percentile": CalibrationMethod.Percentile,
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
    }[method]
    try:  # CalibStridedMinMax 1: statistics folded in after every batch (see CalibrationReader)
        with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet), _quiet_root_logger():
            quantize_static(
                str(prepared),
                str(target),
                CalibrationReader(calibration),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=calibrate_method,
                nodes_to_exclude=fp32_nodes(graph.graph),
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT, "CalibStridedMinMax": 1},
            )
    finally:
        prepared.unlink(missing_ok=True)
    return target


def onnx_session(path: Path, threads: int, spinning: bool = True):  # -> onnxruntime.InferenceSession
    """A CPU session using `threads` threads for each operator, one operator at a time.

    Without `spinning`, idle worker threads sleep instead of busy-waiting for the next run: a
    little slower for back-to-back model calls, much better when other work (face detection,
    drawing) shares the cores between calls.
    """
    import onnxruntime as ort

    if not path.is_file():
        raise FerbenchError(f"{path}: ONNX model not found")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_logits(session, images: np.ndarray) -> np.ndarray:
    """Logits of a uint8 batch (N x 48 x 48) from an ONNX Runtime session."""
    return session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(images, dtype=np.uint8)})[0]
