"""Reading YAML that a person wrote (params.yaml, overrides files, `--set` values) as untrusted input:
bounded in size and depth, with no aliases (a few hundred bytes of nested aliases expand to gigabytes)
and no duplicate keys (YAML would silently keep the last), and every problem one line naming the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ferbench.errors import FerbenchError
from ferbench.files import regular_file

MAX_YAML_BYTES = 1 << 20  # params files are a few KB; anything near a MiB is not a params file
MAX_YAML_DEPTH = 32  # params nest 4-5 levels deep


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses aliases, nesting beyond MAX_YAML_DEPTH and duplicate keys."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.MarkedYAMLError(
                problem="an alias (*name): anchors and aliases are not allowed", problem_mark=mark
            )
        if self._depth >= MAX_YAML_DEPTH:
            mark = self.peek_event().start_mark
            raise yaml.MarkedYAMLError(problem=f"nested deeper than {MAX_YAML_DEPTH} levels", problem_mark=mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, list | dict):  # unhashable: let PyYAML give its own error
                continue
            if key in seen:
                raise yaml.MarkedYAMLError(problem=f"duplicate key {key!r}", problem_mark=key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _one_line(exc: yaml.YAMLError) -> str:
    """PyYAML's several-line message as one: the problem and where."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        return f"{where}{exc.problem}"
    return " ".join(str(exc).split())[:200]


def parse_yaml(text: str, source: str) -> Any:
    """Parse YAML text (no aliases, bounded depth, no duplicate keys); errors name `source`."""
    try:
        return yaml.load(text, Loader=_BoundedLoader)
    except yaml.YAMLError as exc:
        raise FerbenchError(f"{source}: not valid YAML ({_one_line(exc)})") from exc
    except RecursionError as exc:
        raise FerbenchError(f"{source}: nested too deeply to be a params file") from exc


def read_yaml(path: Path, what: str = "YAML file") -> Any:
    """Read a YAML file a person wrote: a regular file (never a FIFO or a device, which would hang or
    never end), at most MAX_YAML_BYTES, UTF-8, then `parse_yaml`."""
    info = regular_file(path, what)
    if info.st_size > MAX_YAML_BYTES:
        raise FerbenchError(f"{path}: too large for a {what} ({info.st_size:,} bytes; at most {MAX_YAML_BYTES:,})")
    with open(path, "rb") as handle:
        data = handle.read(MAX_YAML_BYTES + 1)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FerbenchError(f"{path}: not UTF-8 text (byte {exc.start}); save the {what} as UTF-8") from exc
    return parse_yaml(text, str(path))
