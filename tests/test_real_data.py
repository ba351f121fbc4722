"""FER-2013 itself, when params-local.yaml names the Kaggle zip (data.archive); skipped otherwise."""

import pytest

from ferbench.data.prepare import prepare_dataset
from tests.support import REAL_ARCHIVE, project_params

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not REAL_ARCHIVE.is_file(), reason=f"real FER-2013 not found at {REAL_ARCHIVE}"),
]


def test_real_archive_counts_and_known_quirks():
    result = prepare_dataset(REAL_ARCHIVE, project_params().data, 42)
    summary = result.summary
    assert summary.archive_files == {"train": 28709, "test": 7178}
    assert summary.counts["test"]["total"] == 7178
    assert summary.counts["test"]["disgust"] == 111
    quality = summary.quality
    assert quality.skipped == 0
    assert 500 <= quality.train_test_shared_groups <= 560
    assert quality.near_blank == 13
    assert 40 <= quality.label_conflict_groups <= 70
    kept = summary.counts["train"]["total"] + summary.counts["val"]["total"]
    assert kept == 28709 - sum(quality.dropped.values())
    assert 0.12 <= summary.counts["val"]["total"] / kept <= 0.13
