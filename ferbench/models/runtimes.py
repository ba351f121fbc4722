"""Running a classifier on a batch of 48x48 uint8 faces: PyTorch eager, or an ONNX Runtime session.

Shared by serving (`ferbench.serving.inference`) and the latency and deploy code, so serving needs no
pipeline module to run a model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ferbench.models.export import onnx_logits, onnx_session


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

    return Runtime("torch_fp32", logits)


def onnx_runtime(name: str, path: Path, threads: int) -> Runtime:
    session = onnx_session(path, threads)
    return Runtime(name, lambda images: onnx_logits(session, images))
