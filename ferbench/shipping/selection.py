"""Choosing the model to ship from the trained candidates, on validation numbers only.

Criteria (params `select.criterion`):
- `accuracy`: the highest val accuracy.
- `generalization`: val accuracy minus `gap_penalty` x (train-val accuracy gap beyond
  `gap_tolerance`), so a model that memorises the train split pays for it.
Limits applied first: `max_gap` (largest train-val accuracy gap allowed) and
`latency_budget_ms` (p50 CPU latency of the candidate's deployment variant). Ties go to the
smaller gap, then the lower latency, then the name. Test accuracy is carried along for the
report and never read here.

Test-time augmentation (`select.tta`): `auto` ships a candidate with TTA when that raises its
val accuracy by at least `tta_min_gain`, `always` / `never` decide for all. A candidate with
TTA is ranked by its TTA val accuracy and TTA latency.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from ferbench.errors import FerbenchError
from ferbench.models.card import ModelCard
from ferbench.models.card import Selection as CardSelection
from ferbench.models.folder import read_card, write_card
from ferbench.records import Criterion, RankedCandidate, Selection
from ferbench.schema import Select


def ships_with_tta(select: Select, name: str, plain_val_accuracy: float, tta_val_accuracy: float | None) -> bool:
    """Whether candidate `name` ships with TTA (`select.tta`); `tta_val_accuracy` is None when it was not
    evaluated with TTA."""
    if select.tta == "never":
        return False
    if tta_val_accuracy is None:
        if select.tta == "always":
            raise FerbenchError(
                f"select.tta is always, but {name} was evaluated without TTA (tta.flip false and "
                "tta.shifts 0); turn tta on and rerun, or set select.tta: auto"
            )
        return False
    return select.tta == "always" or tta_val_accuracy - plain_val_accuracy >= select.tta_min_gain


def criterion_record(select: Select) -> Criterion:
    """The criterion as the selection record and the card's `selection` state it."""
    return Criterion(
        name=select.criterion,
        gap_tolerance=select.gap_tolerance,
        gap_penalty=select.gap_penalty,
        max_gap=select.max_gap,
        latency_budget_ms=select.latency_budget_ms,
    )


@dataclass(frozen=True)
class Candidate:
    """What selection knows about one trained candidate (val accuracy and latency as it would ship)."""

    name: str
    val_accuracy: float
    accuracy_gap: float  # train minus val accuracy of the best-on-val checkpoint
    latency_ms: float | None = None  # p50 of its deployment variant on the CPU; None: not measured
    tta: bool = False  # val accuracy and latency are those with test-time augmentation


def score(candidate: Candidate, rules: Select) -> float:
    if rules.criterion == "accuracy":
        return candidate.val_accuracy
    excess = max(0.0, candidate.accuracy_gap - rules.gap_tolerance)
    return candidate.val_accuracy - rules.gap_penalty * excess


def _exclusion(candidate: Candidate, rules: Select) -> str | None:
    if rules.max_gap is not None and candidate.accuracy_gap > rules.max_gap:
        return f"train-val gap {candidate.accuracy_gap:.3f} > max_gap {rules.max_gap:g}"
    if rules.latency_budget_ms is not None:
        if candidate.latency_ms is None:
            return "no latency measurement to check against latency_budget_ms"
        if candidate.latency_ms > rules.latency_budget_ms:
            return f"latency {candidate.latency_ms:.2f} ms > latency_budget_ms {rules.latency_budget_ms:g}"
    return None


def _explain(candidate: Candidate, rules: Select) -> str:
    accuracy = f"val accuracy {candidate.val_accuracy:.4f}" + (" (with TTA)" if candidate.tta else "")
    if rules.criterion == "accuracy":
        return accuracy
    excess = max(0.0, candidate.accuracy_gap - rules.gap_tolerance)
    return (
        f"{accuracy} - {rules.gap_penalty:g} x gap beyond tolerance "
        f"{excess:.4f} (gap {candidate.accuracy_gap:.4f}, tolerance {rules.gap_tolerance:g}) "
        f"= {score(candidate, rules):.4f}"
    )


def select(candidates: Sequence[Candidate], rules: Select) -> Selection:
    """Rank the candidates; return `selected`, `ranking` (each with score or exclusion) and `reason`."""
    if not candidates:
        raise FerbenchError("params.yaml: train.candidates is empty; name at least one backbone to train")
    eligible, excluded = [], []
    for candidate in candidates:
        why = _exclusion(candidate, rules)
        (excluded if why else eligible).append((candidate, why))
    if not eligible:
        details = "; ".join(f"{c.name}: {why}" for c, why in excluded)
        raise FerbenchError(
            f"select: no candidate meets the limits ({details}). Raise select.max_gap / select.latency_budget_ms, "
            "or set them to null"
        )

    def order(item: tuple[Candidate, str | None]) -> tuple[float, float, float, str]:
        candidate = item[0]
        latency = candidate.latency_ms if candidate.latency_ms is not None else math.inf
        return (-score(candidate, rules), candidate.accuracy_gap, latency, candidate.name)

    ranked = sorted(eligible, key=order)
    ranking = [
        RankedCandidate(**asdict(c), rank=rank, score=score(c, rules), excluded=None)
        for rank, (c, _) in enumerate(ranked, start=1)
    ]
    ranking += [RankedCandidate(**asdict(c), rank=None, score=score(c, rules), excluded=why) for c, why in excluded]
    best = ranked[0][0]
    reason = f"{best.name} ranks first by '{rules.criterion}': {_explain(best, rules)}"
    if len(ranked) > 1:
        runner_up = ranked[1][0]
        tie = score(runner_up, rules) == score(best, rules)
        reason += f"; runner-up {runner_up.name}: {_explain(runner_up, rules)}"
        if tie:
            reason += " (a tie, broken by the smaller train-val gap, then lower latency, then name)"
    if excluded:
        reason += "; excluded: " + "; ".join(f"{c.name} ({why})" for c, why in excluded)
    return Selection(selected=best.name, criterion=criterion_record(rules), ranking=ranking, reason=reason)


def ship_selected(deployed: Path, folder: Path, selection: Selection) -> ModelCard:
    """Copy the chosen candidate's deployed folder to `folder` as it is, with why it was chosen added
    to its card."""
    card = read_card(deployed)
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(deployed, folder)
    card = card.model_copy(update={"selection": CardSelection(criterion=selection.criterion, reason=selection.reason)})
    write_card(folder, card)
    return card
