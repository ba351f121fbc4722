"""The runtime variants a trained classifier is exported in, named once: what runs each and the files it is
in a model folder. The latency stage times them, deploy ships the fastest faithful one, the model card
names it and serving loads it. Kept free of torch, onnxruntime and openvino imports so that reading a card
is cheap. OpenVINO is optional: without it, its variants are skipped (`missing_packages`).
"""

from __future__ import annotations

from dataclasses import dataclass

from ferbench.constants import RUNTIME_VARIANTS

CHECKPOINT_FILE = "model.pt"  # the PyTorch checkpoint a model folder keeps for re-exporting


@dataclass(frozen=True)
class Variant:
    """One way to run the classifier on the CPU."""

    name: str
    runtime: str  # what loads the file: torch | onnxruntime | openvino
    file: str  # its file name inside a model folder
    description: str
    weights: str | None = None  # OpenVINO IR: the weights file beside the graph (.bin beside .xml)
    int8: str | None = None  # how its int8 ranges are calibrated on train images: None (fp32, dynamic) | ort | nncf
    precision: str | None = None  # OpenVINO: the precision of the operations not in int8 (bf16 only on native bf16)

    @property
    def onnx(self) -> bool:
        return self.runtime == "onnxruntime"

    @property
    def openvino(self) -> bool:
        return self.runtime == "openvino"

    @property
    def files(self) -> tuple[str, ...]:
        return (self.file,) if self.weights is None else (self.file, self.weights)


VARIANTS: dict[str, Variant] = {
    variant.name: variant
    for variant in (
        Variant("torch_fp32", "torch", CHECKPOINT_FILE, "PyTorch eager, fp32"),
        Variant("onnx_fp32", "onnxruntime", "model.onnx", "ONNX Runtime, fp32"),
        Variant("onnx_int8", "onnxruntime", "model.int8.onnx", "ONNX Runtime, int8 weights, dynamic activations"),
        Variant(
            "onnx_int8_static",
            "onnxruntime",
            "model.int8-static.onnx",
            "ONNX Runtime, int8 calibrated on train",
            int8="ort",
        ),
        Variant(
            "openvino_fp32",
            "openvino",
            "model.openvino.xml",
            "OpenVINO, fp32",
            weights="model.openvino.bin",
            precision="f32",
        ),
        Variant(
            "openvino_int8",
            "openvino",
            "model.openvino-int8.xml",
            "OpenVINO, int8 by NNCF calibrated on train",
            weights="model.openvino-int8.bin",
            int8="nncf",
            precision="bf16",
        ),
    )
}
if tuple(VARIANTS) != RUNTIME_VARIANTS:  # the names params accept (latency.variants) are these
    raise ImportError("ferbench.models.variants and constants.RUNTIME_VARIANTS name different variants")
REFERENCE = RUNTIME_VARIANTS[0]  # what every other variant's agreement is measured against
RUNTIMES: tuple[str, ...] = tuple(dict.fromkeys(variant.runtime for variant in VARIANTS.values()))

OPENVINO_INSTALL = "pip install openvino==2026.4.1 nncf==3.4.0 (the versions requirements.txt pins)"


def missing_packages(variant: Variant) -> list[str]:
    """The optional packages a variant needs that cannot be imported here (found without importing them):
    OpenVINO for its variants, and NNCF, its quantizer, to make the int8 one."""
    import importlib.util

    needed = (["openvino"] if variant.openvino else []) + (["nncf"] if variant.int8 == "nncf" else [])
    return [name for name in needed if importlib.util.find_spec(name) is None]
