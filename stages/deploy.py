"""DVC stage `deploy@<candidate>`: decide once how a trained candidate ships, before any ranking.

Exports `models/train/<candidate>.pt` (with test-time augmentation inside the graph when
`select.tta` says it pays on val) in every runtime variant, keeps its fastest faithful one (this
checkpoint's agreement with fp32 on val, the latency stage's timings), fits its temperature on val,
measures it on test and writes the model folder `models/deploy/<candidate>/`. `select` ranks the
candidates on what these folders will actually ship and copies the chosen one.
"""

from ferbench import params as P
from ferbench.cli import backbone_argument, run_stage
from ferbench.data.prepared import leakage_free_test_mask, load_split, read_provenance
from ferbench.deploy import deploy_candidate
from ferbench.errors import FerbenchError
from ferbench.latency import calibration_from_params
from ferbench.metrics import read_metrics, write_json
from ferbench.models.checkpoint import load_checkpoint
from ferbench.paths import (
    DEPLOY_METRICS,
    DEPLOY_MODELS,
    DEPLOY_PLOTS,
    DETAILS_DIR,
    PREPARED_DIR,
    TRAIN_METRICS,
    TRAIN_MODELS,
)
from ferbench.provenance import limitations, model_provenance
from ferbench.selection import TTAPolicy
from ferbench.stage_params import backbone_spec, tta_config


def main() -> None:
    name = backbone_argument("deploy", __doc__, where="train.candidates")
    params = P.load_params()
    if name not in P.get(params, "train.candidates", dict):
        raise FerbenchError(f"params.yaml: '{name}' is not under train.candidates")
    trained = read_metrics(TRAIN_METRICS / f"{name}.json")
    latency_path = DETAILS_DIR / "latency" / f"{name}.json"
    if not latency_path.is_file():
        raise FerbenchError(f"{latency_path}: not found; every candidate must also be under backbones (latency@{name})")
    with_tta = trained.get("tta", {}).get("val", {}).get("accuracy")
    select = P.get(params, "select", dict)
    use_tta = TTAPolicy.from_params(select).use(name, trained["val"]["accuracy"], with_tta)
    data = read_provenance(PREPARED_DIR)
    _, weights = load_checkpoint(TRAIN_MODELS / f"{name}.pt")
    training = {
        "seed": P.get(params, "seed", int),
        **{key: weights[key] for key in ("training", "trainable", "code_revision") if key in weights},
    }
    shipping = {
        "select.tta": select["tta"],
        "select.tta_min_gain": select["tta_min_gain"],
        "latency.min_agreement": P.get(params, "latency.min_agreement"),
    }
    test = load_split(PREPARED_DIR / "test.npz")
    val = load_split(PREPARED_DIR / "val.npz")
    train = load_split(PREPARED_DIR / "train.npz")
    data["images"] = {"train": len(train), "val": len(val), "test": len(test)}
    deployment = deploy_candidate(
        DEPLOY_MODELS / name,
        backbone_spec(params, name),
        TRAIN_MODELS / f"{name}.pt",
        P.get(params, "data.classes", list),
        val,
        test,
        leakage_free_test_mask(PREPARED_DIR, len(test)),
        read_metrics(latency_path),
        trained,
        threads=P.get(params, "latency.threads", int),
        min_agreement=float(P.get(params, "latency.min_agreement")),
        tta=tta_config(params) if use_tta else None,
        int8_calibration=calibration_from_params(params, train),
        card_fields={
            "provenance": model_provenance(data, training, shipping),
            "limitations": limitations(data["source"]),
        },
    )
    card = deployment.card
    metrics = card["metrics"]
    summary = {  # headline numbers only (dvc exp show); the card holds the rest
        "backbone": name,
        "variant": card["variant"],
        "tta_views": card["tta"]["views"],
        "latency_p50_ms": card["latency"]["p50_ms"],
        "agreement_with_fp32_on_val": card["agreement_with_fp32_on_val"][card["variant"]],
        "val_accuracy": metrics["val_accuracy"],
        "test_accuracy": metrics["test_accuracy"],
        "test_macro_f1": metrics["test_macro_f1"],
        "test_leakage_free_accuracy": metrics["test_leakage_free_accuracy"],
    }
    write_json(DEPLOY_METRICS / f"{name}.json", summary)
    (DEPLOY_PLOTS / name).mkdir(parents=True, exist_ok=True)
    deployment.reliability.to_csv(DEPLOY_PLOTS / name / "reliability.csv", index=False)
    deployment.test_predictions.to_csv(DEPLOY_PLOTS / name / "test_predictions.csv", index=False)
    print(
        f"deploy@{name}: {summary['variant']}{' with TTA' if use_tta else ''}, p50 {summary['latency_p50_ms']:.2f} "
        f"ms, val {summary['val_accuracy']:.4f}, test {summary['test_accuracy']:.4f} (agreement with fp32 on val "
        f"{summary['agreement_with_fp32_on_val']:.4f})"
    )


if __name__ == "__main__":
    run_stage(main, "deploy")
