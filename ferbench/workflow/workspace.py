"""Project copies with overridden params: the offline demo, and the end-to-end tests.

`make demo` must not rewrite the user's `params.yaml` (its defaults are the real benchmark),
so it runs a copy of the project in `demo/`, a git + DVC repository of its own whose
`params.yaml` is the project's with `params-demo.yaml` merged in. Inside it, `dvc repro`,
`dvc params diff`, `dvc metrics diff` and `dvc plots show` work as in any DVC project.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from ferbench.errors import FerbenchError
from ferbench.params import load_overrides, merge_overrides
from ferbench.paths import PROJECT_ROOT
from ferbench.provenance import SOURCE_REVISION_FILE, code_revision
from ferbench.schema import validate_params
from ferbench.yaml_files import parse_yaml, read_yaml

PROJECT_FILES: tuple[str, ...] = ("ferbench", "stages", "vega", "dvc.yaml", "params.yaml", ".dvcignore")
WORKSPACE_MARKER = ".ferbench-workspace"  # written into every copy: only such a folder is ever updated
LOCAL_OVERRIDES = PROJECT_ROOT / "params-local.yaml"  # git-ignored: this machine's data and weight files
PATH_PARAMS: tuple[tuple[str, ...], ...] = (("data", "archive"),)  # relative paths, rebased onto the copy
BACKBONE_PATH_KEY = "weights"  # backbones.<name>.weights: a local file or folder, rebased like the paths above


def _rebase_paths(params: dict[str, Any], source_root: Path) -> None:
    """Relative local paths in params point into the source project: make them absolute for the copy."""
    backbones = params.get("backbones")
    backbone_keys = (
        [("backbones", name, BACKBONE_PATH_KEY) for name in backbones] if isinstance(backbones, Mapping) else []
    )
    for keys in [*PATH_PARAMS, *backbone_keys]:
        node: Any = params
        for key in keys[:-1]:
            node = node.get(key, {}) if isinstance(node, Mapping) else {}
        value = node.get(keys[-1]) if isinstance(node, Mapping) else None
        if isinstance(value, str) and value:
            node[keys[-1]] = os.fspath((source_root / Path(value).expanduser()).resolve())


def _represent_float(representer: Any, value: float) -> Any:
    """Floats with a dot in the mantissa (2.0e-05, not 2e-05): YAML 1.1 readers such as PyYAML,
    which the stages and DVC use, read `2e-05` as a string."""
    text = repr(value)
    if "e" in text and "." not in text.split("e")[0]:
        mantissa, exponent = text.split("e")
        text = f"{mantissa}.0e{exponent}"
    return representer.represent_scalar("tag:yaml.org,2002:float", text)


def _yaml() -> YAML:
    yaml = YAML()
    yaml.width = 120
    yaml.representer.add_representer(float, _represent_float)
    return yaml


def merged_params(source_root: Path, overrides: Mapping[str, Any]) -> Any:
    """`source_root/params.yaml` with `overrides` merged in, comments kept, checked against the schema
    (so a bad override fails before anything is written)."""
    read_yaml(source_root / "params.yaml", "params file")  # bounded, no aliases or duplicate keys: then keep comments
    params = _yaml().load((source_root / "params.yaml").read_text())
    merge_overrides(params, overrides)
    _rebase_paths(params, source_root)
    validate_params(json.loads(json.dumps(params)), source="params.yaml with the overrides merged in")
    return params


def write_params(source_root: Path, destination: Path, overrides: Mapping[str, Any]) -> None:
    """Write `source_root/params.yaml` merged with `overrides` to `destination`, comments kept."""
    _dump(merged_params(source_root, overrides), destination)


def _dump(params: Any, destination: Path) -> None:
    with destination.open("w") as handle:
        _yaml().dump(params, handle)


def python_env() -> dict[str, str]:
    """The environment with this interpreter's folder first on PATH, so `python` in dvc.yaml is ours."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def _git(workspace: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=workspace, check=True, capture_output=True)


def remote_folder(workspace: Path) -> Path:
    """The workspace's local DVC remote: `<workspace>-remote` beside it (demo/ -> demo-remote/)."""
    workspace = workspace.resolve()
    return workspace.parent / f"{workspace.name}-remote"


MODEL_ARTIFACT = "emotion-classifier"  # dvc.yaml: artifacts


def register_selected_model(workspace: Path) -> str | None:
    """Register the committed selected model as a new version of the registry artifact (a GTO git tag,
    `emotion-classifier@v0.0.N`, DVC's model-registry convention), so `dvc artifacts get` finds it;
    None when this commit already has a version."""
    from gto.api import register
    from gto.exceptions import VersionExistsForCommit

    try:
        tag = register(repo=str(workspace), name=MODEL_ARTIFACT, ref="HEAD")
    except VersionExistsForCommit:
        return None
    return getattr(tag, "version", None) or str(tag)


