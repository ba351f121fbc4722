"""DVC stage `download`: FER-2013 from Kaggle, a local copy, or generated, to data/raw/fer2013.zip."""

from ferbench import params as P
from ferbench.cli import run_stage
from ferbench.data.download import acquire_dataset
from ferbench.paths import RAW_ARCHIVE


def main() -> None:
    params = P.load_params()
    acquire_dataset(params.data, RAW_ARCHIVE, params.seed)
    print(f"download: {params.data.source} -> {RAW_ARCHIVE} ({RAW_ARCHIVE.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    run_stage(main, "download", __doc__)
