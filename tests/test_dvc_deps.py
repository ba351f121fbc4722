"""DVC knows everything a stage runs: every project module a stage's script imports (transitively) is
among the stage's `deps` (a directory dep covers what is under it). Otherwise an edit there leaves stale
results that `dvc status` calls up to date."""

import ast
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("ferbench", "stages")


def module_file(name: str) -> Path | None:
    for candidate in (ROOT / (name.replace(".", "/") + ".py"), ROOT / name.replace(".", "/") / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: Path) -> set[str]:
    """Project modules imported by one file, at any depth of its code (lazy imports count)."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            names.add(base)
            names |= {f"{base}.{alias.name}" for alias in node.names}
    return {name for name in names if name.split(".")[0] in PACKAGES and module_file(name)}


def import_closure(script: Path) -> set[Path]:
    """The files whose code runs when `script` runs: its imports, theirs, and their packages' __init__."""
    seen: set[Path] = set()
    pending = [script]
    while pending:
        path = pending.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in imported_modules(path):
            parts = name.split(".")
            inits = [ROOT / Path(*parts[:i]) / "__init__.py" for i in range(1, len(parts))]
            pending += [init for init in inits if init.is_file()]
            pending.append(module_file(name))
    return seen


def has_code(path: Path) -> bool:
    body = ast.parse(path.read_text()).body
    return any(not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)) for node in body)


def stage_scripts(cmd: str) -> list[Path]:
    """The files a stage's command runs: its `-m` module and, under `ferbench.training.launch`, the stage module."""
    words = cmd.split()
    modules = [words[words.index("-m") + 1]] + [word for word in words if word.startswith("stages.")]
    return [ROOT / (module.replace(".", "/") + ".py") for module in dict.fromkeys(modules)]


STAGES = {
    name: stage.get("do", stage) for name, stage in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].items()
}


@pytest.mark.parametrize("name", list(STAGES))
def test_every_imported_project_module_is_a_declared_dependency(name):
    stage = STAGES[name]
    scripts = stage_scripts(stage["cmd"])
    deps = [dep if isinstance(dep, str) else next(iter(dep)) for dep in stage["deps"]]

    def declared(path: Path) -> bool:
        relative = path.relative_to(ROOT).as_posix()
        return any(relative == dep or relative.startswith(dep.rstrip("/") + "/") for dep in deps)

    missing = sorted(
        path.relative_to(ROOT).as_posix()
        for path in set().union(*(import_closure(script) for script in scripts))
        if not declared(path) and (path.name != "__init__.py" or has_code(path))
    )
    assert not missing, f"dvc.yaml: stage {name} runs code it does not list in deps: {', '.join(missing)}"
