"""Safe access to a FER-2013 archive (the Kaggle zip layout) without extracting it.

The dataset is kept as one zip file under `data/raw/`: one DVC-tracked file hashes and
checks out in a fraction of a second, where 35,887 loose JPEGs would make every `dvc status`
walk the tree. The zip is read in place, so nothing is ever extracted to disk.
"""

from __future__ import annotations

import os
import stat
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ferbench.errors import FerbenchError

SPLIT_FOLDERS: tuple[str, ...] = ("train", "test")  # the Kaggle archive's top-level folders

MEBIBYTE = 1024 * 1024


@dataclass(frozen=True)
class ArchiveEntry:
    """One file of the archive that sits in a split folder."""

    name: str  # path inside the archive, POSIX separators
    split: str  # "train" or "test": the Kaggle folder it came from
    class_name: str | None  # the class folder, None when the file sits directly in the split folder


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    return stat.S_ISLNK(info.external_attr >> 16)


def _is_unsafe_name(name: str) -> bool:
    path = PurePosixPath(name.replace("\\", "/"))
    return path.is_absolute() or ".." in path.parts or (len(name) > 1 and name[1] == ":")


def check_archive(path: Path, max_uncompressed_mb: float) -> list[zipfile.ZipInfo]:
    """Refuse an unsafe zip as a whole; return its file entries when it is safe.

    Unsafe: an entry with an absolute path or `..`, a symlink entry, or a declared
    uncompressed total above the cap (a zip bomb).
    """
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise FerbenchError(f"{path}: not a readable zip archive ({exc})") from exc
    total = 0
    for info in infos:
        if _is_unsafe_name(info.filename):
            raise FerbenchError(
                f"{path}: refused, entry '{info.filename}' has an absolute path or '..'; "
                "use an archive whose entries stay inside it"
            )
        if _is_symlink(info):
            raise FerbenchError(f"{path}: refused, entry '{info.filename}' is a symbolic link")
        total += info.file_size
    cap = max_uncompressed_mb * MEBIBYTE
    if total > cap:
        raise FerbenchError(
            f"{path}: refused, declares {total / MEBIBYTE:.0f} MiB uncompressed, above the cap of "
            f"{max_uncompressed_mb:g} MiB (data.max_uncompressed_mb); raise the cap if the archive is trusted"
        )
    return [info for info in infos if not info.is_dir()]


def classify_entry(name: str) -> ArchiveEntry | None:
    """Place a file entry in the `[prefix/]split/class/file` layout; None when it is not data.

    Hidden files and macOS resource forks are not data, nor is anything outside a split folder.
    """
    parts = PurePosixPath(name).parts
    if not parts or parts[-1].startswith(".") or "__MACOSX" in parts:
        return None
    if len(parts) >= 3 and parts[-3] in SPLIT_FOLDERS:
        return ArchiveEntry(name=name, split=parts[-3], class_name=parts[-2])
    if len(parts) >= 2 and parts[-2] in SPLIT_FOLDERS:
        return ArchiveEntry(name=name, split=parts[-2], class_name=None)
    return None


def read_entries(path: Path, max_uncompressed_mb: float) -> Iterator[tuple[ArchiveEntry, bytes | None]]:
    """Yield every data entry of a safe archive with its bytes (None if unreadable), sorted by name."""
    infos = check_archive(path, max_uncompressed_mb)
    with zipfile.ZipFile(path) as archive:
        placed = [(entry, info) for info in infos if (entry := classify_entry(info.filename)) is not None]
        for entry, info in sorted(placed, key=lambda pair: pair[0].name):
            try:
                data: bytes | None = archive.read(info)
            except (zipfile.BadZipFile, OSError, EOFError):
                data = None  # a corrupt member is a bad file like any other, reported by the caller
            yield entry, data


def pack_folder(folder: Path, destination: Path, max_uncompressed_mb: float) -> int:
    """Store an extracted `{train,test}/<class>/<image>` folder as an uncompressed zip.

    Symbolic links are refused, like in archives, so that nothing outside the folder is read.
    Returns the number of files packed.
    """
    if not any((folder / split).is_dir() for split in SPLIT_FOLDERS):
        raise FerbenchError(
            f"{folder}: no 'train' or 'test' folder inside; data.archive must be the Kaggle zip or "
            "its extracted folder with train/<class>/ and test/<class>/"
        )
    files: list[Path] = []
    total = 0
    for root, dirs, names in os.walk(folder, followlinks=False):
        for name in sorted(dirs + names):
            candidate = Path(root) / name
            if candidate.is_symlink():
                raise FerbenchError(f"{candidate}: refused, symbolic links are not followed in data.archive")
        for name in sorted(names):
            file_path = Path(root) / name
            files.append(file_path)
            total += file_path.stat().st_size
    if total > max_uncompressed_mb * MEBIBYTE:
        raise FerbenchError(
            f"{folder}: {total / MEBIBYTE:.0f} MiB of files, above data.max_uncompressed_mb "
            f"({max_uncompressed_mb:g} MiB)"
        )
    with zipfile.ZipFile(destination, "w", compression=zipfile.ZIP_STORED) as archive:
        for file_path in sorted(files):
            archive.write(file_path, file_path.relative_to(folder).as_posix())
    return len(files)
