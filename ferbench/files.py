"""Opening a file a user named, safely: only a regular file is ever read (a FIFO would make the reader wait
for ever, a device such as /dev/zero never ends), and every problem is one line naming the path."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ferbench.errors import FerbenchError

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
