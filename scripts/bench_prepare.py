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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("archive", nargs="?", type=Path, default=Path("../shared/datasets/fer2013.zip"))
    parser.add_argument("--repeat", type=int, default=3, help="runs to time (the best is reported)")
    args = parser.parse_args()
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
