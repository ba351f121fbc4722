"""Shared fixtures: small archives built in temporary folders; nothing is downloaded (the helpers they use,
and that tests import, are in tests/support.py)."""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ferbench.data.synthetic import write_synthetic_archive
from ferbench.workflow.workspace import commit_all, create_workspace
from tests.support import SMALL_COUNTS, copy_workspace, dvc, e2e_overrides, untrained_model_folder, write_zip


def pytest_configure(config: pytest.Config) -> None:
    """Each test process (`make test` runs two, pytest-xdist) and every process it starts (`dvc repro`'s stages,
    the data-parallel launcher) compute on their share of the CPU cores: two processes of two threads each on
    two cores spend most of their time waiting for each other (a training test ran 3x slower beside another).
    Torch, NumPy's BLAS (loaded before this hook, so limited through threadpoolctl) and OpenCV alike.
    pytest-xdist's controller runs no test and sets no share: its test processes inherit its environment, and a
    whole-machine share set there would be theirs too (each then ran two threads beside the other's two).
    No DVC command the tests start, `dvc init` in a new workspace included, starts DVC's usage-report process
    (another Python process importing DVC, about 35 a run, each leaving a file in the temporary folder)."""
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    worker = getattr(config, "workerinput", None)
    if worker is None and getattr(config.option, "numprocesses", None):
        return
    import cv2
    import torch
    from threadpoolctl import threadpool_limits

    share = str(max(1, (os.cpu_count() or 1) // int(worker["workercount"] if worker else 1)))
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OPENCV_FOR_THREADS_NUM"):
        os.environ.setdefault(variable, share)
    threads = int(os.environ["OMP_NUM_THREADS"])
    torch.set_num_threads(threads)
    threadpool_limits(threads)
    cv2.setNumThreads(threads)


SLOW_MODULE = "pytestmark = pytest.mark.slow"  # the line that marks every test of a module slow


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Under `-m "not slow"` (make test-fast), a module whose every test is slow is not even imported: their
    imports (FastAPI, Streamlit, ONNX, the training stack) would cost seconds for tests that never run."""
    module = collection_path.name.startswith("test_") and collection_path.suffix == ".py"
    if config.getoption("markexpr") != "not slow" or not module:
        return None
    return SLOW_MODULE in collection_path.read_text() or None


# The order in which `make test` starts the longest modules (each module's time in one `make test` run), then
# every other module. pytest-xdist hands whole modules to its two processes in collection order (the Makefile
# turns off its own reordering by test count) as each runs out of work.
# - test_pipeline.py first: its first test waits for the end-to-end first run (`first_run`, about 5 minutes),
#   which that process builds while the other one works through the modules after it.
# - The modules copying the first run (test_pipeline_changes.py, test_pipeline_experiments.py) after about
#   5 minutes of other modules, so that the other process does not wait for the build.
# - The long ones before the short ones, so that neither process is left with a long module at the end.
LONGEST_MODULES = (
    "test_pipeline.py",  # 280 s to build the first run, then 30 s of tests
    "test_latency.py",  # 100 s
    "test_distributed.py",  # 145 s
    "test_fernets.py",  # 75 s
    "test_pipeline_changes.py",  # 90 s
    "test_pipeline_experiments.py",  # 100 s
    "test_inference.py",  # 70 s
    "test_training.py",  # 65 s
    "test_pipeline_resume.py",  # 60 s
    "test_presets.py",  # 35 s
    "test_api.py",
    "test_app.py",
    "test_hostile_outputs.py",
    "test_browser.py",
    "test_video.py",
    "test_gpu_check.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest modules first (LONGEST_MODULES), then every other module in the usual order."""
    rank = {name: index for index, name in enumerate(LONGEST_MODULES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture(autouse=True)
def same_start_for_every_test() -> Iterator[None]:
    """Every test starts from the same global state, whichever ran before it in its process (`make test`
    spreads the modules over two processes): torch's thread count as the process began (a latency test sets
    it to 1) and every random generator seeded."""
    import random

    import torch

    threads = torch.get_num_threads()
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def zip_factory(tmp_path: Path) -> Callable[..., Path]:
    counter = iter(range(10**6))

    def make(members: Mapping[str, bytes]) -> Path:
        return write_zip(tmp_path / f"archive_{next(counter)}.zip", members)

    return make


@pytest.fixture(scope="session")
def synthetic_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("synthetic") / "fer2013.zip"
    write_synthetic_archive(path, SMALL_COUNTS, seed=7)
    return path


@pytest.fixture(scope="session")
def untrained_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One model folder (resnet18 at 48 px, random weights, ONNX fp32), exported once and shared by the tests
    that only read it: a test that edits a model folder copies it or makes its own."""
    return untrained_model_folder(tmp_path_factory.mktemp("untrained") / "model")


def run_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The temporary folder of this pytest run, which both of `make test`'s processes share."""
    basetemp = tmp_path_factory.getbasetemp()
    return basetemp.parent if "PYTEST_XDIST_WORKER" in os.environ else basetemp


@pytest.fixture(scope="session")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The end-to-end first run: `dvc repro` of the demo pipeline (made quicker) in a new workspace, committed.
    It takes about 5 minutes, so it is made once per run of the tests: by the test process that asks for it first,
    under a lock that the other one waits on, so that the modules copying it can run in either process. A failed
    build fails the other process's tests at once, without building again. Nothing runs DVC in it, as the
    other process may be copying it meanwhile: a test takes `own_workspace`, or its module's own copy."""
    root = run_root(tmp_path_factory)
    folder, project = root / "e2e", root / "e2e" / "project"
    with open(root / "e2e.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (folder / "failed.txt").is_file():
            pytest.fail(
                f"the end-to-end first run failed in the other test process:\n{(folder / 'failed.txt').read_text()}"
            )
        if not (folder / "built").is_file():
            shutil.rmtree(folder, ignore_errors=True)
            try:
                create_workspace(project, e2e_overrides())
                dvc(project, "repro")
                commit_all(project, "first run")
            except BaseException as error:
                folder.mkdir(parents=True, exist_ok=True)
                (folder / "failed.txt").write_text(str(error)[-4000:])
                raise
            (folder / "built").touch()
    return project


@pytest.fixture
def own_workspace(first_run: Path, tmp_path: Path) -> Path:
    """A copy of the first run that a test may change: its own git history, DVC cache and local remote."""
    return copy_workspace(first_run, tmp_path / "project")


@pytest.fixture
def face(tmp_path: Path) -> Path:
    """A 48x48 grayscale PNG of noise: a face as far as --whole-image is concerned."""
    path = tmp_path / "face.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 48), dtype=np.uint8)).save(path)
    return path
