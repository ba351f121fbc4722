"""DVC stage `prepare`: decode, quality-check and split data/raw/fer2013.zip into data/prepared/.

Writes the headline counts and quality figures to metrics/data.json, images per class and split to
plots/data/, and the whole summary (per-class counts, every quality counter, skipped files) to
reports/details/data.json."""

from ferbench import params as P
from ferbench.cli import run_stage
from ferbench.data.prepare import QualityPolicy, data_headline, prepare_dataset, write_prepared
from ferbench.data.prepared import PROVENANCE_FILE, archive_provenance
from ferbench.metrics import write_json
from ferbench.paths import DATA_DETAILS, DATA_METRICS, DATA_PLOTS, PREPARED_DIR, RAW_ARCHIVE
from ferbench.plots import save_class_distribution


def main() -> None:
    params = P.load_params()
    classes = P.get(params, "data.classes", list)
    policy = QualityPolicy(
        duplicates=P.get(params, "data.duplicates"),
        label_conflicts=P.get(params, "data.label_conflicts"),
        blanks=P.get(params, "data.blanks"),
        test_leakage=P.get(params, "data.test_leakage"),
        blank_std=float(P.get(params, "data.blank_std", (int, float))),
    )
    result = prepare_dataset(
        RAW_ARCHIVE,
        classes,
        val_fraction=float(P.get(params, "data.val_fraction", (int, float))),
        seed=P.get(params, "seed", int),
        policy=policy,
        max_uncompressed_mb=P.get(params, "data.max_uncompressed_mb", (int, float)),
    )
    write_prepared(result, PREPARED_DIR)
    provenance = archive_provenance(RAW_ARCHIVE, P.get(params, "data.source"), P.get(params, "data.kaggle_dataset"))
    write_json(PREPARED_DIR / PROVENANCE_FILE, provenance)
    write_json(DATA_DETAILS, result.summary)
    write_json(DATA_METRICS, data_headline(result.summary))
    save_class_distribution(
        result.summary["counts"], classes, DATA_PLOTS / "class_distribution.csv", DATA_PLOTS / "class_distribution.png"
    )
    counts = result.summary["counts"]
    quality = result.summary["quality"]
    print(
        f"prepare: train {counts['train']['total']}, val {counts['val']['total']}, test {counts['test']['total']}; "
        f"{quality['skipped']} skipped, {sum(quality['dropped'].values())} dropped, "
        f"{quality['train_test_shared_groups']} groups shared by train and test"
    )
    for line in result.summary["skipped_files"]:
        print(f"prepare: skipped {line}")


if __name__ == "__main__":
    run_stage(main, "prepare", __doc__)
