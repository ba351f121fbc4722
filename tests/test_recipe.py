"""The training recipe: augmentation, schedules, weight averaging, the balanced sampler, TTA and calibration."""

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from ferbench.errors import FerbenchError
from ferbench.evaluation.calibration import (
    calibration_report,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    reliability_table,
)
from ferbench.models.checkpoint import load_checkpoint
from ferbench.models.classifier import TTAClassifier, with_tta
from ferbench.schema import Recipe
from ferbench.training.augment import affine_matrices, augment_images, mix_batch, warp
from ferbench.training.engine import Batches, _scheduler, balanced_sample, ramped_ema, weight_average
from tests.support import augment, recipe, train, tta

RECIPE = augment(shift=0.1, rotate=15, scale=0.15, erase=0.5)


def faces(count: int = 64, seed: int = 0) -> torch.Tensor:
    """Asymmetric uint8 images (a gradient plus noise), so any flip or warp shows."""
    generator = torch.Generator().manual_seed(seed)
    ramp = torch.linspace(0, 200, 48).view(1, 1, 48).expand(count, 48, 48)
    return (ramp + torch.randint(0, 50, (count, 48, 48), generator=generator)).to(torch.uint8)


def _original_or_mirror(out: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Per image: is the output exactly the input or its mirror image?"""
    out = out.float()
    plain = (out == images.float()).flatten(1).all(1)
    mirrored = (out == images.flip(-1).float()).flatten(1).all(1)
    return plain | mirrored


def test_augmentation_keeps_shapes_is_seeded_and_changes_images():
    images = faces()
    torch.manual_seed(3)
    first = augment_images(images, flip=True, config=RECIPE)
    torch.manual_seed(3)
    again = augment_images(images, flip=True, config=RECIPE)
    assert first.shape == images.shape and first.dtype == torch.float32
    assert first.min() >= 0 and first.max() <= 255
    torch.testing.assert_close(first, again)  # reproducible from the seed
    assert not _original_or_mirror(first, images).any()  # every image is warped, not just flipped
    torch.manual_seed(4)
    assert not torch.equal(augment_images(images, flip=True, config=RECIPE), first)
    flip_only = augment_images(images, flip=True, config=augment())
    assert flip_only.dtype == torch.uint8 and _original_or_mirror(flip_only, images).all()


def test_the_affine_path_matches_reference_transforms():
    image = faces(1)[0].float().unsqueeze(0)
    quarter_turn = torch.tensor([[[0.0, -1.0, 0.0], [1.0, 0.0, 0.0]]])  # output (x, y) samples input (-y, x)
    torch.testing.assert_close(warp(image, quarter_turn), torch.rot90(image, 1, dims=(1, 2)), atol=1e-3, rtol=0)
    three_pixels = torch.tensor([[[1.0, 0.0, 2 * 3 / 48], [0.0, 1.0, 0.0]]])  # output x samples input x + 3
    expected = torch.cat([image[:, :, 3:], image[:, :, -1:].expand(1, 48, 3)], dim=2)  # edge replicated
    torch.testing.assert_close(warp(image, three_pixels), expected, atol=1e-3, rtol=0)
    mirror_only = affine_matrices(200, flip=True, config=augment(), device=torch.device("cpu"))
    signs = mirror_only[:, 0, 0]
    assert set(signs.tolist()) == {-1.0, 1.0} and 60 < int((signs < 0).sum()) < 140
    torch.testing.assert_close(warp(image, mirror_only[signs < 0][:1]), image.flip(-1), atol=1e-3, rtol=0)


def test_random_erasing_replaces_one_rectangle():
    images = torch.zeros(32, 48, 48, dtype=torch.uint8)
    torch.manual_seed(0)
    out = augment_images(images, flip=False, config=augment(erase=1.0))
    changed = out > 0
    for mask in changed:
        rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
        assert 0 < mask.sum() <= 0.25 * 48 * 48 + 48  # one rectangle of 2-25% of the image
        assert mask[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].float().mean() > 0.9


def test_mixup_and_cutmix_weights_and_partners():
    images = faces(16).float()
    torch.manual_seed(1)
    expected_partner = torch.randperm(16)  # mix_batch's first draw
    torch.manual_seed(1)
    mixed, partner, weight = mix_batch(images, augment(mixup=0.4))
    assert torch.equal(partner, expected_partner) and 0 <= weight <= 1
    torch.testing.assert_close(mixed, weight * images + (1 - weight) * images[partner])
    torch.manual_seed(2)
    cut, partner, kept = mix_batch(images, augment(cutmix=1.0))
    from_original = (cut == images).flatten(1).float().mean(1)
    assert from_original.min() >= kept - 1e-6  # at least the kept share of every image is its own
    assert 0 <= kept <= 1


def test_timms_mixup_and_erasing_do_not_fit_a_seeded_resumable_run_on_any_batch():
    """Why augment.py keeps its own mixup, cutmix and erasing (its docstring)."""
    import random

    from timm.data import Mixup
    from timm.data.random_erasing import RandomErasing

    with pytest.raises(AssertionError, match="even"):
        Mixup(mixup_alpha=0.2, num_classes=7)(torch.zeros(7, 1, 48, 48), torch.zeros(7, dtype=torch.long))
    mixed, partner, _ = mix_batch(faces(7).float(), augment(mixup=0.2))  # ours: any batch
    assert mixed.shape == (7, 48, 48) and sorted(partner.tolist()) == list(range(7))
    erase = RandomErasing(probability=1.0, mode="const", device="cpu")
    erased = []
    for python_seed in (1, 2):
        torch.manual_seed(0)
        random.seed(python_seed)
        erased.append(erase(torch.ones(4, 1, 48, 48)))
    assert not torch.equal(*erased)  # torch's seed alone does not decide timm's boxes


class Recorder(nn.Module):
    """A linear model on pixels that records every batch it is trained on."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(48 * 48, 7)
        self.seen: list[torch.Tensor] = []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.seen.append(images.detach().clone())
        return self.linear(images.float().flatten(1) / 255)


def test_the_engine_trains_on_augmented_images(tmp_path):
    images, labels = faces(64), torch.arange(64) % 7
    data = Batches(images, labels)
    model = Recorder()
    train(model, data, data, recipe(epochs=1, batch_size=64, lr=0.01, augment=RECIPE), 7, tmp_path / "m.pt")
    (batch,) = model.seen
    assert batch.dtype == torch.float32
    # the batch is a permutation of the images: none of them may be an exact copy or mirror of its source
    assert not any(_original_or_mirror(batch[i : i + 1].expand(64, 48, 48), images).any() for i in range(64))


def test_balanced_sampler_draws_classes_about_equally():
    labels = torch.tensor([0] * 900 + [1] * 90 + [2] * 10)
    torch.manual_seed(0)
    drawn = torch.bincount(labels[balanced_sample(labels, 3)], minlength=3)
    assert drawn.sum() == 1000 and drawn.min() > 270 and drawn.max() < 400


def _learning_rates(config: Recipe, steps_per_epoch: int) -> list[float]:
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=config.lr)
    scheduler = _scheduler(optimizer, config, steps_per_epoch)
    rates = []
    for _ in range(config.epochs * steps_per_epoch):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def test_warmup_then_cosine_and_step_schedules():
    config = recipe(epochs=10, batch_size=1, lr=0.1, scheduler="cosine", warmup_epochs=2)
    rates = _learning_rates(config, steps_per_epoch=10)
    assert rates[0] == pytest.approx(0.001)  # warm-up starts at 1% of the rate
    assert rates[10] == pytest.approx(0.001 + 0.099 * 10 / 20)  # linear
    assert rates[20] == pytest.approx(0.1)  # the peak, after 2 epochs
    assert rates[60] == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 40 / 80)))  # half-way down the cosine
    assert rates[-1] < 0.001 and all(a >= b for a, b in itertools.pairwise(rates[20:]))
    step = _learning_rates(recipe(epochs=9, batch_size=1, lr=1.0, scheduler="step"), steps_per_epoch=2)
    assert step[:6] == [1.0] * 6 and step[6:12] == pytest.approx([0.1] * 6) and step[12:] == pytest.approx([0.01] * 6)
    assert (
        _scheduler(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0), recipe(epochs=3, batch_size=1, lr=1.0), 5)
        is None
    )  # none: constant
    warmed = _learning_rates(recipe(epochs=9, batch_size=1, lr=1.0, scheduler="step", warmup_epochs=1), 2)
    assert warmed[2:6] == pytest.approx([1.0] * 4) and warmed[6:12] == pytest.approx([0.1] * 6)  # thirds from step 0


