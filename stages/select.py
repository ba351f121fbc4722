"""DVC stage `select`: choose the model to ship from `select.candidates` (trained candidates and distilled
students alike) on their deployed folders' val numbers only (accuracy as shipped, the checkpoint's
train-val gap, the shipped variant's latency), and ship it: `models/selected/` is the chosen candidate's
`models/deploy/<candidate>/` as `deploy@` decided it (variant, test-time augmentation, temperature), with
why it was chosen added to its card. The latency budget applies to that shipped variant.
`metrics/selection.json` holds the headline (the name, rank and score of each candidate, the shipped
model's numbers); `reports/details/selection.json` the reason and everything shipped."""

import shutil

from ferbench import params as P
from ferbench.cli import run_stage
from ferbench.errors import FerbenchError
from ferbench.models.folder import read_card
from ferbench.paths import (
    DEPLOY_METRICS,
    DEPLOY_MODELS,
    DEPLOY_PLOTS,
    RELIABILITY_PLOT,
    SELECTED_DIR,
    SELECTED_PREDICTIONS,
    SELECTION_DETAILS,
    SELECTION_METRICS,
)
from ferbench.records import write_headline, write_record
from ferbench.shipping.selection import Candidate, select, ship_selected


def main() -> None:
    params = P.load_params()
    candidates = []
    for name in params.select.candidates:
        folder = DEPLOY_MODELS / name
        if not (DEPLOY_METRICS / f"{name}.json").is_file():
            raise FerbenchError(
                f"{DEPLOY_METRICS / name}.json: not found; run `dvc repro deploy@{name}` (or the whole pipeline)"
            )
        shipped = read_card(folder).deployment_summary()
        candidates.append(
            Candidate(name, shipped.val_accuracy, shipped.accuracy_gap, shipped.latency_p50_ms, shipped.tta_views > 1)
        )
    selection = select(candidates, params.select)
    chosen = selection.selected
    card = ship_selected(DEPLOY_MODELS / chosen, SELECTED_DIR, selection)
    shipped = card.deployment_summary()
    selection = selection.model_copy(update={"deployment": shipped})
    write_record(SELECTION_DETAILS, selection)
    write_headline(SELECTION_METRICS, selection.headline())
    RELIABILITY_PLOT.parent.mkdir(parents=True, exist_ok=True)
    for plot in (RELIABILITY_PLOT, SELECTED_PREDICTIONS):
        shutil.copyfile(DEPLOY_PLOTS / chosen / plot.name, plot)
    print(f"select: {selection.reason}")
    print(
        f"select: shipped {card.variant}{' with TTA' if shipped.tta_views > 1 else ''} to {SELECTED_DIR}/ "
        f"(test accuracy {shipped.test_accuracy:.4f}, leakage-free {shipped.test_leakage_free_accuracy:.4f}; "
        f"temperature {shipped.temperature:.2f}, test ECE {shipped.test_ece:.3f} -> "
        f"{shipped.test_ece_scaled:.3f})"
    )


if __name__ == "__main__":
    run_stage(main, "select", __doc__)
