"""Files a user named, read and written safely: only a regular file is ever read (a FIFO would make the
reader wait for ever, a device such as /dev/zero never ends); an output never replaces an input, nor an
existing file unless asked; a CSV cell is never a live spreadsheet formula; a name printed to a terminal
never carries control or bidirectional characters. Every problem is one line naming the path."""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from ferbench.errors import FerbenchError

if TYPE_CHECKING:
    import pandas as pd

NOT_REGULAR = "not a regular file (a folder, FIFO, device or socket)"


def regular_file(path: Path | str, what: str = "file") -> os.stat_result:
    """The stat of `path` (a `what`, for the message), which must exist and be a regular file."""
    try:
        info = os.stat(path)
    except OSError as exc:
        raise FerbenchError(f"{path}: {what} not found ({exc.strerror or exc})") from exc
    if not stat.S_ISREG(info.st_mode):
        raise FerbenchError(f"{path}: {NOT_REGULAR}; name a {what}")
    return info


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # what makes a spreadsheet read a cell as a formula


def spreadsheet_safe(value: object) -> object:
    """A CSV cell that no spreadsheet runs as a formula: text starting with = + - @ (or a tab or CR) gets a
    leading apostrophe, as OWASP advises; numbers and other text are left as they are."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def safe_row(values: Iterable[object]) -> list[object]:
    return [spreadsheet_safe(value) for value in values]


def write_frame_csv(frame: pd.DataFrame, path: Path | str) -> None:
    """`frame` as CSV with every text cell and column name made spreadsheet-safe (names of files and
    classes come from archives, folders and model cards, which are untrusted)."""
    import pandas as pd

    safe = frame.rename(columns=lambda name: spreadsheet_safe(str(name)))
    for column in safe.columns:
        if safe[column].dtype == object or isinstance(safe[column].dtype, pd.StringDtype):
            safe[column] = safe[column].map(spreadsheet_safe)
    safe.to_csv(path, index=False)


class RefusedOutput(FerbenchError):
    """An output file that would replace something the run did not make."""


def check_new_output(path: Path, inputs: Iterable[Path] = (), overwrite: bool = False, flag: str = "--out") -> None:
    """Refuse to write `path` over one of `inputs` (ever) or over any existing file (unless `overwrite`)."""
    if not path.exists():
        return
    for source in inputs:
        try:
            same = source.exists() and os.path.samefile(path, source)
        except OSError:
            same = False
        if same:
            raise RefusedOutput(f"{flag} {path} is one of the inputs; name a new file for the results")
    if path.is_dir():
        raise RefusedOutput(f"{flag} {path} is a folder; name a file")
    if not overwrite:
        raise RefusedOutput(f"{flag} {path} exists; name a new file, or pass --overwrite to replace it")


CONTROL_OR_BIDI = re.compile(r"[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def printable(text: object) -> str:
    """Text safe to print to a terminal: bytes that are not UTF-8, control characters (escape sequences)
    and bidirectional overrides (which reorder what a reader sees) shown as escapes."""
    shown = str(text).encode("utf-8", "backslashreplace").decode("utf-8")
    return CONTROL_OR_BIDI.sub(lambda match: match.group().encode("unicode_escape").decode("ascii"), shown)
