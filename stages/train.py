"""DVC stage `train@<candidate>`: final, longer training of a shortlisted backbone (resumable;
data-parallel over several processes when `distributed` asks for them; rank 0 writes)."""

from ferbench import params as P
from ferbench.benchmark import run_train
from ferbench.cli import backbone_argument, run_stage
from ferbench.distributed import stop
from ferbench.errors import FerbenchError
from ferbench.stage_params import backbone_spec, run_settings


def main() -> None:
    name = backbone_argument("train", __doc__, where="train.candidates")
    params = P.load_params()
    candidates = P.get(params, "train.candidates", dict)
    if name not in candidates:
        raise FerbenchError(f"params.yaml: '{name}' is not under train.candidates (have: {', '.join(candidates)})")
    overrides = candidates[name] or {}
    if not isinstance(overrides, dict):
        raise FerbenchError(f"params.yaml: 'train.candidates.{name}' must be a mapping of overrides (or {{}})")
    spec = backbone_spec(params, name)
    settings = run_settings(params)
    summary = run_train(spec, P.get(params, "train", dict), overrides, settings)
    stop(settings.group)
    if not settings.group.is_main:
        return
    gap = summary["overfitting"]["accuracy_gap"]
    print(
        f"train@{name}: val {summary['val']['accuracy']:.3f}, test {summary['test']['accuracy']:.3f}, "
        f"train-val gap {gap:+.3f} (best epoch {summary['best_epoch']})"
    )


if __name__ == "__main__":
    run_stage(main, "train")
