"""`ferbench-workspace` never destroys what it did not create: destinations that are the
project, above it, inside what it copies, a file, or someone else's folder are refused with one line
and exit 2 before anything is written; its own workspaces update in place and keep the user's files."""

import os
from pathlib import Path

import pytest

from ferbench.workflow import workspace
from ferbench.workflow.workspace import PROJECT_ROOT, WORKSPACE_MARKER, parse_assignment


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under `folder` (not .venv or caches) with its size and modification time."""
    skip = {".venv", "__pycache__", ".pytest_cache", ".ruff_cache", "runs", "demo", "demo-remote", ".git"}
    files = {}
    for path, folders, names in os.walk(folder):
        folders[:] = [name for name in folders if name not in skip]
        for name in names:
            stat = (Path(path) / name).stat()
            files[str(Path(path) / name)] = (stat.st_size, stat.st_mtime_ns)
    return files


def foreign_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "mine"
    (folder / "stages").mkdir(parents=True)
    (folder / "stages" / "notes.txt").write_text("my notes")
    (folder / "params.yaml").write_text("mine: 1\n")
    (folder / ".gitignore").write_text("secret.env\n")
    (folder / "secret.env").write_text("TOKEN=1")
    return folder


REFUSED = {
    "the project": (lambda tmp: PROJECT_ROOT, "is this project or a folder above it"),
    "above the project": (lambda tmp: PROJECT_ROOT.parent, "is this project or a folder above it"),
    "inside the copied package": (lambda tmp: PROJECT_ROOT / "stages" / "sub", "inside the project's stages"),
    "inside .git": (lambda tmp: PROJECT_ROOT / ".git" / "ws", "inside the project's .git"),
    "a file": (lambda tmp: (tmp / "file.txt", (tmp / "file.txt").write_text("x"))[0], "is a file"),
    "someone else's folder": (foreign_folder, "was not made by `ferbench-workspace`"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_a_destination_it_did_not_make_is_refused_and_nothing_changes(case, tmp_path, capsys):
    make, message = REFUSED[case]
    destination = make(tmp_path)
    watched = destination if destination.is_dir() and not PROJECT_ROOT.is_relative_to(destination) else PROJECT_ROOT
    before = snapshot(watched) if watched.is_dir() else {}
    project_before = snapshot(PROJECT_ROOT / "ferbench")
    assert workspace.main([str(destination), "--no-repro"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert (snapshot(watched) if watched.is_dir() else {}) == before
    assert snapshot(PROJECT_ROOT / "ferbench") == project_before
    assert not (PROJECT_ROOT / "stages" / "sub").exists() and not (PROJECT_ROOT / ".git" / "ws").exists()


def test_its_own_workspace_updates_in_place_only_when_asked_and_keeps_the_users_files(tmp_path, capsys):
    destination = tmp_path / "ws"
    assert workspace.main([str(destination), "--no-repro"]) == 0
    assert (destination / WORKSPACE_MARKER).is_file() and (
        destination / "ferbench" / "workflow" / "workspace.py"
    ).is_file()
    (destination / "my-notes.md").write_text("keep me")
    (destination / ".gitignore").write_text((destination / ".gitignore").read_text() + "secret.env\n")
    (destination / "secret.env").write_text("TOKEN=1")
    params = (destination / "params.yaml").read_text()
    assert workspace.main([str(destination), "--no-repro", "--set", "train.epochs=2"]) == 2  # not without --update
    assert "pass --update" in capsys.readouterr().err and (destination / "params.yaml").read_text() == params
    assert workspace.main([str(destination), "--update", "--no-repro", "--set", "train.epochs=2"]) == 0
    assert (destination / "my-notes.md").read_text() == "keep me"
    ignored = (destination / ".gitignore").read_text().splitlines()
    assert "secret.env" in ignored and "/.resume/" in ignored
    workspace.commit_all(destination, "update")
    committed = workspace_files(destination)
    assert "my-notes.md" in committed and "secret.env" not in committed


def test_an_empty_folder_becomes_a_workspace(tmp_path):
    (tmp_path / "empty").mkdir()
    assert workspace.main([str(tmp_path / "empty"), "--no-repro"]) == 0
    assert (tmp_path / "empty" / WORKSPACE_MARKER).is_file()


def workspace_files(folder: Path) -> set[str]:
    import subprocess

    listed = subprocess.run(["git", "ls-files"], cwd=folder, capture_output=True, text=True, check=True)
    return set(listed.stdout.splitlines())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("train.epochs=5", {"train": {"epochs": 5}}),
        ("data.archive=~/fer2013.zip", {"data": {"archive": "~/fer2013.zip"}}),
        ("select.latency_budget_ms=null", {"select": {"latency_budget_ms": None}}),
        ("train.augment={shift: 0.1}", {"train": {"augment": {"shift": 0.1}}}),
    ],
)
def test_set_reads_a_dotted_key_and_a_yaml_value(text, expected):
    assert parse_assignment(text) == expected


@pytest.mark.parametrize("text", ["train.epochs", "=5", "train..epochs=5", "train.epochs=[1"])
def test_a_bad_set_is_one_line_and_exit_2(text, tmp_path, capsys):
    assert workspace.main([str(tmp_path / "ws"), "--no-repro", "--set", text]) == 2
    err = capsys.readouterr().err
    assert "--set" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "ws").exists()


def test_overrides_merge_in_order_then_set(tmp_path):
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text("train: {epochs: 3, lr: 0.01}\n")
    second.write_text("train: {epochs: 4}\n")
    merged = workspace.collect_overrides([first, second], ["train.lr=0.02"])
    assert merged == {"train": {"epochs": 4, "lr": 0.02}}