def test_onecycle_rises_then_anneals():
    rates = _learning_rates(recipe(epochs=10, batch_size=1, lr=0.1, scheduler="onecycle", warmup_epochs=3), 10)
    peak = int(np.argmax(rates))
    assert 28 <= peak <= 31 and rates[peak] == pytest.approx(0.1, rel=0.01)
    assert rates[0] == pytest.approx(0.1 / 25) and rates[-1] < 1e-5


def test_plateau_lowers_the_rate_after_patience_epochs_without_progress():
    config = recipe(epochs=10, batch_size=1, lr=1.0, scheduler="plateau", plateau_factor=0.5, plateau_patience=1)
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = _scheduler(optimizer, config, steps_per_epoch=4)
    rates = []
    for val_loss in (1.0, 0.9, 0.95, 0.96, 0.97, 0.8):
        scheduler.step(val_loss)
        rates.append(optimizer.param_groups[0]["lr"])
    assert rates == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5]


def test_weight_average_is_the_saved_model_and_loads_back(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(256, 8)
    y = (x[:, 0] + x[:, 1] > 0).long()
    data = Batches(x.unsqueeze(0), y, features=True)
    model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 2))
    config = recipe(epochs=3, batch_size=32, lr=0.05, flip=False, ema_decay=0.9)
    result = train(model, data, data, config, 2, tmp_path / "ema.pt")
    state, metadata = load_checkpoint(tmp_path / "ema.pt")
    live = model.state_dict()
    assert metadata["epoch"] == result.best_epoch
    assert any(not torch.equal(state[name], live[name]) for name in live if live[name].is_floating_point())
    restored = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 2))
    restored.load_state_dict(state)
    restored.eval()
    accuracy = (restored(x).argmax(1) == y).float().mean().item()
    assert accuracy == pytest.approx(result.best_val_accuracy)  # the evaluated model is the saved one


