"""Selection criteria on validation numbers: scores, ties, limits, and the error when nobody qualifies."""

import runpy
import sys

import pytest

from ferbench.errors import FerbenchError
from ferbench.shipping.selection import Candidate, score, select, ships_with_tta
from tests.support import card_calibration, card_latency, card_metrics, project_params


def rules(name, gap_tolerance=0.0, gap_penalty=1.0, max_gap=None, latency_budget_ms=None, **tta):
    """params.yaml's select section with the criterion's settings (no tolerance unless given)."""
    settings = {"gap_tolerance": gap_tolerance, "gap_penalty": gap_penalty, "max_gap": max_gap}
    settings |= {"criterion": name, "latency_budget_ms": latency_budget_ms, **tta}
    return project_params().select.model_copy(update=settings)


ACCURATE_BUT_OVERFIT = Candidate("resnet18", val_accuracy=0.70, accuracy_gap=0.25, latency_ms=8.0)
MODEST_AND_STABLE = Candidate("clip_vit_b32", val_accuracy=0.64, accuracy_gap=0.02, latency_ms=25.0)
SLOW_AND_GOOD = Candidate("vgg16", val_accuracy=0.66, accuracy_gap=0.04, latency_ms=120.0)


@pytest.mark.parametrize(
    ("criterion", "candidates", "expected"),
    [
        (rules("accuracy"), [ACCURATE_BUT_OVERFIT, MODEST_AND_STABLE], "resnet18"),
        # 0.70 - (0.25 - 0.05) = 0.50 < 0.64: the gap costs resnet18 the win
        (rules("generalization", gap_tolerance=0.05), [ACCURATE_BUT_OVERFIT, MODEST_AND_STABLE], "clip_vit_b32"),
        # a tolerance above the gap makes generalization equal to accuracy
        (rules("generalization", gap_tolerance=0.3), [ACCURATE_BUT_OVERFIT, MODEST_AND_STABLE], "resnet18"),
        # a weak penalty: 0.70 - 0.1 x 0.20 = 0.68 > 0.64
        (rules("generalization", 0.05, 0.1), [ACCURATE_BUT_OVERFIT, MODEST_AND_STABLE], "resnet18"),
        (rules("accuracy", max_gap=0.1), [ACCURATE_BUT_OVERFIT, MODEST_AND_STABLE], "clip_vit_b32"),
        (rules("accuracy", latency_budget_ms=50), [SLOW_AND_GOOD, MODEST_AND_STABLE], "clip_vit_b32"),
        (rules("accuracy"), [SLOW_AND_GOOD, MODEST_AND_STABLE], "vgg16"),
    ],
)
def test_criteria_pick_the_expected_candidate(criterion, candidates, expected):
    result = select(candidates, criterion)
    assert result.selected == expected
    ranked = [entry for entry in result.ranking if entry.rank is not None]
    assert [entry.rank for entry in ranked] == list(range(1, len(ranked) + 1))
    assert ranked[0].name == expected and expected in result.reason
    scores = [entry.score for entry in ranked]
    assert scores == sorted(scores, reverse=True)


def test_generalization_score_is_val_accuracy_minus_the_excess_gap():
    criterion = rules("generalization", gap_tolerance=0.05, gap_penalty=2.0)
    assert score(ACCURATE_BUT_OVERFIT, criterion) == pytest.approx(0.70 - 2.0 * 0.20)
    assert score(MODEST_AND_STABLE, criterion) == pytest.approx(0.64)  # gap under tolerance: no penalty


def test_ties_go_to_the_smaller_gap_then_latency_then_name():
    tight = Candidate("b", 0.6, 0.01, 30.0)
    loose = Candidate("a", 0.6, 0.08, 10.0)
    assert select([loose, tight], rules("accuracy")).selected == "b"
    fast = Candidate("z", 0.6, 0.01, 5.0)
    assert select([tight, fast], rules("accuracy")).selected == "z"
    twin = Candidate("a", 0.6, 0.01, 30.0)
    result = select([tight, twin], rules("accuracy"))
    assert result.selected == "a" and "tie" in result.reason


def test_excluded_candidates_are_listed_with_the_reason():
    result = select([ACCURATE_BUT_OVERFIT, MODEST_AND_STABLE], rules("accuracy", max_gap=0.1))
    excluded = [entry for entry in result.ranking if entry.excluded]
    assert [entry.name for entry in excluded] == ["resnet18"]
    assert "max_gap" in excluded[0].excluded and "excluded: resnet18" in result.reason


@pytest.mark.parametrize(
    "criterion",
    [
        rules("accuracy", max_gap=0.01),
        rules("generalization", latency_budget_ms=1.0),
        rules("accuracy", max_gap=0.5, latency_budget_ms=2.0),
    ],
)
def test_limits_that_exclude_everyone_are_a_clear_error(criterion):
    with pytest.raises(FerbenchError, match=r"no candidate meets the limits.*select\.max_gap.*null"):
        select([ACCURATE_BUT_OVERFIT, MODEST_AND_STABLE], criterion)


def test_a_latency_budget_needs_a_measurement():
    unmeasured = Candidate("x", 0.9, 0.0, None)
    with pytest.raises(FerbenchError, match="no latency measurement"):
        select([unmeasured], rules("accuracy", latency_budget_ms=100))


