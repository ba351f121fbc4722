"""DVC stage `feature_extract@<backbone>`: a head trained on the cached frozen features."""

from ferbench import params as P
from ferbench.benchmark import run_feature_extract
from ferbench.cli import backbone_argument, run_stage
from ferbench.paths import FEATURES_DIR
from ferbench.stage_params import backbone_overrides, run_settings


def main() -> None:
    name = backbone_argument("feature_extract", __doc__)
    params = P.load_params()
    summary = run_feature_extract(
        name,
        FEATURES_DIR / f"{name}.npz",
        P.get(params, "feature_extract", dict),
        backbone_overrides(params, name, "feature_extract"),
        run_settings(params),
    )
    print(f"feature_extract@{name}: val {summary['val']['accuracy']:.3f}, test {summary['test']['accuracy']:.3f}")


if __name__ == "__main__":
    run_stage(main, "feature_extract")
