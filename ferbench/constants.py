"""The ground floor: the FER-2013 label set and image size, in the order every file of the project uses,
and every list of allowed values that more than the params schema needs (model cards, exports).

It imports nothing, so the data, model, serving and pipeline modules can all build on it without
depending on one another; `ferbench.schema` turns these lists into the params' types.
"""

FER2013_CLASSES: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
IMAGE_SIZE = 48

DATA_SOURCES: tuple[str, ...] = ("kaggle", "archive", "synthetic")
BACKBONE_SOURCES: tuple[str, ...] = ("torchvision", "timm", "transformers", "ferbench")
INPUT_SIZE_RANGE = (8, 1024)  # smallest and largest input side a backbone may be run at, in pixels
OPTIMIZERS: tuple[str, ...] = ("adam", "adamw", "sgd")
SCHEDULERS: tuple[str, ...] = ("none", "cosine", "step", "onecycle", "plateau")
CLASS_WEIGHTING: tuple[str, ...] = ("none", "balanced")
SAMPLERS: tuple[str, ...] = ("shuffle", "balanced")
PRECISIONS: tuple[str, ...] = ("auto", "bf16", "fp32")
RANGE_METHODS: tuple[str, ...] = ("percentile", "minmax", "entropy")
# the runtime variants a classifier is exported in (ferbench.models.variants describes each), the reference first
RUNTIME_VARIANTS: tuple[str, ...] = (
    "torch_fp32",
    "onnx_fp32",
    "onnx_int8",
    "onnx_int8_static",
    "openvino_fp32",
    "openvino_int8",
)
CRITERIA: tuple[str, ...] = ("accuracy", "generalization")
TTA_MODES: tuple[str, ...] = ("auto", "always", "never")
TTA_SHIFTS: tuple[int, ...] = (0, 4, 8)  # shifted views: none, left/right/up/down, and diagonally
TTA_SHIFT_PIXELS_RANGE = (1, 8)
KEEP_OR_DROP: tuple[str, ...] = ("keep", "drop")
BATCH_MODES: tuple[str, ...] = ("global", "per_process")
LR_SCALING: tuple[str, ...] = ("none", "linear", "sqrt")
TEACHER_STAGES: tuple[str, ...] = ("train", "finetune")  # whose checkpoints may teach a distilled student
CANDIDATE_STAGES: tuple[str, ...] = ("train", "distill")  # whose checkpoints compete to be shipped
SOFT_TARGETS: tuple[str, ...] = ("cached", "online")  # teachers' outputs on the clean images, or on each batch
TEMPERATURE_RANGE = (0.05, 20.0)  # a calibration temperature is fitted, and a model card's accepted, within this
MAX_CLASS_NAME = 40  # characters of a class name in a model card (they reach every row and plot)
