"""Every stage's command line: `--help` explains and exits 0 without doing any work."""

import runpy
import sys
from pathlib import Path

import pytest

STAGES = sorted(
    path.stem for path in (Path(__file__).resolve().parent.parent / "stages").glob("*.py") if path.stem != "__init__"
)


def test_every_stage_is_covered():
    assert {
        "download",
        "prepare",
        "embed",
        "feature_extract",
        "finetune",
        "train",
        "latency",
        "deploy",
        "select",
        "report",
    } <= set(STAGES)


@pytest.mark.parametrize("stage", STAGES)
def test_help_prints_usage_and_runs_nothing(stage, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no params.yaml here: a stage that ran would fail
    monkeypatch.setattr(sys, "argv", [f"stages/{stage}.py", "--help"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module(f"stages.{stage}", run_name="__main__")
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert f"usage: python -m stages.{stage}" in out and "DVC stage" in out
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("stage", ["download", "select"])
def test_a_stray_argument_is_a_usage_error(stage, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [f"stages/{stage}.py", "--force"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module(f"stages.{stage}", run_name="__main__")
    assert exit_info.value.code == 2 and "unrecognized arguments: --force" in capsys.readouterr().err
