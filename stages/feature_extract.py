"""DVC stage `feature_extract@<backbone>`: a head trained on the cached frozen features."""

from ferbench import params as P
from ferbench.cli import backbone_argument, run_stage
from ferbench.paths import features_file
from ferbench.training.benchmark import run_feature_extract
from ferbench.training.settings import RunSettings, resolve_device


def main() -> None:
    name = backbone_argument("feature_extract", __doc__)
    params = P.load_params()
    settings = RunSettings.from_params(params, resolve_device(params.device))
    summary = run_feature_extract(name, features_file(name), params.feature_extract_for(name), settings)
    print(f"feature_extract@{name}: val {summary.val.accuracy:.3f}, test {summary.test.accuracy:.3f}")


if __name__ == "__main__":
    run_stage(main, "feature_extract")
