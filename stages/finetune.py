"""DVC stage `finetune@<backbone>`: the whole network trained end to end (data-parallel over
several processes when `distributed` asks for them; rank 0 writes)."""

from ferbench import params as P
from ferbench.benchmark import run_finetune
from ferbench.cli import backbone_argument, run_stage
from ferbench.distributed import stop
from ferbench.stage_params import backbone_overrides, backbone_spec, run_settings


def main() -> None:
    name = backbone_argument("finetune", __doc__)
    params = P.load_params()
    spec = backbone_spec(params, name)
    settings = run_settings(params)
    summary = run_finetune(
        spec, P.get(params, "finetune", dict), backbone_overrides(params, spec.name, "finetune"), settings
    )
    stop(settings.group)
    if not settings.group.is_main:
        return
    print(f"finetune@{spec.name}: val {summary['val']['accuracy']:.3f}, test {summary['test']['accuracy']:.3f}")


if __name__ == "__main__":
    run_stage(main, "finetune")
