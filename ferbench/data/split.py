"""Group-aware, class-stratified train/val split."""

from __future__ import annotations

import numpy as np
import pandas as pd


def group_stratified_split(labels: np.ndarray, groups: np.ndarray, val_fraction: float, seed: int) -> np.ndarray:
    """Return a boolean mask of the rows that go to val.

    Rows sharing a group (here: identical pixels) go to the same side, so a duplicate never
    straddles train and val. Within each class about `val_fraction` of its rows go to val,
    chosen by whole groups in an order drawn from `seed` and the class, so the split is
    reproducible and one class's change does not reshuffle another's.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    frame = pd.DataFrame({"label": labels, "group": groups, "row": np.arange(len(labels))})
    group_label = frame.groupby("group", sort=True)["label"].first()
    group_rows = frame.groupby("group", sort=True)["row"].apply(list)
    in_val = np.zeros(len(labels), dtype=bool)
    for label in sorted(group_label.unique()):
        class_groups = group_label.index[group_label == label].to_numpy()
        target = round(val_fraction * sum(len(group_rows[g]) for g in class_groups))
        order = np.random.default_rng([seed, int(label)]).permutation(len(class_groups))
        taken = 0
        for position in order:
            if taken >= target:
                break
            rows = group_rows[class_groups[position]]
            in_val[rows] = True
            taken += len(rows)
    return in_val
