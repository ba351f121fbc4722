"""DVC stage `finetune@<backbone>`: the whole network trained end to end."""

from ferbench import params as P
from ferbench.benchmark import run_finetune
from ferbench.cli import backbone_argument, run_stage
from ferbench.paths import PREPARED_DIR
from ferbench.stage_params import backbone_overrides, backbone_spec, device


def main() -> None:
    name = backbone_argument("finetune", __doc__)
    params = P.load_params()
    spec = backbone_spec(params, name)
    summary = run_finetune(
        spec,
        P.get(params, "finetune", dict),
        backbone_overrides(params, spec.name, "finetune"),
        PREPARED_DIR,
        P.get(params, "data.classes", list),
        device(params),
        P.get(params, "seed", int),
        bool(P.get(params, "compile")),
    )
    print(f"finetune@{spec.name}: val {summary['val']['accuracy']:.3f}, test {summary['test']['accuracy']:.3f}")


if __name__ == "__main__":
    run_stage(main, "finetune")
