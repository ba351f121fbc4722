"""Time the `prepare` logic on a FER-2013 archive: decode, quality checks, split and writing.

Usage: .venv/bin/python scripts/bench_prepare.py [ARCHIVE] [--repeat N]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from ferbench.data.prepare import prepare_dataset, write_prepared
from ferbench.params import load_params
from ferbench.paths import PROJECT_ROOT
from ferbench.workflow.workspace import local_path


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
    params = load_params(PROJECT_ROOT / "params.yaml")  # the project's data section: classes, quality rules, split
    times = []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            result = prepare_dataset(args.archive, params.data, params.seed)
            write_prepared(result, Path(out))
            times.append(time.perf_counter() - start)
    files = sum(result.summary.archive_files.values())
    runs = ", ".join(f"{t:.2f}" for t in times)
    print(f"prepare on {args.archive}: {files} files, best {min(times):.2f} s, runs {runs}")


if __name__ == "__main__":
    main()
