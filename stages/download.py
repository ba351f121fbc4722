"""DVC stage `download`: FER-2013 from Kaggle, a local copy, or generated, to data/raw/fer2013.zip."""

from ferbench import params as P
from ferbench.cli import run_stage
from ferbench.data.download import acquire_dataset
from ferbench.paths import RAW_ARCHIVE
from ferbench.schema import DATA_SOURCES


def main() -> None:
    params = P.load_params()
    source = P.choice(params, "data.source", DATA_SOURCES)
    acquire_dataset(
        source,
        RAW_ARCHIVE,
        archive=P.get(params, "data.archive", (str, type(None))),
        kaggle_dataset=P.get(params, "data.kaggle_dataset", str),
        synthetic_counts=P.get(params, "data.synthetic", dict),
        seed=P.get(params, "seed", int),
        max_uncompressed_mb=P.get(params, "data.max_uncompressed_mb", (int, float)),
    )
    print(f"download: {source} -> {RAW_ARCHIVE} ({RAW_ARCHIVE.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    run_stage(main, "download", __doc__)