def test_no_candidates_is_an_error():
    with pytest.raises(FerbenchError, match="train.candidates is empty"):
        select([], rules("accuracy"))


def test_tta_is_shipped_when_it_pays_on_val():
    auto = rules("accuracy", tta="auto", tta_min_gain=0.005)
    assert ships_with_tta(auto, "a", 0.650, 0.656) and not ships_with_tta(auto, "a", 0.650, 0.654)
    assert not ships_with_tta(auto, "a", 0.650, None)  # not evaluated with TTA
    always, never = rules("accuracy", tta="always"), rules("accuracy", tta="never")
    assert ships_with_tta(always, "a", 0.66, 0.65) and not ships_with_tta(never, "a", 0.60, 0.70)
    with pytest.raises(FerbenchError, match="select.tta is always, but a was evaluated without TTA"):
        ships_with_tta(always, "a", 0.6, None)


def test_a_candidate_shipped_with_tta_says_so_in_the_reason():
    with_tta = Candidate("vgg8", val_accuracy=0.67, accuracy_gap=0.02, latency_ms=1.5, tta=True)
    result = select([with_tta, MODEST_AND_STABLE], rules("accuracy"))
    assert result.selected == "vgg8" and "val accuracy 0.6700 (with TTA)" in result.reason


@pytest.mark.slow
def test_the_latency_budget_applies_to_the_variant_that_ships(tmp_path, monkeypatch):
    """resnet18 is the more accurate candidate and its architecture has a fast int8 variant, but its trained
    checkpoint was not faithful in int8, so deploy@resnet18 ships fp32 at 25 ms: over a 10 ms budget, it must
    lose to clip_vit_b32, whose shipped variant runs in 8 ms; models/selected is clip's deployed folder."""
    import json

    import yaml

    from ferbench.records import Selection, read_record
    from tests.support import PROJECT_ROOT, untrained_model_folder

    params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    params["select"].update(criterion="accuracy", latency_budget_ms=10.0)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    shipped = {"resnet18": ("torch_fp32", 0.70, 25.0), "clip_vit_b32": ("onnx_fp32", 0.65, 8.0)}
    for name, (variant, val_accuracy, p50) in shipped.items():
        trained = {
            "train": {"accuracy": val_accuracy + 0.02},
            "val": {"accuracy": val_accuracy},
            "overfitting": {"accuracy_gap": 0.02},
        }
        (tmp_path / "metrics/train").mkdir(parents=True, exist_ok=True)
        (tmp_path / f"metrics/train/{name}.json").write_text(json.dumps(trained))
        metrics = card_metrics(val_accuracy=val_accuracy, accuracy_gap=0.02)
        calibration = card_calibration()
        latency = card_latency(p50_ms=p50, p90_ms=p50, p99_ms=p50 + 1, mean_ms=p50, fps=1000 / p50)
        untrained_model_folder(
            tmp_path / f"models/deploy/{name}",
            variant,
            latency=latency,
            metrics=metrics,
            calibration=calibration,
            agreement_with_fp32_on_val={variant: 1.0},
        )
        summary = {"backbone": name, "variant": variant, "tta_views": 1, "latency_p50_ms": p50}
        (tmp_path / "metrics/deploy").mkdir(parents=True, exist_ok=True)
        (tmp_path / f"metrics/deploy/{name}.json").write_text(json.dumps(summary))
        (tmp_path / f"plots/deploy/{name}").mkdir(parents=True)
        (tmp_path / f"plots/deploy/{name}/reliability.csv").write_text(f"bin_center,from\n0.5,{name}\n")
        (tmp_path / f"plots/deploy/{name}/test_predictions.csv").write_text(f"index,actual\n0,{name}\n")
    monkeypatch.setattr(sys, "argv", ["stages/select.py"])
    runpy.run_module("stages.select", run_name="__main__")  # as `python -m stages.select`, without a lasting import
    headline = json.loads((tmp_path / "metrics/selection.json").read_text())
    assert headline["selected"] == "clip_vit_b32" and headline["shipped"]["latency_p50_ms"] == 8.0
    assert headline["ranking"] == {"clip_vit_b32": {"rank": 1, "score": 0.65}, "resnet18": {"rank": None, "score": 0.7}}
    selection = read_record(tmp_path / "reports/details/selection.json", Selection, "select")
    assert selection.selected == "clip_vit_b32"
    excluded = {entry.name: entry.excluded for entry in selection.ranking}
    assert "25.0" in excluded["resnet18"] and excluded["clip_vit_b32"] is None
    card = json.loads((tmp_path / "models/selected/model_card.json").read_text())
    assert card["variant"] == "onnx_fp32" and card["latency"]["p50_ms"] == 8.0
    assert "clip_vit_b32" in card["selection"]["reason"]
    assert selection.deployment is not None and selection.deployment.latency_p50_ms == 8.0
    assert "clip_vit_b32" in (tmp_path / "plots/selected/reliability.csv").read_text()
    assert "clip_vit_b32" in (tmp_path / "plots/selected/test_predictions.csv").read_text()
