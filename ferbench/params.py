"""Reading `params.yaml`: parsed, then validated against the schema (`ferbench.schema`) as a whole,
with errors that name the key, the value and what is allowed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ferbench.errors import FerbenchError
from ferbench.schema import validate_params
from ferbench.yaml_files import read_yaml

DEFAULT_PARAMS_FILE = Path("params.yaml")


def load_params(path: Path | str = DEFAULT_PARAMS_FILE) -> dict[str, Any]:
    """Load the whole params file as a mapping, validated: every stage calls this first, so a bad
    param stops it (one line, exit 2) before any work."""
    path = Path(path)
    if not path.exists():
        raise FerbenchError(f"{path}: params file not found; run the stage from the project root")
    params = read_yaml(path, "params file")
    if not isinstance(params, dict):
        raise FerbenchError(f"{path}: expected a mapping of sections at the top level")
    validate_params(params, source=path.name if path == DEFAULT_PARAMS_FILE else str(path))
    return params


def get(params: dict[str, Any], dotted_key: str, expected: type | tuple[type, ...] | None = None) -> Any:
    """Return `params[a][b]...` for `dotted_key` 'a.b...', failing with the key's name."""
    node: Any = params
    for part in dotted_key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise FerbenchError(f"params.yaml: missing key '{dotted_key}'; see the README's params table")
        node = node[part]
    if expected is not None and not isinstance(node, expected):
        names = expected.__name__ if isinstance(expected, type) else " or ".join(t.__name__ for t in expected)
        raise FerbenchError(f"params.yaml: '{dotted_key}' must be a {names}, got {node!r}")
    return node


def choice(params: dict[str, Any], dotted_key: str, allowed: tuple[str, ...]) -> str:
    """Return a string param that must be one of `allowed`."""
    value = get(params, dotted_key)
    if value not in allowed:
        raise FerbenchError(f"params.yaml: '{dotted_key}' is {value!r}; use one of: {', '.join(allowed)}")
    return value
