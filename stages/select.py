"""DVC stage `select`: choose the model to ship from the trained candidates (val numbers only),
then export it to `models/selected/` in its fastest faithful form with a model card."""

import json

from ferbench import params as P
from ferbench.cli import run_stage
from ferbench.data.prepared import load_split
from ferbench.deploy import write_selected
from ferbench.errors import FerbenchError
from ferbench.metrics import read_metrics
from ferbench.paths import LATENCY_METRICS, PREPARED_DIR, SELECTED_DIR, SELECTION_METRICS, TRAIN_METRICS, TRAIN_MODELS
from ferbench.selection import Candidate, Criterion, select
from ferbench.stage_params import backbone_spec


def main() -> None:
    params = P.load_params()
    names = list(P.get(params, "train.candidates", dict))
    criterion = Criterion.from_params(P.get(params, "select", dict))
    trained = {name: read_metrics(TRAIN_METRICS / f"{name}.json") for name in names}
    latency = {}
    for name in names:
        path = LATENCY_METRICS / f"{name}.json"
        if not path.is_file():
            raise FerbenchError(f"{path}: not found; every candidate must also be under backbones (latency@{name})")
        latency[name] = read_metrics(path)
    candidates = [
        Candidate(name, trained[name]["val"]["accuracy"], trained[name]["overfitting"]["accuracy_gap"],
                  latency[name]["variants"][latency[name]["fastest_faithful"]]["p50_ms"])
        for name in names
    ]  # fmt: skip
    selection = select(candidates, criterion)
    chosen = selection["selected"]
    card = write_selected(
        SELECTED_DIR, backbone_spec(params, chosen), TRAIN_MODELS / f"{chosen}.pt", P.get(params, "data.classes", list),
        load_split(PREPARED_DIR / "val.npz"), load_split(PREPARED_DIR / "test.npz"), latency[chosen], selection,
        trained[chosen], threads=P.get(params, "latency.threads", int),
        min_agreement=float(P.get(params, "latency.min_agreement")),
    )  # fmt: skip
    selection["deployment"] = {
        "variant": card["variant"], "runtime": card["runtime"], "file": card["files"]["model"],
        "test_accuracy": card["metrics"]["test_accuracy"], "test_accuracy_fp32": card["metrics"]["test_accuracy_fp32"],
        "agreement_with_fp32_on_val": card["agreement_with_fp32_on_val"][card["variant"]],
        "latency_p50_ms": card["latency"]["p50_ms"],
    }  # fmt: skip
    SELECTION_METRICS.parent.mkdir(parents=True, exist_ok=True)
    SELECTION_METRICS.write_text(json.dumps(selection, indent=2) + "\n")
    print(f"select: {selection['reason']}")
    shipped = card['metrics']['test_accuracy']
    print(f"select: shipped {card['variant']} to {SELECTED_DIR}/ (test accuracy {shipped:.4f})")


if __name__ == "__main__":
    run_stage(main, "select")
