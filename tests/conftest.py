"""Shared fixtures: small archives built in temporary folders; nothing is downloaded (the helpers they use,
and that tests import, are in tests/support.py)."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ferbench.data.synthetic import write_synthetic_archive
from tests.support import SMALL_COUNTS, untrained_model_folder, write_zip


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


# The modules that take longest under `make test`, longest first (each module's time in one `make test` run).
# pytest-xdist hands whole modules to its two processes in collection order (the Makefile turns off its own
# reordering by test count), so starting the longest first keeps one process from being left with a long module
# at the end.
# The modules with `all_cores` tests come after the first few: at the start the other process is building the
# end-to-end run, which those tests would wait for.
LONGEST_MODULES = (
    "test_pipeline.py",
    "test_latency.py",
    "test_training.py",
    "test_distributed.py",
    "test_inference.py",
    "test_fernets.py",
    "test_pipeline_resume.py",
    "test_presets.py",
    "test_hostile_outputs.py",
    "test_gpu_check.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest modules first (LONGEST_MODULES), then every other module in the usual order."""
    rank = {name: index for index, name in enumerate(LONGEST_MODULES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@contextmanager
def cores_lock(folder: Path, exclusive: bool) -> Iterator[None]:
    """A readers-writer lock over the test processes of one run: shared for an ordinary test, exclusive for an
    `all_cores` one. A process waiting for the exclusive lock holds the turnstile, so the other process cannot
    keep starting new tests ahead of it."""
    with open(folder / "cores.turnstile", "a") as turnstile, open(folder / "cores.lock", "a") as cores:
        fcntl.flock(turnstile, fcntl.LOCK_EX)
        fcntl.flock(cores, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        fcntl.flock(turnstile, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(cores, fcntl.LOCK_UN)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """Under `make test`'s two processes, a test marked `all_cores` (several CPU-heavy processes at once: a
    data-parallel run, a parallel experiment queue) runs while the other process waits between tests. Beside
    a test of the other process, its processes outnumber the cores and its ranks wait on each other at every
    step (the two-process fine-tune took 387 s so, and 146-178 s with the other process waiting, both while every
    test process ran two threads; 52 s alone now). The wait comes before pytest-timeout's clock starts
    (tryfirst), and the fixtures' setup is inside the lock."""
    basetemp = item.config.option.basetemp
    if "PYTEST_XDIST_WORKER" not in os.environ or not basetemp:
        return (yield)
    with cores_lock(Path(basetemp).parent, exclusive=item.get_closest_marker("all_cores") is not None):
        return (yield)


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


@pytest.fixture
def face(tmp_path: Path) -> Path:
    """A 48x48 grayscale PNG of noise: a face as far as --whole-image is concerned."""
    path = tmp_path / "face.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 48), dtype=np.uint8)).save(path)
    return path
