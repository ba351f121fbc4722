"""The download stage: Kaggle with a mocked client, the no-credentials message, local copies."""

import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from ferbench.data import kaggle
from ferbench.data.download import acquire_dataset
from ferbench.errors import FerbenchError
from ferbench.workflow.workspace import create_workspace, python_env
from tests.support import PROJECT_ROOT, data_section, minimal_members, write_zip


class FakeKaggleApi:
    """Stands in for `KaggleApi`: 'downloads' by copying a local zip, like the real client names it."""

    def __init__(self, source):
        self.source = source
        self.calls = []

    def dataset_download_files(self, dataset, path=None, force=False, quiet=True, unzip=False):
        self.calls.append({"dataset": dataset, "unzip": unzip, "quiet": quiet})
        shutil.copyfile(self.source, os.path.join(path, dataset.split("/")[1] + ".zip"))


def test_kaggle_source_uses_the_client_and_checks_the_zip(tmp_path, monkeypatch):
    fake = FakeKaggleApi(write_zip(tmp_path / "served.zip", minimal_members(1)))
    monkeypatch.setattr(kaggle, "make_client", lambda: fake)
    destination = tmp_path / "data" / "raw" / "fer2013.zip"
    acquire_dataset(data_section(source="kaggle", kaggle_dataset="msambare/fer2013"), destination, 0)
    assert fake.calls == [{"dataset": "msambare/fer2013", "unzip": False, "quiet": False}]
    with zipfile.ZipFile(destination) as archive:
        assert sorted(archive.namelist()) == sorted(minimal_members(1))
    assert sorted(p.name for p in destination.parent.iterdir()) == ["fer2013.zip"]


def test_kaggle_download_failure_names_the_offline_option(tmp_path, monkeypatch):
    class Failing(FakeKaggleApi):
        def dataset_download_files(self, *args, **kwargs):
            raise ConnectionError("network unreachable")

    monkeypatch.setattr(kaggle, "make_client", lambda: Failing(None))
    with pytest.raises(FerbenchError, match="network unreachable.*data.source: archive"):
        acquire_dataset(data_section(source="kaggle", kaggle_dataset="msambare/fer2013"), tmp_path / "fer2013.zip", 0)
    with pytest.raises(FerbenchError, match="owner/name"):
        acquire_dataset(data_section(source="kaggle", kaggle_dataset="fer2013"), tmp_path / "fer2013.zip", 0)


def _without_credentials(home):
    env = {k: v for k, v in python_env().items() if not k.startswith("KAGGLE_")}
    env["HOME"] = str(home)
    return env


def test_no_credentials_is_one_clear_message(tmp_path):
    workspace = create_workspace(tmp_path / "project", {"data": {"source": "kaggle"}})
    result = subprocess.run(
        [sys.executable, "-m", "stages.download"],
        cwd=workspace,
        env=_without_credentials(tmp_path / "home"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    message = result.stderr.strip().splitlines()
    assert len(message) == 1
    for way_out in ("KAGGLE_API_TOKEN", "kaggle.json", "data.source: archive", "synthetic"):
        assert way_out in message[0]
    assert not (workspace / "data" / "raw" / "fer2013.zip").exists()


def test_stage_reports_bad_params_without_traceback(tmp_path):
    workspace = create_workspace(tmp_path / "project", {})
    params = workspace / "params.yaml"
    params.write_text(params.read_text().replace("source: kaggle", "source: floppy", 1))
    result = subprocess.run(
        [sys.executable, "-m", "stages.download"], cwd=workspace, env=python_env(), capture_output=True, text=True
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "download: error: params.yaml: 'data.source' is 'floppy'; use one of: kaggle, archive, synthetic"
    )


def test_project_params_default_to_the_seed_protocol():
    from ferbench.params import load_params

    params = load_params(PROJECT_ROOT / "params.yaml")
    assert params.data.source == "kaggle"
    assert params.data.kaggle_dataset == "msambare/fer2013"
    assert params.data.val_fraction == 0.125
