"""The runtime variants a trained classifier is exported in, named once: what runs each and the file it is
in a model folder. The latency stage times them, deploy ships the fastest faithful one, the model card
names it and serving loads it. Kept free of torch and onnxruntime imports so that reading a card is cheap.
"""

from __future__ import annotations

from dataclasses import dataclass

CHECKPOINT_FILE = "model.pt"  # the PyTorch checkpoint a model folder keeps for re-exporting


@dataclass(frozen=True)
class Variant:
    """One way to run the classifier on the CPU."""

    name: str
    runtime: str  # what loads the file: torch | onnxruntime
    file: str  # its file name inside a model folder
    description: str

    @property
    def onnx(self) -> bool:
        return self.runtime == "onnxruntime"


VARIANTS: dict[str, Variant] = {
    variant.name: variant
    for variant in (
        Variant("torch_fp32", "torch", CHECKPOINT_FILE, "PyTorch eager, fp32"),
        Variant("onnx_fp32", "onnxruntime", "model.onnx", "ONNX Runtime, fp32"),
        Variant("onnx_int8", "onnxruntime", "model.int8.onnx", "ONNX Runtime, int8 weights, dynamic activations"),
        Variant("onnx_int8_static", "onnxruntime", "model.int8-static.onnx", "ONNX Runtime, int8 calibrated on train"),
    )
}
REFERENCE = "torch_fp32"  # what every other variant's agreement is measured against
RUNTIMES: tuple[str, ...] = tuple(dict.fromkeys(variant.runtime for variant in VARIANTS.values()))
