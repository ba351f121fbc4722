import numpy as np
import pandas as pd
import pytest

from ferbench.constants import FER2013_CLASSES
from ferbench.data.prepare import prepare_dataset, write_prepared
from ferbench.data.prepared import Split, leakage_free_test_mask, load_split, save_split
from ferbench.data.split import group_stratified_split
from ferbench.errors import FerbenchError
from tests.support import data_section, encode, minimal_members, textured

CLASSES = list(FER2013_CLASSES)


def run(path, policy=None, val_fraction=0.25, seed=0, classes=CLASSES):
    data = data_section(classes=list(classes), val_fraction=val_fraction, max_uncompressed_mb=64.0, **(policy or {}))
    return prepare_dataset(path, data, seed)


def test_bad_files_are_skipped_and_listed_and_odd_images_fixed(zip_factory):
    members = minimal_members(3)
    members["train/happy/rgb.jpg"] = encode(textured(900), mode="RGB")
    members["train/happy/big.png"] = encode(textured(901, size=96), "PNG")
    members["train/sad/empty.jpg"] = b""
    members["train/sad/notes.jpg"] = b"this is not an image"
    members["test/fear/truncated.jpg"] = encode(textured(902))[:200]
    members["train/loose.jpg"] = encode(textured(903))
    result = run(zip_factory(members))
    quality = result.summary.quality
    assert quality.skipped == 4
    assert quality.converted_to_gray == 1 and quality.resized == 1
    skipped = "\n".join(result.summary.skipped_files)
    for expected in (
        "empty.jpg: empty file",
        "notes.jpg: not an image",
        "truncated.jpg: corrupt image",
        "loose.jpg: not in a class folder",
    ):
        assert expected in skipped
    manifest = result.manifest.set_index("file")
    assert manifest.loc["train/happy/rgb.jpg", "split"] in ("train", "val")
    assert manifest.loc["train/sad/empty.jpg", "split"] == "skipped"
    total = sum(len(s) for s in result.splits.values())
    assert total == len(members) - 4


def test_unknown_class_folder_names_the_param(zip_factory):
    members = minimal_members(1)
    members["train/contempt/a.png"] = encode(textured(5), "PNG")
    with pytest.raises(FerbenchError, match="unknown class folder.*train/contempt.*data.classes"):
        run(zip_factory(members))


def test_missing_split_is_an_error(zip_factory):
    members = {k: v for k, v in minimal_members(1).items() if k.startswith("train/")}
    with pytest.raises(FerbenchError, match="no 'test/<class>/' images"):
        run(zip_factory(members))


def test_empty_class_is_an_error(zip_factory):
    members = {k: v for k, v in minimal_members(2).items() if not k.startswith("test/disgust/")}
    members["test/disgust/broken.jpg"] = b"junk"
    with pytest.raises(FerbenchError, match="no readable images for class.*disgust.*'test/'"):
        run(zip_factory(members))


def _dataset_with_problems():
    members = minimal_members(8)
    dup = encode(textured(1000), "PNG")
    members["train/happy/dup_a.png"] = dup
    members["train/happy/dup_b.png"] = dup
    conflict = encode(textured(1001), "PNG")
    members["train/happy/conflict.png"] = conflict
    members["train/sad/conflict.png"] = conflict
    members["train/neutral/blank.png"] = encode(np.full((48, 48), 128, np.uint8), "PNG")
    members["train/fear/leak.png"] = members["test/fear/img_0.png"]
    return members


def test_quality_problems_are_found_and_dropped_from_train_only(zip_factory):
    result = run(zip_factory(_dataset_with_problems()))
    quality = result.summary.quality
    assert quality.duplicate_groups == 3  # dup pair, conflict pair, train/test pair
    assert quality.label_conflict_groups == 1
    assert quality.near_blank == 1
    assert quality.train_test_shared_groups == 1
    assert quality.dropped == {"duplicate": 1, "label_conflict": 2, "near_blank": 1, "shared_with_test": 1}
    manifest = result.manifest.set_index("file")
    assert manifest.loc["test/fear/img_0.png", "split"] == "test"
    assert manifest.loc["train/fear/leak.png", "split"] == "dropped"
    assert result.summary.counts["test"]["total"] == 7 * 8