def is_workspace(folder: Path) -> bool:
    """Whether `folder` is a copy this command made: its marker, or (made before the marker existed) the
    copied package, dvc.yaml and its own git and DVC repositories."""
    if (folder / WORKSPACE_MARKER).is_file():
        return True
    return all(
        check(folder / name)
        for check, name in (
            (Path.is_file, "ferbench/workflow/workspace.py"),
            (Path.is_file, "dvc.yaml"),
            (Path.is_dir, ".dvc"),
            (Path.is_dir, ".git"),
        )
    )


def check_destination(destination: Path, source_root: Path = PROJECT_ROOT, update: bool = False) -> None:
    """Refuse, before anything is written, a destination whose update would destroy what this command did
    not create: the project itself or a folder above it, a folder inside what it copies (which would copy
    into itself), a file, or an existing non-empty folder that is not one of its workspaces. One of its
    workspaces is refreshed only when asked (`update`): its params.yaml and code are replaced."""
    target, root = destination.expanduser().resolve(), source_root.resolve()
    fix = "choose a new or empty folder, such as demo/ or runs/NAME"
    if target == root or root.is_relative_to(target):
        raise FerbenchError(f"{destination}: is this project or a folder above it; {fix}")
    for name in (*PROJECT_FILES, ".git", ".dvc"):
        if target.is_relative_to(root / name):
            raise FerbenchError(f"{destination}: is inside the project's {name}, which the workspace copies; {fix}")
    if target.exists() and not target.is_dir():
        raise FerbenchError(f"{destination}: is a file, not a folder; {fix}")
    if target.is_dir() and any(target.iterdir()) and not is_workspace(target):
        raise FerbenchError(
            f"{destination}: exists, is not empty and was not made by `ferbench-workspace` "
            f"(no {WORKSPACE_MARKER}); nothing was changed: {fix}"
        )
    if target.is_dir() and any(target.iterdir()) and not update:
        raise FerbenchError(
            f"{destination}: is a workspace made earlier; pass --update to refresh its code and params.yaml "
            "(its data, history and your other files are kept), or choose a new folder"
        )


def create_workspace(
    destination: Path, overrides: Mapping[str, Any], source_root: Path = PROJECT_ROOT, update: bool = False
) -> Path:
    """Copy the pipeline (code, dvc.yaml) into `destination` with overridden params.

    A fresh destination becomes its own git and DVC repository; an existing one (a workspace this
    command made, with `update`) keeps its data, cache, history and the user's other files, so the next
    `dvc repro` reruns only what the update changed. Anything else is refused before a byte is written.
    """
    destination = destination.expanduser()
    check_destination(destination, source_root, update)
    params = merged_params(source_root, overrides)  # fails on a bad override before anything is copied
    destination.mkdir(parents=True, exist_ok=True)
    (destination / WORKSPACE_MARKER).write_text("made by ferbench-workspace, which updates only such folders\n")
    for name in PROJECT_FILES:
        source = source_root / name
        target = destination / name
        if source.is_dir():
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif source.is_file():
            shutil.copy2(source, target)
    _dump(params, destination / "params.yaml")
    # the copy's own git history is not the code's: model cards name this project's revision instead
    (destination / "ferbench" / SOURCE_REVISION_FILE).write_text(code_revision() + "\n")
    if not (destination / ".git").exists():
        _git(destination, "init", "--quiet")
        _git(destination, "config", "user.email", "demo@ferbench.invalid")
        _git(destination, "config", "user.name", "ferbench demo")
    if not (destination / ".dvc").exists():
        subprocess.run([sys.executable, "-m", "dvc", "init", "--quiet"], cwd=destination, check=True)
        subprocess.run([sys.executable, "-m", "dvc", "config", "core.autostage", "true"], cwd=destination, check=True)
    # A local DVC remote beside the copy, so `dvc push`, `dvc pull` and `dvc artifacts get` work offline
    remote = ["remote", "add", "--default", "--force", "local", str(remote_folder(destination))]
    subprocess.run([sys.executable, "-m", "dvc", *remote], cwd=destination, check=True, capture_output=True)
    _ignore(destination / ".gitignore", ("__pycache__/", "/.resume/"))  # training state: large, local
    if not (destination / ".git" / "refs" / "heads").exists() or not any(
        (destination / ".git" / "refs" / "heads").iterdir()
    ):
        commit_all(destination, "workspace created")  # DVCLive and `dvc params diff` need a first commit
    return destination


def _ignore(gitignore: Path, patterns: tuple[str, ...]) -> None:
    """Add the patterns the workspace needs to its .gitignore, keeping the user's own lines."""
    lines = gitignore.read_text().splitlines() if gitignore.is_file() else []
    missing = [pattern for pattern in patterns if pattern not in lines]
    if missing:
        gitignore.write_text("\n".join([*lines, *missing]) + "\n")


