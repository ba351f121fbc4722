"""Data-parallel scaling of `finetune`: training images per second at 1, 2, ... processes.

Runs the finetune stage as dvc.yaml does (`python -m ferbench.training.launch --nproc-per-node K
stages.finetune BACKBONE`) in a scratch folder holding this project's params.yaml (with the
backbone, epochs and process count set) and a link to a prepared data folder, then reads the
throughput the stage recorded in its details file. Meant for a GPU machine (one process per GPU);
on a CPU it shows the gloo path's overhead.

    python scripts/bench_ddp.py --prepared data/prepared --backbone resnet18 --processes 1,2,4,8
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

PROJECT = Path(__file__).resolve().parent.parent


def run(
    prepared: Path, backbone: str, processes: int, epochs: int, batch_size: int, device: str, random_init: bool
) -> dict:
    params = yaml.safe_load((PROJECT / "params.yaml").read_text())
    if backbone not in params["backbones"]:
        raise SystemExit(
            f"bench_ddp: error: no backbone {backbone!r} in params.yaml (have: {', '.join(params['backbones'])})"
        )
    params["device"] = device
    if random_init:  # offline: no pretrained weights to fetch
        params["backbones"][backbone].update(pretrained=False, weights=None)
    params["finetune"].update(epochs=epochs, batch_size=batch_size)
    params["distributed"].update(nproc_per_node=processes, nnodes=1)
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        (root / "data").mkdir()
        (root / "data" / "prepared").symlink_to(prepared.resolve())
        (root / "params.yaml").write_text(yaml.safe_dump(params))
        command = [sys.executable, "-m", "ferbench.training.launch", "--nproc-per-node", str(processes)]
        command += ["stages.finetune", backbone]
        start = time.perf_counter()
        done = subprocess.run(
            command, cwd=root, env=dict(os.environ, PYTHONPATH=str(PROJECT)), capture_output=True, text=True
        )
        wall = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"bench_ddp: {processes} process(es) failed:\n{done.stderr[-3000:]}")
        details = json.loads((root / "reports/details/finetune" / f"{backbone}.json").read_text())
    return {
        "processes": processes,
        "images_per_second": details["train_images_per_second"],
        "wall_s": wall,
        **{key: details[key] for key in ("device", "global_batch_size", "identical_weights_across_processes")},
        "val_accuracy": details["val"]["accuracy"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prepared", type=Path, required=True, help="a prepared data folder (data/prepared)")
    parser.add_argument("--backbone", default="resnet18", help="a backbone of params.yaml")
    parser.add_argument("--processes", default="1,2", help="comma-separated process counts")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=256, help="the global batch")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--random-init", action="store_true", help="the backbone without pretrained weights (offline)")
    args = parser.parse_args()
    rows = [
        run(args.prepared, args.backbone, int(count), args.epochs, args.batch_size, args.device, args.random_init)
        for count in args.processes.split(",")
    ]
    base = rows[0]["images_per_second"]
    print(
        f"# finetune@{args.backbone}, {args.epochs} epoch(s), global batch {args.batch_size}, "
        f"device {rows[0]['device']}"
    )
    print("# processes  images/s  speed-up  wall s  val acc  identical weights")
    for row in rows:
        print(
            f"# {row['processes']:9d}  {row['images_per_second']:8.0f}  {row['images_per_second'] / base:7.2f}x"
            f"  {row['wall_s']:6.1f}  {row['val_accuracy']:7.4f}  {row['identical_weights_across_processes']}"
        )


if __name__ == "__main__":
    main()