def test_weight_average_follows_its_decay():
    model = nn.Linear(2, 1, bias=False)
    nn.init.zeros_(model.weight)
    average = weight_average(model, decay=0.5)
    with torch.no_grad():
        model.weight.fill_(1.0)
    average.update_parameters(model)  # first step: decay min(0.5, 2/11) = 2/11
    torch.testing.assert_close(average.module.weight, torch.full((1, 2), 9 / 11))
    average.update_parameters(model)  # then min(0.5, 3/12) = 0.25
    torch.testing.assert_close(average.module.weight, torch.full((1, 2), 0.25 * 9 / 11 + 0.75))


def test_the_ramped_average_leaves_the_random_start_where_torchs_fixed_decay_keeps_it():
    """Why `ramped_ema` and not torch's `get_ema_multi_avg_fn`: after one 368-step epoch of FER-2013 at decay
    0.999, torch's average is still 69% the initial weights; ours has moved 97% of the way to the live ones."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    model = nn.Sequential(nn.Linear(2, 1, bias=False), nn.BatchNorm1d(1))
    nn.init.zeros_(model[0].weight)
    ours = weight_average(model, decay=0.999)
    torchs = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.999), use_buffers=True)
    torchs.update_parameters(model)
    with torch.no_grad():
        model[0].weight.fill_(1.0)
        model[1].num_batches_tracked.fill_(368)
    for _ in range(368):
        ours.update_parameters(model)
        torchs.update_parameters(model)
    assert torchs.module[0].weight.mean().item() == pytest.approx(1 - 0.999**368, abs=1e-3)  # 0.31
    assert ours.module[0].weight.mean().item() > 0.97
    assert ours.module[1].num_batches_tracked.item() == 368  # copied, not averaged
    updates = torch.tensor(1)
    averaged, live = [torch.zeros(3)], [torch.ones(3)]
    ramped_ema(0.5)(averaged, live, updates)
    torch.testing.assert_close(averaged[0], torch.full((3,), 9 / 11))


class MirrorInvariant(nn.Module):
    """Sees only the symmetric part of each image, so a mirror image gives the same logits."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(48 * 48, 7)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float() / 255
        return self.linear((x + x.flip(-1)).flatten(1))


def test_tta_of_a_mirror_invariant_model_equals_its_plain_output():
    model, images = MirrorInvariant(), faces(8)
    torch.testing.assert_close(with_tta(model, tta(flip=True))(images), model(images))
    assert with_tta(model, tta()) is model


def test_tta_averages_the_logits_of_shifted_and_mirrored_views():
    model = Recorder().eval()
    images = faces(3)
    config = tta(flip=True, shifts=4, shift_pixels=2)
    padded = torch.nn.functional.pad(images.float().unsqueeze(1), (2, 2, 2, 2), mode="replicate").squeeze(1)
    views = [images.float(), images.float().flip(-1)] + [
        padded[:, 2 + dy : 50 + dy, 2 + dx : 50 + dx] for dy, dx in ((0, -2), (0, 2), (-2, 0), (2, 0))
    ]
    expected = torch.stack([model(view) for view in views]).mean(0)
    torch.testing.assert_close(TTAClassifier(model, config)(images), expected)
    assert config.views == 6 and tta(flip=True, shifts=8).views == 10


