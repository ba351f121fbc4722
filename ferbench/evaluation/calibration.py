"""How far a model's probabilities can be trusted, and temperature scaling to fix them.

- `expected_calibration_error`: the gap between confidence and accuracy, averaged over 15
  equal-width confidence bins weighted by how many predictions fall in each (Guo et al. 2017).
- `fit_temperature`: the single T > 0 that minimises the negative log-likelihood of
  `logits / T` on the data given (val only: test never influences it). Dividing logits by
  one positive number never changes the argmax, so accuracy is untouched.
- `reliability_table`: per bin, mean confidence against accuracy (the reliability diagram).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F

from ferbench.constants import TEMPERATURE_RANGE

ECE_BINS = 15


def _as_tensors(logits: Any, labels: Any) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.as_tensor(np.asarray(logits), dtype=torch.float64), torch.as_tensor(np.asarray(labels)).long()


def negative_log_likelihood(logits: Any, labels: Any, temperature: float = 1.0) -> float:
    """Mean cross-entropy of `logits / temperature` (natural log)."""
    logits, labels = _as_tensors(logits, labels)
    if len(labels) == 0:
        return math.nan
    return float(F.cross_entropy(logits / temperature, labels).item())


def _confidence_and_hits(logits: Any, labels: Any, temperature: float) -> tuple[np.ndarray, np.ndarray]:
    logits, labels = _as_tensors(logits, labels)
    probabilities = torch.softmax(logits / temperature, dim=1)
    confidence, predicted = probabilities.max(dim=1)
    return confidence.numpy(), (predicted == labels).numpy().astype(np.float64)


def reliability_table(logits: Any, labels: Any, temperature: float = 1.0, bins: int = ECE_BINS) -> pd.DataFrame:
    """One row per confidence bin: its edges, the count, mean confidence and accuracy (NaN when empty)."""
    confidence, hits = _confidence_and_hits(logits, labels, temperature)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    rows = []
    for b in range(bins):
        members = index == b
        count = int(members.sum())
        rows.append(
            {
                "bin_lower": edges[b],
                "bin_upper": edges[b + 1],
                "count": count,
                "confidence": float(confidence[members].mean()) if count else math.nan,
                "accuracy": float(hits[members].mean()) if count else math.nan,
            }
        )
    return pd.DataFrame(rows)


def expected_calibration_error(logits: Any, labels: Any, temperature: float = 1.0, bins: int = ECE_BINS) -> float:
    """Sum over bins of |accuracy - confidence| weighted by the bin's share of the predictions."""
    table = reliability_table(logits, labels, temperature, bins)
    filled = table[table["count"] > 0]
    total = filled["count"].sum()
    if total == 0:
        return math.nan
    return float((filled["count"] * (filled["accuracy"] - filled["confidence"]).abs()).sum() / total)


def fit_temperature(logits: Any, labels: Any, iterations: int = 80) -> float:
    """The temperature minimising NLL, by golden-section search on log T within TEMPERATURE_RANGE.

    NLL is convex in 1/T (a log-sum-exp of linear functions minus a linear one), hence unimodal
    in log T, so the search finds the minimum; it is deterministic and needs no learning rate.
    Not SciPy's bounded scalar minimiser: it never evaluates at the bounds, so when the optimum lies on
    one (a model that is right at chance, as the demo's often are, wants the highest temperature) it stops
    about 0.003 short of 20, and every scaled ECE and NLL moves with it (tests/test_recipe.py shows it).
    """
    logits, labels = _as_tensors(logits, labels)
    if len(labels) == 0:
        return 1.0

    def loss(log_t: float) -> float:
        return float(F.cross_entropy(logits / math.exp(log_t), labels).item())

    low, high = (math.log(bound) for bound in TEMPERATURE_RANGE)
    ratio = (math.sqrt(5) - 1) / 2
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    loss_a, loss_b = loss(a), loss(b)
    for _ in range(iterations):
        if loss_a <= loss_b:
            high, b, loss_b = b, a, loss_a
            a = high - ratio * (high - low)
            loss_a = loss(a)
        else:
            low, a, loss_a = a, b, loss_b
            b = low + ratio * (high - low)
            loss_b = loss(b)
    return float(math.exp((low + high) / 2))


def calibration_report(splits: Mapping[str, tuple[Any, Any]], fit_on: str = "val") -> dict[str, Any]:
    """Temperature fitted on `fit_on`, and ECE / NLL before and after it for every split given."""
    temperature = fit_temperature(*splits[fit_on])
    report: dict[str, Any] = {"temperature": temperature, "fitted_on": fit_on, "ece_bins": ECE_BINS}
    for name, (logits, labels) in splits.items():
        report[name] = {
            "ece": expected_calibration_error(logits, labels),
            "nll": negative_log_likelihood(logits, labels),
            "ece_scaled": expected_calibration_error(logits, labels, temperature),
            "nll_scaled": negative_log_likelihood(logits, labels, temperature),
        }
    return report
