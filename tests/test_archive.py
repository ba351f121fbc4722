import os
import stat
import zipfile

import pytest

from ferbench.data.archive import check_archive, classify_entry, pack_folder
from ferbench.data.download import acquire_dataset
from ferbench.errors import FerbenchError
from tests.support import data_section, minimal_members, write_zip


def _with_member(path, info_or_name, data=b"x"):
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr(info_or_name, data)
    return path


@pytest.mark.parametrize("name", ["/etc/evil.jpg", "train/../../evil.jpg", "../evil.jpg", "C:/evil.jpg"])
def test_path_escaping_entries_are_refused(tmp_path, name):
    path = _with_member(write_zip(tmp_path / "a.zip", minimal_members(1)), name)
    with pytest.raises(FerbenchError, match="absolute path or '..'"):
        check_archive(path, 1024)


def test_symlink_entry_is_refused(tmp_path):
    info = zipfile.ZipInfo("train/happy/link.jpg")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    path = _with_member(write_zip(tmp_path / "a.zip", minimal_members(1)), info, b"/etc/passwd")
    with pytest.raises(FerbenchError, match="symbolic link"):
        check_archive(path, 1024)


def test_declared_size_above_cap_is_refused(tmp_path):
    path = tmp_path / "bomb.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("train/happy/bomb.jpg", b"\0" * (3 * 1024 * 1024))
    assert path.stat().st_size < 100_000
    with pytest.raises(FerbenchError, match="above the cap of 2 MiB"):
        check_archive(path, 2)
    assert len(check_archive(path, 4)) == 1


def test_not_a_zip_is_a_clear_error(tmp_path):
    path = tmp_path / "fake.zip"
    path.write_text("hello")
    with pytest.raises(FerbenchError, match="not a readable zip"):
        check_archive(path, 10)


def test_unsafe_archive_leaves_no_output(tmp_path):
    source = _with_member(write_zip(tmp_path / "src.zip", minimal_members(1)), "../evil.jpg")
    destination = tmp_path / "data" / "raw" / "fer2013.zip"
    with pytest.raises(FerbenchError):
        acquire_dataset(data_section(source="archive", archive=str(source)), destination, 0)
    assert not destination.exists()
    assert list(destination.parent.iterdir()) == []
    assert not (tmp_path / "evil.jpg").exists()


def test_folder_source_is_packed_and_symlinks_refused(tmp_path):
    folder = tmp_path / "fer"
    for name, data in minimal_members(1).items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    destination = tmp_path / "out" / "fer2013.zip"
    acquire_dataset(data_section(source="archive", archive=str(folder)), destination, 0)
    with zipfile.ZipFile(destination) as archive:
        assert sorted(archive.namelist()) == sorted(minimal_members(1))
    os.symlink("/etc/passwd", folder / "train" / "happy" / "link.png")
    with pytest.raises(FerbenchError, match="symbolic links are not followed"):
        pack_folder(folder, tmp_path / "other.zip", 1024)


def test_missing_archive_names_the_param(tmp_path):
    with pytest.raises(FerbenchError, match="data.archive: .* does not exist"):
        acquire_dataset(data_section(source="archive", archive=str(tmp_path / "nope.zip")), tmp_path / "x.zip", 0)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("train/happy/a.jpg", ("train", "happy")),
        ("fer2013/test/sad/b.jpg", ("test", "sad")),
        ("train/a.jpg", ("train", None)),
        ("README.txt", None),
        ("__MACOSX/train/happy/._a.jpg", None),
        ("train/happy/.DS_Store", None),
    ],
)
def test_entries_are_placed_in_the_layout(name, expected):
    entry = classify_entry(name)
    assert (entry and (entry.split, entry.class_name)) == expected
