"""DVC stage `finetune@<backbone>`: the whole network trained end to end (data-parallel over
several processes when `distributed` asks for them; rank 0 writes)."""

from ferbench import params as P
from ferbench.cli import backbone_argument, run_stage
from ferbench.training.benchmark import run_finetune
from ferbench.training.distributed import join_group, leave_group
from ferbench.training.settings import RunSettings, backbone_spec, resolve_device, tune_for


def main() -> None:
    name = backbone_argument("finetune", __doc__)
    params = P.load_params()
    spec, recipe = backbone_spec(params, name), params.finetune_for(name)
    group, device = join_group(resolve_device(params.device), params.distributed.timeout_s)
    tune_for(device)
    summary = run_finetune(spec, recipe, RunSettings.from_params(params, device, group))
    leave_group(group)
    if summary is None:  # not rank 0: it wrote nothing
        return
    print(f"finetune@{spec.name}: val {summary.val.accuracy:.3f}, test {summary.test.accuracy:.3f}")


if __name__ == "__main__":
    run_stage(main, "finetune")
