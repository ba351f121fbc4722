"""A model's FER-2013 test accuracy as a user gets it: every test face through `ferbench-predict --whole-image`.

    .venv/bin/python scripts/score_with_predict.py runs/real-cpu --model runs/real-cpu/models/selected

Extracts the test folder of the workspace's archive (`data/raw/fer2013.zip`) into a temporary folder, runs the
predict CLI on it (a subprocess: the command users run, its decoding and its model loading), reads its CSV and
prints the accuracy on all test faces and on the leakage-free ones (no pixel copy in the train folder, from
the workspace's `data/prepared/manifest.csv`), with 95% Wilson intervals. Results: docs/results.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pandas as pd

from ferbench.evaluation.metrics import wilson_interval


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workspace", type=Path, help="a workspace that ran `prepare` on FER-2013 (runs/real-cpu)")
    parser.add_argument("--model", type=Path, help="the model folder (default: the workspace's models/selected)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for the model (default 2)")
    args = parser.parse_args()
    model = args.model or args.workspace / "models/selected"
    manifest = pd.read_csv(
        args.workspace / "data/prepared/manifest.csv", dtype={"pixel_hash": str}, keep_default_na=False
    )
    train_hashes = set(manifest.loc[(manifest["folder"] == "train") & (manifest["pixel_hash"] != ""), "pixel_hash"])
    test = manifest[manifest["split"] == "test"].copy()
    test["leakage_free"] = ~test["pixel_hash"].isin(train_hashes)
    with tempfile.TemporaryDirectory(prefix="fer-test-") as scratch:
        folder = Path(scratch) / "test"
        with zipfile.ZipFile(args.workspace / "data/raw/fer2013.zip") as archive:
            for member in test["file"]:
                target = folder / member
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(archive.read(member))
        table = Path(scratch) / "faces.csv"
        command = [sys.executable, "-m", "ferbench.serving.predict", str(folder), "--whole-image",
                   "--model", str(model), "--threads", str(args.threads), "--csv", str(table)]  # fmt: skip
        done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if done.returncode != 0:
            sys.exit(f"score: ferbench-predict exited {done.returncode}: {done.stderr.strip()[-500:]}")
        faces = pd.read_csv(table, keep_default_na=False)
    faces["file"] = faces["file"].map(lambda path: Path(path).relative_to(folder.parent).as_posix())
    scored = test.merge(faces[["file", "label"]].rename(columns={"label": "predicted"}), on="file", how="left")
    if scored["predicted"].eq("").any() or scored["predicted"].isna().any() or len(faces) != len(test):
        sys.exit(f"score: {len(faces)} answers for {len(test)} test faces; every face must get exactly one")
    result = {"model": str(model), "test_faces": len(scored)}
    for name, rows in (("test", scored), ("test_leakage_free", scored[scored["leakage_free"]])):
        hits = int((rows["predicted"] == rows["class"]).sum())
        low, high = wilson_interval(hits, len(rows))
        result[name] = {"faces": len(rows), "accuracy": hits / len(rows), "ci95": [low, high]}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
