"""Where each stage reads and writes, relative to the project root (the contracts in DESIGN.md)."""

from pathlib import Path

RAW_ARCHIVE = Path("data/raw/fer2013.zip")
PREPARED_DIR = Path("data/prepared")
DATA_METRICS = Path("metrics/data.json")
DATA_PLOTS = Path("plots/data")
FEATURES_DIR = Path("data/features")
