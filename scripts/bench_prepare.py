"""Time the `prepare` logic on a FER-2013 archive: decode, quality checks, split and writing.

Usage: .venv/bin/python scripts/bench_prepare.py [ARCHIVE] [--repeat N]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ferbench.constants import FER2013_CLASSES
from ferbench.data.prepare import QualityPolicy, prepare_dataset, write_prepared
from ferbench.workspace import local_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "archive",
        nargs="?",
        type=Path,
        default=local_path("data", "archive"),
        help="the FER-2013 zip or folder (default: data.archive of params-local.yaml)",
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs to time (the best is reported)")
    args = parser.parse_args()
    if args.archive is None:
        parser.error("name the FER-2013 zip, or set data.archive in params-local.yaml")
    times = []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            result = prepare_dataset(args.archive, FER2013_CLASSES, 0.125, 42, QualityPolicy(), 1024)
            write_prepared(result, Path(out))
            times.append(time.perf_counter() - start)
    files = sum(result.summary["archive_files"].values())
    runs = ", ".join(f"{t:.2f}" for t in times)
    print(f"prepare on {args.archive}: {files} files, best {min(times):.2f} s, runs {runs}")


if __name__ == "__main__":
    main()
