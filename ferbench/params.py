"""Reading `params.yaml` (and the overrides files merged into it): parsed, then validated against the schema
(`ferbench.schema`) as a whole, with errors that name the key, the value and what is allowed."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

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


def merge_overrides(base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Merge `overrides` into `base` in place: mappings merge key by key, null removes a key.

    Not OmegaConf's merge: there a null sets the key to None and keeps it, and the presets remove the
    study's backbones with null (tests/test_params_schema.py shows the difference)."""
    for key, value in overrides.items():
        if value is None:
            base.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(base.get(key), Mapping):
            merge_overrides(base[key], value)
        else:
            base[key] = value
    return base


def load_overrides(path: Path) -> dict[str, Any]:
    """Read an overrides file such as params-demo.yaml."""
    if not path.exists():
        raise FerbenchError(f"{path}: overrides file not found")
    loaded = read_yaml(path, "overrides file")
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise FerbenchError(f"{path}: expected a mapping of params to override")
    return loaded


def load_params_with(path: Path | str, *overrides: Path) -> Params:
    """`path` (a params.yaml) with overrides files merged in, in order, as `ferbench-workspace` merges them,
    validated."""
    params = read_yaml(Path(path), "params file")
    for override in overrides:
        merge_overrides(params, load_overrides(override))
    return validate_params(params, source=f"{path} with {', '.join(str(o) for o in overrides)} merged in")