def overconfident_logits(count: int = 2000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits of a 70%-accurate 7-class model that is far too sure of itself."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 7, count)
    predicted = np.where(rng.random(count) < 0.7, labels, rng.integers(0, 7, count))
    logits = rng.normal(0, 1, (count, 7))
    logits[np.arange(count), predicted] += 8.0
    return logits, labels


def test_temperature_scaling_lowers_nll_and_keeps_the_argmax():
    logits, labels = overconfident_logits()
    temperature = fit_temperature(logits, labels)
    assert temperature > 2
    assert negative_log_likelihood(logits, labels, temperature) < 0.7 * negative_log_likelihood(logits, labels)
    assert expected_calibration_error(logits, labels, temperature) < expected_calibration_error(logits, labels) / 3
    np.testing.assert_array_equal((logits / temperature).argmax(1), logits.argmax(1))
    # the found temperature is the minimum: nudging it either way only makes NLL worse
    best = negative_log_likelihood(logits, labels, temperature)
    assert best <= negative_log_likelihood(logits, labels, temperature * 1.05)
    assert best <= negative_log_likelihood(logits, labels, temperature / 1.05)
    report = calibration_report({"val": (logits, labels), "test": overconfident_logits(seed=1)})
    assert report["temperature"] == pytest.approx(temperature)
    assert report["test"]["nll_scaled"] < report["test"]["nll"]


def test_expected_calibration_error_by_hand():
    # confidences 0.9 (right), 0.9 (wrong), 0.6 (right): bins (0.867, 0.933] and (0.533, 0.6]
    probabilities = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4]])
    logits, labels = np.log(probabilities), np.array([0, 1, 0])
    expected = (2 * abs(0.5 - 0.9) + 1 * abs(1.0 - 0.6)) / 3
    assert expected_calibration_error(logits, labels) == pytest.approx(expected)
    table = reliability_table(logits, labels)
    assert len(table) == 15 and table["count"].sum() == 3


def test_a_temperature_on_the_bound_is_found_there_where_scipys_bounded_search_stops_short():
    """Why fit_temperature keeps its own golden-section search: random logits of a confident model want the
    highest temperature; ours returns the bound, SciPy's bounded minimiser stops short of it."""
    import math

    import torch
    from scipy.optimize import minimize_scalar

    from ferbench.constants import TEMPERATURE_RANGE

    rng = np.random.default_rng(3)
    logits, labels = rng.normal(0, 3, (500, 7)), rng.integers(0, 7, 500)
    assert fit_temperature(logits, labels) == pytest.approx(TEMPERATURE_RANGE[1], abs=1e-6)
    logits_t, labels_t = torch.tensor(logits, dtype=torch.float32), torch.tensor(labels)
    found = minimize_scalar(
        lambda log_t: float(torch.nn.functional.cross_entropy(logits_t / math.exp(log_t), labels_t)),
        bounds=tuple(math.log(bound) for bound in TEMPERATURE_RANGE),
        method="bounded",
        options={"xatol": 1e-10},
    )
    assert math.exp(found.x) < TEMPERATURE_RANGE[1] - 1e-4


def test_wilson_interval_by_hand():
    """The 95% Wilson interval of 8 successes in 10 (Wilson 1927; z = 1.96)."""
    from ferbench.evaluation.metrics import wilson_interval

    z, share, total = 1.959963984540054, 0.8, 10
    centre = (share + z**2 / (2 * total)) / (1 + z**2 / total)
    half = z * math.sqrt(share * (1 - share) / total + z**2 / (4 * total**2)) / (1 + z**2 / total)
    assert wilson_interval(8, 10) == pytest.approx([centre - half, centre + half], abs=1e-12)
    assert wilson_interval(0, 0) == [0.0, 1.0] and wilson_interval(0, 5)[0] == 0.0


def test_temperature_needs_no_data_to_be_one():
    assert fit_temperature(np.zeros((0, 7)), np.zeros(0, dtype=int)) == 1.0


@pytest.mark.slow
def test_a_model_card_with_a_bad_temperature_is_refused(tmp_path: Path, untrained_model: Path):
    import json
    import shutil

    from ferbench.models.folder import read_card

    folder = shutil.copytree(untrained_model, tmp_path / "model")  # its card is edited below
    card = json.loads((folder / "model_card.json").read_text())
    assert read_card(folder).temperature == 1.0
    card["temperature"] = -2
    (folder / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(FerbenchError, match="'temperature' is -2"):
        read_card(folder)
