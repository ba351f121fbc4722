"""ONNX export of a whole classifier (uint8 48x48 in, logits out) and its int8 dynamic quantization.

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

from ferbench.data.classes import IMAGE_SIZE
from ferbench.errors import FerbenchError

INPUT_NAME = "images"  # uint8, batch x 48 x 48
OUTPUT_NAME = "logits"  # float32, batch x classes


def _transformer_configs(model: nn.Module) -> list[Any]:
    """Configs of the Hugging Face models inside `model` (the CLIP vision tower), if any."""
    return [module.config for module in model.modules()
            if hasattr(module, "config") and hasattr(module.config, "num_attention_heads")]  # fmt: skip


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


def export_onnx(model: nn.Module, path: Path) -> Path:
    """Export `model` (eval mode, on the CPU) with a dynamic batch axis, optimised for the CPU.

    A transformers tower is exported with eager attention and then fused by ONNX Runtime's
    transformer optimizer (one Attention op per layer, QuickGelu, SkipLayerNorm): both fp32 and
    the int8 model made from it run markedly faster (README: latency benchmark).
    """
    import onnx

    model = model.eval().cpu()
    example = torch.zeros(2, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.uint8)  # batch 2: 1 would be specialised away
    path.parent.mkdir(parents=True, exist_ok=True)
    configs = _transformer_configs(model)
    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet), _eager_attention(configs):
        torch.onnx.export(model, (example,), str(path), dynamo=True, input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], dynamic_shapes=({0: torch.export.Dim("batch")},),
                          external_data=False)  # fmt: skip
    graph = onnx.load(str(path))
    # The exporter's intermediate shape annotations trip ONNX Runtime's quantizer; they are optional.
    del graph.graph.value_info[:]
    onnx.save(graph, str(path))
    if configs:
        from onnxruntime.transformers.optimizer import optimize_model

        config = configs[0]
        with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
            optimized = optimize_model(str(path), model_type="clip", num_heads=int(config.num_attention_heads),
                                       hidden_size=int(config.hidden_size), opt_level=0)  # fmt: skip
        optimized.save_model_to_file(str(path))
    return path


def quantize_int8(source: Path, target: Path) -> Path:
    """Dynamic int8 quantization (weights int8, activations quantized on the fly): no calibration data."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.getLogger().setLevel(logging.ERROR)  # the quantizer logs advice at WARNING on the root logger
    # Fused ONNX Runtime ops have no ONNX shape inference: their outputs are float32.
    quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8,
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})  # fmt: skip
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
