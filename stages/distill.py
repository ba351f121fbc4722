"""DVC stage `distill@<backbone>`: a student trained like a `train` candidate (the `train` section with
`distill.students.<backbone>` merged in) on the labels and on the soft labels of the teacher ensemble
(`distill.teachers`, their outputs cached by `teach@<teacher>`). Resumable; data-parallel over several
processes when `distributed` asks for them (rank 0 writes). Writes models/distill/<backbone>.pt and the
same metrics, details, plots and curves as `train`, naming the teachers."""

from ferbench import params as P
from ferbench.cli import backbone_argument, run_stage
from ferbench.paths import PREPARED_DIR
from ferbench.training.benchmark import long_training
from ferbench.training.distributed import join_group, leave_group
from ferbench.training.settings import RunSettings, backbone_spec, resolve_device, tune_for
from ferbench.training.teachers import load_teaching


def main() -> None:
    name = backbone_argument("distill", __doc__, where="distill.students")
    params = P.load_params()
    training, spec = params.student_for(name), backbone_spec(params, name)
    teaching = load_teaching(params, PREPARED_DIR, name)
    group, device = join_group(resolve_device(params.device), params.distributed.timeout_s)
    tune_for(device)
    summary = long_training("distill", spec, training, RunSettings.from_params(params, device, group), teaching)
    leave_group(group)
    if summary is None:  # not rank 0: it wrote nothing
        return
    ensemble = summary.distillation.ensemble
    print(
        f"distill@{name}: val {summary.val.accuracy:.3f}, test {summary.test.accuracy:.3f} "
        f"(teachers {', '.join(teaching.names)}: val {ensemble['val']:.3f}, test {ensemble['test']:.3f}); "
        f"train-val gap {summary.overfitting.accuracy_gap:+.3f} (best epoch {summary.best_epoch})"
    )


if __name__ == "__main__":
    run_stage(main, "distill")
