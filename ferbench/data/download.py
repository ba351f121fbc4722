"""The `download` stage's logic: put the dataset, from any source, at `data/raw/fer2013.zip`."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from ferbench.data import kaggle
from ferbench.data.archive import check_archive, pack_folder
from ferbench.data.synthetic import write_synthetic_archive
from ferbench.errors import FerbenchError
from ferbench.schema import Data


def acquire_dataset(data: Data, destination: Path, seed: int) -> Path:
    """Fetch, copy, pack or generate the dataset (`data.source`) as one checked zip at `destination`.

    Work happens in a temporary folder next to `destination`, and the zip is checked for
    unsafe entries before it is moved into place, so a failure leaves no partial output.
    """
    max_uncompressed_mb = data.max_uncompressed_mb
    destination.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=destination.parent, prefix=".download-") as scratch:
        work = Path(scratch)
        if data.source == "kaggle":
            fetched = kaggle.download_dataset(data.kaggle_dataset, work / "kaggle")
        elif data.source == "archive":
            fetched = _local_copy(data.archive, work, max_uncompressed_mb)
        else:
            fetched = work / "synthetic.zip"
            counts = write_synthetic_archive(fetched, data.synthetic.model_dump(), seed)
            print(f"download: generated {counts['train']} train and {counts['test']} test synthetic faces")
        check_archive(fetched, max_uncompressed_mb)
        destination.unlink(missing_ok=True)
        shutil.move(fetched, destination)
    return destination


def _local_copy(archive: str | None, work: Path, max_uncompressed_mb: float) -> Path:
    if not archive:
        raise FerbenchError("params.yaml: 'data.archive' is empty; set it to the Kaggle zip or its extracted folder")
    source = Path(archive).expanduser()
    if source.is_dir():
        packed = work / "packed.zip"
        count = pack_folder(source, packed, max_uncompressed_mb)
        print(f"download: packed {count} files from {source}")
        return packed
    if not source.is_file():
        raise FerbenchError(
            f"data.archive: {source} does not exist; point it at the Kaggle zip or its extracted folder, "
            "or use data.source: kaggle or synthetic"
        )
    copied = work / "copied.zip"
    shutil.copyfile(source, copied)
    return copied
