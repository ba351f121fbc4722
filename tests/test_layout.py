"""The package reads as its architecture: each folder of `ferbench` is a part that imports only the parts
below it (README, "Project layout"), no module imports itself back through others, and serving never
loads what only the pipeline needs (the params schema, training, shipping)."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "ferbench"
GROUND = "ground floor"  # the top-level modules: constants, errors, paths, params schema, provenance, ...
# What each part may import besides itself: always downward.
ALLOWED = {
    GROUND: set(),
    "data": {GROUND},
    "models": {GROUND},
    "evaluation": {GROUND},
    "workflow": {GROUND},
    "serving": {GROUND, "data", "models"},
    "training": {GROUND, "data", "models", "evaluation"},
    "shipping": {GROUND, "data", "models", "evaluation"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def part_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and (PACKAGE / parts[1]).is_dir()) else GROUND


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def project_imports(path: Path) -> set[str]:
    """The ferbench modules one file imports, at any depth of its code (lazy imports count)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        found |= {name for name in names if name in MODULES and name != "ferbench"}
    return found


def test_every_folder_of_the_package_is_a_known_part():
    folders = {path.name for path in PACKAGE.iterdir() if path.is_dir() and (path / "__init__.py").is_file()}
    assert folders == set(ALLOWED) - {GROUND}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_a_module_imports_only_its_own_part_and_the_parts_below(module):
    part = part_of(module)
    upward = sorted(
        name
        for name in project_imports(MODULES[module])
        if part_of(name) != part and part_of(name) not in ALLOWED[part]
    )
    assert not upward, f"{module} ({part}) imports {', '.join(upward)}, which {part} may not depend on"


def test_no_import_cycles():
    graph = {module: project_imports(path) - {module} for module, path in MODULES.items()}
    graph = {module: {name for name in names if MODULES[name].name != "__init__.py"} for module, names in graph.items()}
    state: dict[str, str] = {}
    cycles = []

    def visit(module: str, trail: list[str]) -> None:
        state[module] = "open"
        for name in sorted(graph[module]):
            if state.get(name) == "open":
                cycles.append(" -> ".join([*trail[trail.index(name) :], name]))
            elif name not in state:
                visit(name, [*trail, name])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles: " + "; ".join(cycles)


def test_serving_loads_neither_the_params_schema_nor_the_pipeline():
    code = (
        "import sys; import ferbench.serving.predict, ferbench.serving.app; "
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('ferbench'))))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    modules = loaded.stdout.split()
    assert "ferbench.serving.predict" in modules
    pipeline = [m for m in modules if m == "ferbench.schema" or part_of(m) in ("training", "shipping", "evaluation")]
    assert not pipeline, f"serving loads {', '.join(pipeline)}"


def test_the_training_stages_start_and_draw_without_seaborn_scipys_statistics_or_the_flop_counter(tmp_path):
    """Every stage is a process of its own, and `dvc repro` starts a dozen: seaborn and SciPy's statistics (about
    two seconds) and torch's FLOP counter (Triton, a few tenths) are imported where prepare, deploy, latency and
    the report use them, not by the training stages nor by the confusion matrix each of them draws."""
    code = (
        "import sys; import numpy as np; from pathlib import Path; "
        "import stages.train, stages.finetune, stages.feature_extract, stages.distill; "
        "from ferbench.evaluation.plots import save_confusion_matrix; "
        f"save_confusion_matrix(np.eye(7, dtype=int), list('abcdefg'), Path({str(tmp_path / 'c.png')!r}), 't'); "
        "print(' '.join(sorted(sys.modules)))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    modules = set(loaded.stdout.split())
    assert "stages.train" in modules and "ferbench.evaluation.metrics" in modules
    assert (tmp_path / "c.png").stat().st_size > 10_000
    assert not {"seaborn", "scipy.stats", "torch.utils.flop_counter"} & modules
