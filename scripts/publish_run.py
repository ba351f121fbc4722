"""Publish a finished workspace's report into docs/: the report with its plots, the headline metrics
and the detailed records, without any FER-2013 image (the grid of the shipped model's most confident
mistakes shows test faces, so it stays behind; its table of image numbers is kept).

    python scripts/publish_run.py runs/real-cpu docs/real-cpu
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

IMAGE_PLOTS = ("confident_mistakes.png",)  # plots made of dataset images: never published
NOTE = (
    "(The grid of these faces, `plots/report/confident_mistakes.png` in the workspace, is not published: "
    "it shows FER-2013 test images.)"
)


def publish(workspace: Path, destination: Path) -> None:
    report = workspace / "reports" / "results.md"
    if not report.is_file():
        raise SystemExit(f"{report}: not found; run `dvc repro` in {workspace} first")
    if destination.exists():
        shutil.rmtree(destination)
    destination.mkdir(parents=True)
    lines = []
    for line in report.read_text().splitlines():
        if any(name in line for name in IMAGE_PLOTS) and line.startswith("!["):
            lines.append(NOTE)
        else:
            lines.append(line.replace("](../plots/report/", "]("))
    (destination / "results.md").write_text("\n".join(lines) + "\n")
    for png in sorted((workspace / "plots" / "report").glob("*.png")):
        if png.name not in IMAGE_PLOTS:
            shutil.copyfile(png, destination / png.name)
    shutil.copytree(workspace / "metrics", destination / "metrics")
    shutil.copytree(workspace / "reports" / "details", destination / "details")
    print(f"published {workspace} into {destination}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workspace", type=Path, help="a workspace after `dvc repro` (runs/real-cpu)")
    parser.add_argument("destination", type=Path, help="the folder under docs/ to write (replaced)")
    args = parser.parse_args()
    publish(args.workspace, args.destination)


if __name__ == "__main__":
    main()
