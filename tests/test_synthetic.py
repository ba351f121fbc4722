import zipfile

import numpy as np
import pytest
import torch
from torch import nn

from ferbench.constants import FER2013_CLASSES
from ferbench.data.decode import decode_fer
from ferbench.data.synthetic import render_face, write_synthetic_archive
from ferbench.errors import FerbenchError
from tests.support import SMALL_COUNTS


def _read_all(path):
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def test_archive_has_kaggle_layout_and_counts(synthetic_archive):
    members = _read_all(synthetic_archive)
    for split, per_class in SMALL_COUNTS.items():
        for name, count in per_class.items():
            assert sum(m.startswith(f"{split}/{name}/") for m in members) == count
    sample = decode_fer(next(iter(members.values())))
    assert sample.pixels.shape == (48, 48) and sample.pixels.dtype == np.uint8
    assert not sample.converted and not sample.resized


def test_same_seed_same_bytes_and_other_seed_differs(tmp_path):
    counts = {"train": {"happy": 3, "sad": 2}, "test": {"happy": 1}}
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        assert write_synthetic_archive(tmp_path / f"{name}.zip", counts, seed=seed) == {"train": 5, "test": 1}
    first, again, other = (_read_all(tmp_path / f"{name}.zip") for name in "abc")
    assert first == again
    assert first.keys() == other.keys() and first != other


def test_changing_one_class_count_keeps_other_images(tmp_path):
    write_synthetic_archive(tmp_path / "a.zip", {"train": {"happy": 2, "sad": 2}}, seed=3)
    write_synthetic_archive(tmp_path / "b.zip", {"train": {"happy": 2, "sad": 5}}, seed=3)
    a, b = _read_all(tmp_path / "a.zip"), _read_all(tmp_path / "b.zip")
    assert all(b[name] == data for name, data in a.items())


def test_unknown_class_in_counts_is_a_clear_error(tmp_path):
    with pytest.raises(FerbenchError, match="unknown class 'contempt'"):
        write_synthetic_archive(tmp_path / "a.zip", {"train": {"contempt": 3}}, seed=0)


def test_images_vary_within_a_class():
    faces = [render_face("happy", np.random.default_rng(i)) for i in range(5)]
    assert all(f.std() > 10 for f in faces)
    assert len({f.tobytes() for f in faces}) == 5


def standardized(images: np.ndarray) -> torch.Tensor:
    x = torch.tensor(images, dtype=torch.float32).unsqueeze(1)
    return (x - x.mean((2, 3), keepdim=True)) / (x.std((2, 3), keepdim=True) + 1e-6)


@pytest.mark.slow
def test_classes_are_learnable_by_a_small_cnn():
    """The learnability hook: a tiny CNN trained for seconds beats chance (1/7) by far."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(7), 50)
    images = np.stack([render_face(FER2013_CLASSES[c], rng) for c in labels])
    test_labels = np.repeat(np.arange(7), 15)
    test_images = np.stack([render_face(FER2013_CLASSES[c], rng) for c in test_labels])
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 16, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(4),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(3),
        nn.Flatten(),
        nn.Linear(288, 7),
    )
    optimizer = torch.optim.Adam(model.parameters(), 3e-3)
    x, y = standardized(images), torch.tensor(labels)
    for _ in range(15):
        for batch in torch.randperm(len(x)).split(50):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            optimizer.step()
    with torch.no_grad():
        accuracy = (model(standardized(test_images)).argmax(1) == torch.tensor(test_labels)).float().mean().item()
    assert accuracy > 3 / 7
