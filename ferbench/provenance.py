"""Where a shipped model comes from, and what it must not be used for: recorded in its model card.

The card says what data the model was trained on (source and the archive's SHA-256, from
`data/prepared/provenance.json`), the git revision of the code, when the folder was written, the
params that made the weights (from the checkpoint's metadata) and how it ships, and its
limitations; a model trained on the synthetic demo faces says so loudly, because its accuracy
describes drawings, not people.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

LIMITATIONS = [
    "Trained and evaluated on FER-2013-style faces: 48x48 grayscale, mostly frontal, cropped; accuracy on "
    "other faces (turned, occluded, low light, children, other cultures' expressions) is not measured.",
    "Seven posed-expression categories, not a reading of anyone's feelings; do not use it to make decisions "
    "about people.",
]
SYNTHETIC_LIMITATION = (
    "Trained and tested on synthetic drawn faces (`make demo`): its accuracy says nothing about real faces. "
    "Run the real benchmark for a usable model."
)


def git_revision() -> str:
    """`git describe --always --dirty` of the working tree, or 'unknown' outside git."""
    try:
        result = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return result.stdout.strip() or "unknown"


def model_provenance(
    data: Mapping[str, Any], training: Mapping[str, Any], shipping: Mapping[str, Any]
) -> dict[str, Any]:
    """The card's `provenance`: data, code revision, date, the params of the weights and of shipping."""
    return {
        "data": dict(data),
        "git_revision": git_revision(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "training": dict(training),
        "shipping": dict(shipping),
    }


def limitations(data_source: str) -> list[str]:
    """What the card warns about (the synthetic warning first when the data was synthetic)."""
    return ([SYNTHETIC_LIMITATION] if data_source == "synthetic" else []) + LIMITATIONS
