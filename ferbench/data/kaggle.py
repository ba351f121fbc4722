"""Downloading FER-2013 with the official Kaggle client, with a clear way out when it cannot."""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path
from typing import Any

from ferbench.errors import FerbenchError

NO_CREDENTIALS = (
    "no Kaggle credentials found. Either: (1) set KAGGLE_API_TOKEN, or KAGGLE_USERNAME and KAGGLE_KEY, "
    "or save your token as ~/.kaggle/access_token or ~/.kaggle/kaggle.json (kaggle.com > Settings > API); "
    "(2) use a local copy: set data.source: archive and data.archive: path/to/fer2013.zip (or its extracted folder); "
    "(3) run offline on generated faces: data.source: synthetic"
)


def make_client() -> Any:
    """Return an authenticated `KaggleApi`, or raise FerbenchError naming the ways out.

    The client prints its own help and calls exit() when it has no credentials, even at import
    time; both are silenced here and replaced by one message that also names the offline options.
    """
    quiet = io.StringIO()
    try:
        with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
            from kaggle.api.kaggle_api_extended import KaggleApi

            client = KaggleApi()
            client.authenticate()
    except SystemExit as exc:
        raise FerbenchError(NO_CREDENTIALS) from exc
    except Exception as exc:  # the client raises assorted errors on malformed credential files
        raise FerbenchError(f"Kaggle client failed to start ({exc}); {NO_CREDENTIALS}") from exc
    return client


def download_dataset(dataset: str, directory: Path) -> Path:
    """Download `dataset` (owner/name) as its zip into `directory`, with the client's progress bar."""
    if dataset.count("/") != 1:
        raise FerbenchError(f"params.yaml: 'data.kaggle_dataset' must look like owner/name, got {dataset!r}")
    client = make_client()
    directory.mkdir(parents=True, exist_ok=True)
    try:
        client.dataset_download_files(dataset, path=os.fspath(directory), unzip=False, quiet=False, force=True)
    except Exception as exc:  # network, permission or unknown-dataset errors from the client
        raise FerbenchError(
            f"Kaggle download of '{dataset}' failed ({exc}); check the name and your connection, "
            "or use data.source: archive with a local copy"
        ) from exc
    archives = sorted(directory.glob("*.zip"))
    if len(archives) != 1:
        raise FerbenchError(f"Kaggle download of '{dataset}' left {len(archives)} zip files in {directory}, expected 1")
    return archives[0]
