"""DVC stage `select`: choose the model to ship from the trained candidates (val numbers only),
then export it to `models/selected/` in its fastest faithful form, with or without test-time
augmentation as `select.tta` decides, calibrated on val, with a model card."""

import json

from ferbench import params as P
from ferbench.cli import run_stage
from ferbench.data.prepared import leakage_free_test_mask, load_split
from ferbench.deploy import write_selected
from ferbench.errors import FerbenchError
from ferbench.latency import calibration_from_params
from ferbench.metrics import read_metrics
from ferbench.paths import (
    LATENCY_METRICS,
    PREPARED_DIR,
    RELIABILITY_PLOT,
    SELECTED_DIR,
    SELECTION_METRICS,
    TRAIN_METRICS,
    TRAIN_MODELS,
)
from ferbench.selection import Candidate, Criterion, TTAPolicy, select
from ferbench.stage_params import backbone_spec, tta_config


def main() -> None:
    params = P.load_params()
    names = list(P.get(params, "train.candidates", dict))
    section = P.get(params, "select", dict)
    criterion = Criterion.from_params(section)
    policy = TTAPolicy.from_params(section)
    trained = {name: read_metrics(TRAIN_METRICS / f"{name}.json") for name in names}
    latency = {}
    for name in names:
        path = LATENCY_METRICS / f"{name}.json"
        if not path.is_file():
            raise FerbenchError(f"{path}: not found; every candidate must also be under backbones (latency@{name})")
        latency[name] = read_metrics(path)
    candidates = []
    for name in names:
        plain = trained[name]["val"]["accuracy"]
        with_tta = trained[name].get("tta", {}).get("val", {}).get("accuracy")
        use_tta = policy.use(name, plain, with_tta)
        fastest = latency[name]["variants"][latency[name]["fastest_faithful"]]
        if use_tta and "tta" not in fastest:
            raise FerbenchError(f"{LATENCY_METRICS / name}.json: no timings with TTA; rerun `dvc repro latency@{name}`")
        candidates.append(Candidate(name, with_tta if use_tta else plain, trained[name]["overfitting"]["accuracy_gap"],
                                    (fastest["tta"] if use_tta else fastest)["p50_ms"], use_tta))  # fmt: skip
    selection = select(candidates, criterion)
    chosen = selection["selected"]
    ship_tta = next(candidate.tta for candidate in candidates if candidate.name == chosen)
    test = load_split(PREPARED_DIR / "test.npz")
    deployment = write_selected(
        SELECTED_DIR, backbone_spec(params, chosen), TRAIN_MODELS / f"{chosen}.pt", P.get(params, "data.classes", list),
        load_split(PREPARED_DIR / "val.npz"), test, leakage_free_test_mask(PREPARED_DIR, len(test)), latency[chosen],
        selection, trained[chosen], threads=P.get(params, "latency.threads", int),
        min_agreement=float(P.get(params, "latency.min_agreement")), tta=tta_config(params) if ship_tta else None,
        int8_calibration=calibration_from_params(params, load_split(PREPARED_DIR / "train.npz")),
    )  # fmt: skip
    card = deployment.card
    calibration = card["calibration"]
    selection["deployment"] = {
        "variant": card["variant"], "runtime": card["runtime"], "file": card["files"]["model"],
        "tta_views": card["tta"]["views"],
        "test_accuracy": card["metrics"]["test_accuracy"], "test_accuracy_fp32": card["metrics"]["test_accuracy_fp32"],
        "test_macro_f1": card["metrics"]["test_macro_f1"],
        "test_leakage_free_accuracy": card["metrics"]["test_leakage_free_accuracy"],
        "test_leakage_free_images": card["metrics"]["test_leakage_free_images"],
        "temperature": card["temperature"],
        "test_ece": calibration["test"]["ece"], "test_ece_scaled": calibration["test"]["ece_scaled"],
        "test_nll": calibration["test"]["nll"], "test_nll_scaled": calibration["test"]["nll_scaled"],
        "agreement_with_fp32_on_val": card["agreement_with_fp32_on_val"][card["variant"]],
        "latency_p50_ms": card["latency"]["p50_ms"],
    }  # fmt: skip
    SELECTION_METRICS.parent.mkdir(parents=True, exist_ok=True)
    SELECTION_METRICS.write_text(json.dumps(selection, indent=2) + "\n")
    RELIABILITY_PLOT.parent.mkdir(parents=True, exist_ok=True)
    deployment.reliability.to_csv(RELIABILITY_PLOT, index=False)
    print(f"select: {selection['reason']}")
    shipped = selection["deployment"]
    print(f"select: shipped {card['variant']}{' with TTA' if ship_tta else ''} to {SELECTED_DIR}/ (test accuracy "
          f"{shipped['test_accuracy']:.4f}, leakage-free {shipped['test_leakage_free_accuracy']:.4f}; temperature "
          f"{shipped['temperature']:.2f}, test ECE {shipped['test_ece']:.3f} -> {shipped['test_ece_scaled']:.3f})")


if __name__ == "__main__":
    run_stage(main, "select", __doc__)
