"""Where a shipped model comes from, and what it must not be used for: recorded in its model card.

The card says what data the model was trained on (source and the archive's SHA-256, from
`data/prepared/provenance.json`), the git revision of the code, when the folder was written, the
params that made the weights (from the checkpoint's metadata) and how it ships, and its
limitations; a model trained on the synthetic demo faces says so loudly, because its accuracy
describes drawings, not people.
"""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

SYNTHETIC_WARNING = (
    "Trained and tested on synthetic drawn faces (`make demo`): its accuracy says nothing about real faces. "
    "Use the released model or run the real benchmark for a usable one."
)
LIMITATIONS = [
    "Trained and evaluated on FER-2013-style faces: 48x48 grayscale, mostly frontal, cropped; accuracy on "
    "other faces (turned, occluded, low light, children, other cultures' expressions) is not measured.",
    "Seven posed-expression categories, not a reading of anyone's feelings; do not use it to make decisions "
    "about people.",
]


SOURCE_REVISION_FILE = "SOURCE_REVISION"  # written into a workspace's copy of the package (ferbench.workflow.workspace)
PACKAGE_DIR = Path(__file__).resolve().parent


def code_revision() -> str:
    """The ferbench commit this code comes from: the revision a workspace copy was made from, else
    `git describe --always --dirty` of the project holding this package, else 'unknown'."""
    recorded = PACKAGE_DIR / SOURCE_REVISION_FILE
    if recorded.is_file():
        return recorded.read_text()[:100].strip() or "unknown"
    try:
        result = subprocess.run(
            ["git", "describe", "--always", "--dirty"], cwd=PACKAGE_DIR, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return result.stdout.strip() or "unknown"


def machine_description() -> str:
    """The CPU a latency figure was measured on: its model name (Linux /proc/cpuinfo, else the platform's
    word for it), the logical cores and the OS, e.g. 'AMD EPYC 9R14, 2 logical cores, Linux'."""
    name = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.lower().startswith("model name") and ":" in line:
                name = line.split(":", 1)[1].strip()
                break
    name = name or platform.processor() or platform.machine() or "unknown CPU"
    return f"{name}, {os.cpu_count() or '?'} logical cores, {platform.system() or 'unknown OS'}"


def limitations(data_source: str) -> list[str]:
    """What the card warns about (the synthetic warning first when the data was synthetic)."""
    return ([SYNTHETIC_WARNING] if data_source == "synthetic" else []) + LIMITATIONS
