"""The README and docs/ as a stranger reads them on a fresh clone: every relative link and image
resolves to a file git tracks, every `make` target they name exists, and no committed file names a
path outside the repository or speaks of how the project was made."""

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
MAKE = re.compile(r"(?:^|`|\$ )make ([a-z][a-z-]*)", re.M)
OUTSIDE = ("../" + "shared", "/" + "tmp/", "/" + "work/")  # spelled in parts so this file does not match itself
WORDS = re.compile(r"\b(this session|the session|landed|the issue|the seed)\b", re.I)


def tracked() -> set[str]:
    result = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
    return set(result.stdout.splitlines())


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


@pytest.fixture(scope="module")
def files() -> set[str]:
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    return tracked()


@pytest.mark.parametrize("document", documents(), ids=lambda path: str(path.relative_to(ROOT)))
def test_every_relative_link_resolves_to_a_tracked_file(document, files):
    folders = {str(Path(name).parent) for name in files} | {"."}
    for target in LINK.findall(document.read_text()):
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue
        path = (document.parent / target.split("#")[0]).resolve().relative_to(ROOT)
        assert str(path) in files or str(path) in folders, f"{document.name}: link to {target} ({path}) not in git"


def test_every_make_target_named_in_the_docs_exists():
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][a-z-]*):", makefile, re.M))
    named = {target for document in documents() for target in MAKE.findall(document.read_text())}
    assert named, "the README names no make target"
    assert named <= targets, f"make targets named but missing from the Makefile: {sorted(named - targets)}"


def test_no_committed_file_names_a_path_outside_the_repository(files):
    offenders = []
    for name in sorted(files):
        path = ROOT / name
        if not path.is_file() or path.stat().st_size > 2_000_000:
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        offenders += [f"{name}: {marker}" for marker in OUTSIDE if marker in text]
    assert not offenders, offenders


def test_the_docs_speak_to_users():
    for document in documents():
        found = WORDS.findall(document.read_text())
        assert not found, f"{document.relative_to(ROOT)}: {sorted(set(found))}"


def test_the_readme_is_a_newcomers_page():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 260, len(lines)
