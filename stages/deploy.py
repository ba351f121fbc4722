"""DVC stage `deploy@<candidate>`: decide once how a candidate of `select.candidates` ships, before any
ranking.

Exports its checkpoint (a trained candidate's `models/train/<candidate>.pt` or a distilled student's
`models/distill/<candidate>.pt`; with test-time augmentation inside the graph when `select.tta` says it
pays on val) in every runtime variant, keeps its fastest faithful one (this checkpoint's agreement with
fp32 on val, the latency stage's timings of its backbone), fits its temperature on val, measures it on
test and writes the model folder `models/deploy/<candidate>/`, whose card names a student's teachers.
`select` ranks the candidates on what these folders will actually ship and copies the chosen one.
"""

from ferbench import params as P
from ferbench.cli import backbone_argument, run_stage
from ferbench.data.prepared import leakage_free_test_mask, load_split, read_provenance
from ferbench.errors import FerbenchError
from ferbench.files import write_frame_csv
from ferbench.models.card import Provenance, ShippingProvenance, TrainingProvenance
from ferbench.models.checkpoint import load_checkpoint
from ferbench.paths import DEPLOY_METRICS, DEPLOY_MODELS, DEPLOY_PLOTS, PREPARED_DIR, RunOutputs, stage_details
from ferbench.provenance import limitations
from ferbench.records import CheckpointRecord, LatencyReport, RunReport, read_record, validated, write_headline
from ferbench.schema import Recipe
from ferbench.shipping.deploy import JudgingData, ModelContext, ShippingRules, TrainedCandidate, deploy_candidate
from ferbench.shipping.latency import range_sample_from_params
from ferbench.shipping.selection import ships_with_tta
from ferbench.training.settings import backbone_spec


def main() -> None:
    name = backbone_argument("deploy", __doc__, where="select.candidates")
    params = P.load_params()
    params.candidate_training(name)  # a candidate, or one line saying which names are
    trained_run = RunOutputs(params.select.candidates[name], name)
    trained_stage = f"{params.select.candidates[name]}@{name}"
    trained = read_record(trained_run.details, RunReport, trained_stage)
    latency_path = stage_details("latency", name)
    if not latency_path.is_file():
        raise FerbenchError(f"{latency_path}: not found; every candidate must also be under backbones (latency@{name})")
    latency = read_record(latency_path, LatencyReport, f"latency@{name}")
    use_tta = ships_with_tta(params.select, name, trained.val.accuracy, trained.tta_val_accuracy)
    _, metadata = load_checkpoint(trained_run.checkpoint)
    weights = validated(CheckpointRecord, metadata, str(trained_run.checkpoint), trained_stage)
    Recipe.model_validate(weights.training)  # the params that made the weights, as this version spells them
    training = TrainingProvenance(
        seed=params.seed,
        training=weights.training,
        trainable=weights.trainable,
        distillation=weights.distillation,
        code_revision=weights.code_revision,
    )
    shipping = ShippingProvenance(
        tta=params.select.tta,
        tta_min_gain=params.select.tta_min_gain,
        min_agreement=params.latency.min_agreement,
    )
    test = load_split(PREPARED_DIR / "test.npz")
    val = load_split(PREPARED_DIR / "val.npz")
    train = load_split(PREPARED_DIR / "train.npz")
    images = {"train": len(train), "val": len(val), "test": len(test)}
    data = read_provenance(PREPARED_DIR).model_copy(update={"images": images})
    deployment = deploy_candidate(
        DEPLOY_MODELS / name,
        TrainedCandidate(
            backbone_spec(params, name),
            trained_run.checkpoint,
            list(params.data.classes),
            trained,
            latency,
        ),
        JudgingData(
            val, test, leakage_free_test_mask(PREPARED_DIR, len(test)), range_sample_from_params(params, train)
        ),
        ShippingRules(params.latency.threads, params.latency.min_agreement, params.tta if use_tta else None),
        ModelContext(Provenance.written_now(data, training, shipping), limitations(data.source)),
    )
    shipped = deployment.card.deployment_summary()
    write_headline(DEPLOY_METRICS / f"{name}.json", shipped.deploy_headline(name))
    (DEPLOY_PLOTS / name).mkdir(parents=True, exist_ok=True)
    write_frame_csv(deployment.reliability, DEPLOY_PLOTS / name / "reliability.csv")
    write_frame_csv(deployment.test_predictions, DEPLOY_PLOTS / name / "test_predictions.csv")
    print(
        f"deploy@{name}: {shipped.variant}{' with TTA' if use_tta else ''}, p50 {shipped.latency_p50_ms:.2f} "
        f"ms, val {shipped.val_accuracy:.4f}, test {shipped.test_accuracy:.4f} (agreement with fp32 on val "
        f"{shipped.agreement_with_fp32_on_val:.4f})"
    )


if __name__ == "__main__":
    run_stage(main, "deploy")
