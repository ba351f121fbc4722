"""Compare the numbers two runs of the pipeline wrote: every JSON under metrics/ and reports/details/,
flattened and compared value by value, timings (and the variant picked by them) aside. For a refactor
or a library swap that must leave the numbers as they were, e.g. `make demo` before and after:

  .venv/bin/python scripts/compare_runs.py OLD/demo NEW/demo
  # 25 files equal (timings aside), 0 differ; of 25

Exit status 0 when every file is equal, 1 otherwise (each differing file is listed with its first keys).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TIMING_WORDS = ("_ms", "fps", "seconds", "per_second", "speedup", "latency", "fastest_faithful", "machine")
TOLERANCE = 1e-12  # relative: JSON round trips of the same float agree far closer than this


def flatten(value: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, leaf value) for every leaf of a JSON document."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from flatten(item, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from flatten(item, f"{prefix}[{index}]")
    else:
        yield prefix, value


def is_timing(key: str) -> bool:
    return any(word in part for part in key.split(".") for word in TIMING_WORDS)


def differences(old: Path, new: Path) -> list[tuple[str, Any, Any]]:
    """The keys of two JSON files whose values differ (timings aside)."""
    before = dict(flatten(json.loads(old.read_text())))
    after = dict(flatten(json.loads(new.read_text()))) if new.is_file() else {}
    found = []
    for key in sorted(set(before) | set(after)):
        if is_timing(key):
            continue
        a, b = before.get(key, "<missing>"), after.get(key, "<missing>")
        close = isinstance(a, float) and isinstance(b, float) and abs(a - b) <= TOLERANCE * max(1.0, abs(a))
        if a != b and not close:
            found.append((key, a, b))
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("old", type=Path, help="a pipeline workspace (e.g. demo/ of the earlier commit)")
    parser.add_argument("new", type=Path, help="the same workspace of the later commit")
    args = parser.parse_args()
    files = sorted(
        path.relative_to(args.old)
        for folder in ("metrics", "reports/details")
        for path in (args.old / folder).rglob("*.json")
    )
    if not files:
        print(f"compare_runs: no metrics or details files under {args.old}", file=sys.stderr)
        return 2
    differing = 0
    for relative in files:
        found = differences(args.old / relative, args.new / relative)
        if found:
            differing += 1
            print(f"{relative}: {len(found)} values differ: {found[:6]}")
    print(f"{len(files) - differing} files equal (timings aside), {differing} differ; of {len(files)}")
    return 1 if differing else 0


if __name__ == "__main__":
    sys.exit(main())
