"""Release a model folder: copy what serving needs (the card, its markdown and the model file, with its weights
file for OpenVINO) into a folder that can live in git, such as `models/released/`, and check that the copy
loads and answers probabilities (no NaN, no infinity) on a few faces.

The training checkpoint stays behind (it is for re-exporting, not serving, and several times the
size of an int8 model); the card drops it from its files and keeps the SHA-256 of what remains,
which `EmotionModel` checks at every load.

    ferbench-release runs/real-cpu/models/selected models/released
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from ferbench.errors import FerbenchError
from ferbench.models.card import CARD_FILE, CardFiles, ModelCard
from ferbench.models.folder import EmotionModel, checksums, read_card, verified_file, write_card


def release_model(source: Path, destination: Path) -> ModelCard:
    """Copy `source`'s serving files to `destination` (replacing a folder this command released before,
    never another one) and return the released card."""
    card = read_card(source)
    if card.trained_on_synthetic_data:
        raise FerbenchError(f"{source}: trained on synthetic faces (make demo); release a model trained on FER-2013")
    roles = ["model"] + (["weights"] if card.files.weights else [])  # serving needs no checkpoint: it stays behind
    served = {role: verified_file(source, card, role) for role in roles}
    if destination.exists() and not (destination / CARD_FILE).is_file():
        raise FerbenchError(f"{destination}: exists and is not a model folder; choose an empty or new folder")
    files = CardFiles(**{role: path.name for role, path in served.items()})
    card = card.model_copy(update={"files": files, "sha256": checksums(source, files.model_dump())})
    destination.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=destination.parent) as scratch:
        staged = Path(scratch) / "model"
        staged.mkdir()
        for path in served.values():
            shutil.copyfile(path, staged / path.name)
        write_card(staged, card)
        check_answers(EmotionModel(staged))  # the copy loads, its outputs match its classes and are probabilities
        shutil.rmtree(destination, ignore_errors=True)
        staged.rename(destination)
    return card


def probe_faces(count: int = 16) -> np.ndarray:
    """Synthetic 48x48 faces (the demo's generator, seeded) and the extremes (black, white, noise): enough to
    catch a model that answers NaN or infinite scores."""
    from ferbench.constants import FER2013_CLASSES
    from ferbench.data.synthetic import render_face

    rng = np.random.default_rng(0)
    faces = np.stack([render_face(FER2013_CLASSES[index % 7], rng) for index in range(count)])
    extremes = [np.zeros_like(faces[0]), np.full_like(faces[0], 255), rng.integers(0, 256, faces[0].shape, np.uint8)]
    return np.concatenate([faces, np.stack(extremes)])


def check_answers(model: EmotionModel) -> None:
    """Refuse a folder whose model does not answer probabilities on a few faces."""
    probabilities = model.probabilities(probe_faces())  # raises on NaN or infinite scores
    if not np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-3):
        raise FerbenchError(f"{model.folder}: its probabilities do not sum to 1; re-export it with `dvc repro select`")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ferbench-release",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("source", type=Path, help="a model folder written by the pipeline (models/selected)")
    parser.add_argument("destination", type=Path, help="the release folder, e.g. models/released")
    args = parser.parse_args(argv)
    try:
        card = release_model(args.source, args.destination)
    except FerbenchError as exc:
        print(f"release: error: {exc}", file=sys.stderr)
        return 2
    size = sum(path.stat().st_size for path in args.destination.iterdir())
    print(f"release: {args.destination} ({card.backbone}, {card.variant}, {size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