def test_keep_policies_keep_everything(zip_factory):
    members = _dataset_with_problems()
    policy = {"duplicates": "keep", "label_conflicts": "keep", "blanks": "keep", "test_leakage": "keep"}
    result = run(zip_factory(members), policy=policy)
    assert sum(len(s) for s in result.splits.values()) == len(members)


def test_split_is_reproducible_stratified_and_keeps_copies_together(synthetic_archive, zip_factory):
    first = run(synthetic_archive, val_fraction=0.25, seed=1)
    again = run(synthetic_archive, val_fraction=0.25, seed=1)
    other = run(synthetic_archive, val_fraction=0.25, seed=2)
    assert first.manifest["split"].tolist() == again.manifest["split"].tolist()
    assert first.manifest["split"].tolist() != other.manifest["split"].tolist()
    for name in FER2013_CLASSES:
        assert first.summary.counts["val"][name] == 10  # 25% of 40 per class

    labels = np.repeat(np.arange(3), 40)
    groups = np.arange(120) // 3  # copies in threes
    in_val = group_stratified_split(labels, groups, 0.2, seed=0)
    frame = pd.DataFrame({"group": groups, "val": in_val})
    assert (frame.groupby("group")["val"].nunique() == 1).all()
    assert [int(in_val[labels == c].sum()) for c in range(3)] == [9, 9, 9]  # whole groups near 20% of 40


def test_outputs_round_trip(synthetic_archive, tmp_path):
    result = run(synthetic_archive)
    write_prepared(result, tmp_path)
    for split in ("train", "val", "test"):
        loaded = load_split(tmp_path / f"{split}.npz")
        assert loaded.images.dtype == np.uint8 and loaded.images.shape[1:] == (48, 48)
        assert loaded.labels.dtype == np.int64 and len(loaded) == len(result.splits[split])
        np.testing.assert_array_equal(loaded.images, result.splits[split].images)
    manifest = pd.read_csv(tmp_path / "manifest.csv")
    assert {"file", "split", "label", "pixel_hash", "index"} <= set(manifest.columns)
    assert len(manifest) == 7 * 52
    row = manifest[manifest["split"] == "test"].iloc[3]
    assert load_split(tmp_path / "test.npz").labels[row["index"]] == row["label"]


def test_save_split_rejects_wrong_shapes(tmp_path):
    with pytest.raises(ValueError, match="uint8 N x 48 x 48"):
        save_split(tmp_path / "x.npz", Split(np.zeros((2, 32, 32), np.uint8), np.zeros(2, np.int64)))
    with pytest.raises(FerbenchError, match="run `dvc repro prepare`"):
        load_split(tmp_path / "missing.npz")


def test_leakage_free_test_subset_is_the_test_images_not_in_the_train_folder(zip_factory, tmp_path):
    members = _dataset_with_problems()
    members["train/sad/leak_kept_copy.png"] = members["test/sad/img_3.png"]  # shared pixels, another class
    result = run(zip_factory(members))
    write_prepared(result, tmp_path / "prepared")
    mask = leakage_free_test_mask(tmp_path / "prepared", len(result.splits["test"]))
    manifest = result.manifest[result.manifest["split"] == "test"].sort_values("index")
    shared = set(manifest.loc[~mask, "file"])
    assert shared == {"test/fear/img_0.png", "test/sad/img_3.png"}  # whatever prepare dropped from train
    assert mask.sum() == 7 * 8 - 2
    assert result.summary.quality.test_leakage_free_images == 7 * 8 - 2
    assert result.summary.quality.test_images_in_train_folder == 2
    with pytest.raises(FerbenchError, match="does not match test.npz"):
        leakage_free_test_mask(tmp_path / "prepared", 5)
