"""DVC stage `prepare`: decode, quality-check and split data/raw/fer2013.zip into data/prepared/.

Writes the headline counts and quality figures to metrics/data.json, images per class and split to
plots/data/, and the whole summary (per-class counts, every quality counter, skipped files) to
reports/details/data.json."""

from ferbench import params as P
from ferbench.cli import run_stage
from ferbench.data.prepare import prepare_dataset, write_prepared
from ferbench.data.prepared import PROVENANCE_FILE, archive_provenance
from ferbench.evaluation.plots import save_class_distribution
from ferbench.paths import DATA_DETAILS, DATA_METRICS, DATA_PLOTS, PREPARED_DIR, RAW_ARCHIVE
from ferbench.records import write_headline, write_record


def main() -> None:
    params = P.load_params()
    classes = params.data.classes
    result = prepare_dataset(RAW_ARCHIVE, params.data, params.seed)
    write_prepared(result, PREPARED_DIR)
    provenance = archive_provenance(RAW_ARCHIVE, params.data.source, params.data.kaggle_dataset)
    write_record(PREPARED_DIR / PROVENANCE_FILE, provenance)
    summary = result.summary
    write_record(DATA_DETAILS, summary)
    write_headline(DATA_METRICS, summary.headline())
    save_class_distribution(
        summary.counts, classes, DATA_PLOTS / "class_distribution.csv", DATA_PLOTS / "class_distribution.png"
    )
    counts, quality = summary.counts, summary.quality
    print(
        f"prepare: train {counts['train']['total']}, val {counts['val']['total']}, test {counts['test']['total']}; "
        f"{quality.skipped} skipped, {sum(quality.dropped.values())} dropped, "
        f"{quality.train_test_shared_groups} groups shared by train and test"
    )
    for line in summary.skipped_files:
        print(f"prepare: skipped {line}")


if __name__ == "__main__":
    run_stage(main, "prepare", __doc__)
