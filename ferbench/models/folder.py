"""A model folder (`models/selected/`, `models/deploy/<candidate>/`, any `--model DIR`): its card and files, and
the loaded model (`EmotionModel`) that serving and the release check share.

Model folders are untrusted input (they get downloaded and shared): `read_card` validates the card
(`ferbench.models.card.ModelCard`) with one line per problem, every file it names stays inside the folder,
and a file whose SHA-256 differs from the card's is refused. Nothing outside the folder is ever opened:
a PyTorch folder is rebuilt from its own checkpoint, never from weights or hub names the card mentions.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from ferbench.constants import IMAGE_SIZE
from ferbench.errors import FerbenchError
from ferbench.models.card import CARD_FILE, MARKDOWN_FILE, ModelCard
from ferbench.models.variants import VARIANTS

MAX_CARD_BYTES = 1 << 20  # a card is a few KB
REEXPORT = "re-export the model with `dvc repro select`"


def _card_problem(error: Mapping[str, Any]) -> str:
    """One validation error of a card as 'the card's KEY is VALUE; what is wrong'."""
    key = ".".join(str(part) for part in error["loc"])
    if error["type"] == "missing":
        return f"the card has no '{key}'"
    if error["type"] == "literal_error":
        allowed = str(error.get("ctx", {}).get("expected", "")).replace("'", "").replace(" or ", ", ")
        return f"the card's '{key}' is {error['input']!r}; use one of: {allowed}"
    message = str(error.get("ctx", {}).get("error", error["msg"])).removeprefix("Value error, ")
    return f"the card's '{key}' is {error['input']!r}; {message[0].lower() + message[1:]}"


def read_card(folder: Path) -> ModelCard:
    """Load and validate a model card, which is untrusted input: every error is one line naming the file,
    the field and the fix."""
    path = Path(folder) / CARD_FILE
    if not path.is_file():
        raise FerbenchError(
            f"{path}: no model card; run `dvc repro` (the select stage writes models/selected/) "
            "or pass the folder of a selected model"
        )
    if path.stat().st_size > MAX_CARD_BYTES:
        raise FerbenchError(f"{path}: not a model card (a regular file of at most {MAX_CARD_BYTES:,} bytes)")
    try:
        text = path.read_text()
        json.loads(text)  # the standard parser first: a clear message for text that is not JSON at all
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise FerbenchError(f"{path}: not a readable model card ({reason}); {REEXPORT}") from None
    try:
        return ModelCard.model_validate_json(text)
    except ValidationError as exc:
        raise FerbenchError(f"{path}: {_card_problem(exc.errors()[0])}; {REEXPORT}") from None


def write_card(folder: Path, card: ModelCard) -> None:
    """The card and its markdown rendering, side by side in the folder."""
    (folder / CARD_FILE).write_text(card.to_json())
    (folder / MARKDOWN_FILE).write_text(card.markdown())


def card_file(folder: Path, card: ModelCard, role: str) -> Path:
    """The file the card names for `role` ("model" or "checkpoint"), which must resolve inside the folder
    (the card's validation already refused absolute names and '..'; this catches links that lead out)."""
    folder = Path(folder)
    path = folder / getattr(card.files, role)
    if not path.resolve().is_relative_to(folder.resolve()):
        raise FerbenchError(f"{folder / CARD_FILE}: files.{role} {path.name!r} leads outside the model folder")
    return path


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checksums(folder: Path, files: Mapping[str, str | None]) -> dict[str, str]:
    """The card's `sha256`: each named file's digest, so a damaged or swapped file is caught at load."""
    return {name: file_sha256(Path(folder) / name) for name in sorted({name for name in files.values() if name})}


def verified_file(folder: Path, card: ModelCard, role: str) -> Path:
    """`card_file` for `role`, present, and matching the card's SHA-256 when the card records one."""
    path = card_file(folder, card, role)
    if not path.is_file():
        raise FerbenchError(f"{path}: the {role} file the card names is missing; copy the whole model folder")
    expected = card.sha256.get(path.name)
    if expected is not None and file_sha256(path) != expected:
        raise FerbenchError(
            f"{path}: its SHA-256 differs from the card's; the file is damaged or was replaced: copy the model "
            "folder again"
        )
    return path


def calibrated_probabilities(logits: np.ndarray, temperature: float) -> np.ndarray:
    """What a card's probabilities mean: the softmax of the logits divided by its temperature (float64)."""
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    scaled -= scaled.max(axis=1, keepdims=True)
    exp = np.exp(scaled)
    return exp / exp.sum(axis=1, keepdims=True)


class EmotionModel:
    """A model folder loaded for inference: uint8 crops (N x 48 x 48) -> class probabilities (N x classes).

    The preprocessing and any test-time augmentation live inside the exported model, so nothing is
    re-declared here; the card's temperature (fitted on val) calibrates the probabilities."""

    def __init__(self, folder: Path | str, threads: int | None = None) -> None:
        cores = os.cpu_count() or 1
        if threads is not None and not 1 <= threads <= cores:
            raise FerbenchError(f"threads {threads}: use 1 to {cores} (the CPU cores of this machine) or all of them")
        self.folder = Path(folder)
        self.card = read_card(self.folder)
        self.classes: list[str] = list(self.card.classes)
        path = verified_file(self.folder, self.card, "model")
        try:
            self._logits = self._load(path, threads)
            width = np.shape(self._logits(np.zeros((1, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)))
        except FerbenchError:
            raise
        except Exception as exc:  # a damaged or foreign file: the runtimes raise their own exception types
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise FerbenchError(
                f"{path}: cannot load the model ({first_line[:200]}); the file is damaged or not "
                "a ferbench export: copy the model folder again or re-run `dvc repro select`"
            ) from exc
        if width != (1, len(self.classes)):
            raise FerbenchError(
                f"{self.folder}: the model outputs {width[-1]} scores but the card lists "
                f"{len(self.classes)} classes; the card does not belong to this model"
            )

    def _load(self, path: Path, threads: int | None) -> Callable[[np.ndarray], np.ndarray]:
        variant = VARIANTS[self.card.variant]
        if variant.openvino or variant.onnx:
            from ferbench.models.runtimes import file_runtime

            weights = None
            if variant.openvino:
                if self.card.files.weights is None:
                    raise FerbenchError(f"{self.folder / CARD_FILE}: an OpenVINO model needs files.weights (its .bin)")
                weights = verified_file(self.folder, self.card, "weights")
            # 0 threads: the runtime picks the number of cores; no spinning: detection shares the cores
            return file_runtime(variant, path, weights, threads or 0, spinning=False).logits
        import torch

        from ferbench.models.classifier import load_classifier, with_tta
        from ferbench.models.runtimes import torch_runtime

        if threads:
            torch.set_num_threads(threads)
        model = load_classifier(self.card.spec, path, len(self.classes), folder_only=True)
        return torch_runtime(with_tta(model, self.card.tta.config)).logits

    def probabilities(self, crops: np.ndarray) -> np.ndarray:
        """Calibrated probabilities of a batch of 48x48 uint8 crops, in one model call."""
        if len(crops) == 0:
            return np.zeros((0, len(self.classes)), dtype=np.float32)
        logits = np.asarray(self._logits(crops))
        if not np.isfinite(logits).all():
            raise FerbenchError(
                f"{self.folder}: the model answered NaN or infinite scores, which are no probabilities; the "
                "model file is broken: copy the model folder again or re-export it with `dvc repro select`"
            )
        return calibrated_probabilities(logits, self.card.temperature).astype(np.float32)
