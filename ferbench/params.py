"""Reading `params.yaml`: parsed, then validated against the schema (`ferbench.schema`) as a whole,
with errors that name the key, the value and what is allowed."""

from __future__ import annotations

from pathlib import Path

from ferbench.errors import FerbenchError
from ferbench.schema import Params, validate_params
from ferbench.yaml_files import read_yaml

DEFAULT_PARAMS_FILE = Path("params.yaml")


def load_params(path: Path | str = DEFAULT_PARAMS_FILE) -> Params:
    """The whole params file, validated and typed: every stage calls this first, so a bad param stops it
    (one line, exit 2) before any work, and the code after it reads typed sections only."""
    path = Path(path)
    if not path.exists():
        raise FerbenchError(f"{path}: params file not found; run the stage from the project root")
    params = read_yaml(path, "params file")
    if not isinstance(params, dict):
        raise FerbenchError(f"{path}: expected a mapping of sections at the top level")
    return validate_params(params, source=path.name if path == DEFAULT_PARAMS_FILE else str(path))