def commit_all(workspace: Path, message: str) -> None:
    """Commit the workspace's current state, so the next change shows in `dvc params/metrics diff`."""
    _git(workspace, "add", "--all")
    status = subprocess.run(["git", "status", "--porcelain"], cwd=workspace, capture_output=True, text=True, check=True)
    if status.stdout.strip():
        _git(workspace, "commit", "--quiet", "-m", message)


def local_path(*keys: str) -> Path | None:
    """A path param from params-local.yaml (e.g. "data", "archive"), taken from the project root, when the
    file and the key exist: how tests and benchmark scripts find this machine's FER-2013 zip and weights."""
    if not LOCAL_OVERRIDES.is_file():
        return None
    node: Any = load_overrides(LOCAL_OVERRIDES)
    for key in keys:
        node = node.get(key) if isinstance(node, Mapping) else None
    return (PROJECT_ROOT / Path(node).expanduser()).resolve() if isinstance(node, str) and node else None


def parse_assignment(text: str) -> dict[str, Any]:
    """`data.archive=~/fer2013.zip` as the overrides mapping {"data": {"archive": "~/fer2013.zip"}}; the value
    is read as YAML (numbers, booleans, null, lists), so `--set train.epochs=5` gives an int."""
    key, sep, raw = text.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(parts):
        raise FerbenchError(f"--set {text!r}: expected KEY=VALUE with a dotted params key, e.g. data.source=archive")
    value = parse_yaml(raw, f"--set {text!r}") if raw.strip() else ""
    nested: dict[str, Any] = {parts[-1]: value}
    for part in reversed(parts[:-1]):
        nested = {part: nested}
    return nested


def collect_overrides(files: list[Path], assignments: list[str]) -> dict[str, Any]:
    """The files merged in order, then the `--set` assignments: a later one wins key by key."""
    merged: dict[str, Any] = {}
    for path in files:
        merge_overrides(merged, load_overrides(path))
    for text in assignments:
        _merge_assignment(merged, parse_assignment(text))
    return merged


def _merge_assignment(base: dict[str, Any], assignment: Mapping[str, Any]) -> None:
    """Like `merge_overrides`, but a null value is kept (removed later, when merged into params.yaml)."""
    for key, value in assignment.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), Mapping):
            _merge_assignment(base[key], value)
        else:
            base[key] = value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ferbench-workspace",
        description=(
            "Create or update a copy of the project whose params.yaml is this project's with overrides merged "
            "in, then run `dvc repro` there. `make demo` runs it with params-demo.yaml into demo/; `make real` "
            "with params-cpu.yaml (and params-local.yaml when present) into runs/real-cpu/."
        ),
        epilog=(
            "Relative paths in data.archive and backbones.<name>.weights are taken from the project root. "
            "Example, offline on real data: --overrides params-cpu.yaml --set data.source=archive "
            "--set data.archive=~/Downloads/fer2013.zip"
        ),
    )
    parser.add_argument("destination", type=Path, help="folder of the copy: a new or empty one, or (--update) its own")
    parser.add_argument(
        "--update",
        action="store_true",
        help="refresh a workspace this command made: its code and params.yaml are replaced, its data, DVC cache, "
        "git history and your other files are kept (`make demo` and `make real` pass it)",
    )
    parser.add_argument(
        "--overrides",
        type=Path,
        action="append",
        metavar="FILE",
        help="YAML file of params to override; repeat to merge several in order (default: params-demo.yaml)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        dest="assignments",
        help="one params key to override after the files, e.g. data.archive=fer2013.zip (repeatable)",
    )
    parser.add_argument("--no-repro", action="store_true", help="only create or update the copy")
    args = parser.parse_args(argv)
    files = args.overrides or [PROJECT_ROOT / "params-demo.yaml"]
    try:
        workspace = create_workspace(args.destination, collect_overrides(files, args.assignments), update=args.update)
    except FerbenchError as exc:
        print(f"workspace: error: {exc}", file=sys.stderr)
        return 2
    merged = ", ".join([path.name for path in files] + [f"--set {text}" for text in args.assignments])
    print(f"workspace: {workspace} is ready (params: {merged} merged into params.yaml)")
    if args.no_repro:
        return 0
    result = subprocess.run([sys.executable, "-m", "dvc", "repro"], cwd=workspace, env=python_env())
    if result.returncode != 0:
        return result.returncode
    commit_all(workspace, "dvc repro")
    # the selected model into the local remote and the registry, so `dvc artifacts get` fetches it at once
    subprocess.run([sys.executable, "-m", "dvc", "push", "--quiet", "select"], cwd=workspace, env=python_env())
    version = register_selected_model(workspace)
    if version:
        print(f"workspace: registered {MODEL_ARTIFACT} {version} (`dvc artifacts get . {MODEL_ARTIFACT}`)")
    print(f"workspace: done. Explore it: cd {workspace} && dvc metrics show && dvc plots show")
    return 0


if __name__ == "__main__":
    sys.exit(main())
