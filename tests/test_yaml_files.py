"""Hostile YAML in params.yaml, an overrides file or a `--set` value: one line naming the file and exit
2, within the resource limits the subprocess runs under (4 GiB of address space, 60 s of
CPU), and nothing written."""

import os
import resource
import subprocess
import sys

import pytest

from tests.support import PROJECT_ROOT

ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
    f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
    for i in range(9)
)
CASES = {
    "alias bomb": (ALIAS_BOMB.encode(), "anchors and aliases are not allowed"),
    "duplicate key": (b"train:\n  lr: 0.1\n  lr: 0.2\n", "line 3, column 3: duplicate key 'lr'"),
    "syntax error": (b"train: [1, 2\nseed: 3\n", "not valid YAML (line"),
    "not UTF-8": (b"train: {lr: 0.1}\n# caf\xe9\n", "not UTF-8 text"),
    "20,000-deep nesting": (b"a: " + b"[" * 20_000 + b"]" * 20_000 + b"\n", "nested deeper than 32 levels"),
    "too big": (b"# " + b"x" * (2 << 20) + b"\n", "too large"),
}


def limited() -> None:
    """Run under a memory and CPU bound: a YAML bomb must fail well inside it, never exhaust it."""
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
    resource.setrlimit(resource.RLIMIT_CPU, (60, 60))


def run(args, cwd):
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=limited,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
    )


def assert_one_line(result, expected, name):
    err = result.stderr.strip()
    assert result.returncode == 2, (result.returncode, err[-500:])
    assert expected in err and name in err, err[-500:]
    assert "Traceback" not in err and len(err.splitlines()) == 1, err[-500:]


@pytest.mark.parametrize("case", list(CASES))
def test_a_hostile_overrides_file_is_one_line(case, tmp_path):
    content, expected = CASES[case]
    (tmp_path / "bad.yaml").write_bytes(content)
    result = run(
        ["-m", "ferbench.workflow.workspace", str(tmp_path / "ws"), "--overrides", "bad.yaml", "--no-repro"], tmp_path
    )
    assert_one_line(result, expected, "bad.yaml")
    assert not (tmp_path / "ws").exists()


@pytest.mark.parametrize("case", [case for case in CASES if case != "too big"])
def test_a_hostile_params_yaml_stops_a_stage_with_one_line(case, tmp_path):
    content, expected = CASES[case]
    (tmp_path / "params.yaml").write_bytes(content)
    result = run(["-m", "stages.download"], tmp_path)
    assert_one_line(result, expected, "params.yaml")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["params.yaml"]


@pytest.mark.parametrize(
    ("special", "expected"),
    [("fifo", "not a regular file"), ("/dev/zero", "not a regular file"), ("missing.yaml", "not found")],
)
def test_special_files_are_refused_before_they_are_opened(special, expected, tmp_path):
    if special == "fifo":
        os.mkfifo(tmp_path / "fifo")  # opening it for reading would wait for a writer forever
    result = run(
        ["-m", "ferbench.workflow.workspace", str(tmp_path / "ws"), "--overrides", special, "--no-repro"], tmp_path
    )
    assert_one_line(result, expected, special)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("train.augment=&a [*a]", "anchors and aliases are not allowed"), ("train.epochs={a: 1, a: 2}", "duplicate")],
)
def test_a_hostile_set_value_is_one_line(value, expected, tmp_path):
    result = run(["-m", "ferbench.workflow.workspace", str(tmp_path / "ws"), "--set", value, "--no-repro"], tmp_path)
    assert_one_line(result, expected, "--set")
