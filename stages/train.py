"""DVC stage `train@<candidate>`: final, longer training of a shortlisted backbone (resumable;
data-parallel over several processes when `distributed` asks for them; rank 0 writes)."""

from ferbench import params as P
from ferbench.cli import backbone_argument, run_stage
from ferbench.training.benchmark import run_train
from ferbench.training.distributed import join_group, leave_group
from ferbench.training.settings import RunSettings, backbone_spec, resolve_device, tune_for


def main() -> None:
    name = backbone_argument("train", __doc__, where="train.candidates")
    params = P.load_params()
    training, spec = params.train_for(name), backbone_spec(params, name)
    group, device = join_group(resolve_device(params.device), params.distributed.timeout_s)
    tune_for(device)
    summary = run_train(spec, training, RunSettings.from_params(params, device, group))
    leave_group(group)
    if summary is None:  # not rank 0: it wrote nothing
        return
    gap = summary.overfitting.accuracy_gap
    print(
        f"train@{name}: val {summary.val.accuracy:.3f}, test {summary.test.accuracy:.3f}, "
        f"train-val gap {gap:+.3f} (best epoch {summary.best_epoch})"
    )


if __name__ == "__main__":
    run_stage(main, "train")
