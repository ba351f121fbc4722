"""Data-parallel training on the CPU with gloo: the stages as `dvc.yaml` launches them
(`python -m ferbench.training.launch ... stages.<stage> <backbone>`), on synthetic faces, 2 processes
against 1. The killed-and-resumed 2-process `train` (tests/test_pipeline_resume.py) and the DVC queue
(tests/test_pipeline_experiments.py) run through `dvc repro`."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from ferbench.constants import FER2013_CLASSES
from ferbench.training.benchmark import run_finetune
from ferbench.training.distributed import SINGLE, Group, global_batches, rank_share, rank_slice
from ferbench.training.settings import RunSettings, scaled_recipe
from tests.support import PROJECT_ROOT, backbone_spec, recipe, synthetic_prepared, tta
from tests.support import project_params as loaded_params

pytestmark = pytest.mark.slow  # make test-fast leaves these out; make test runs them

EPOCHS = 3
FINETUNE = {"epochs": EPOCHS, "batch_size": 32, "lr": 0.001, "precision": "fp32", "eval_batch_size": 256}


def project_params(nproc: int = 1, nnodes: int = 1, endpoint: str = "localhost:29400") -> dict:
    params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    params["backbones"] = {
        "resnet18": {
            "source": "torchvision",
            "model": "resnet18",
            "pretrained": False,
            "weights": None,
            "input_size": 48,
            "feature_extract": {},
            "finetune": {},
        }
    }
    params["train"]["candidates"] = {"resnet18": {}}
    params["select"]["candidates"] = {"resnet18": "train"}
    params["finetune"].update(FINETUNE)
    params["distributed"].update(nproc_per_node=nproc, nnodes=nnodes, rdzv_endpoint=endpoint)
    return params


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """Enough faces for resnet18 to learn in 3 epochs from scratch."""
    return synthetic_prepared(tmp_path_factory.mktemp("ddp"), 100, 12, seed=5)


@pytest.fixture(scope="module")
def few_faces(tmp_path_factory):
    """For the runs that check mechanics, not learning."""
    return synthetic_prepared(tmp_path_factory.mktemp("ddp-few"), 20, 4, seed=6)


def project(root: Path, prepared: Path, **distributed) -> Path:
    """A folder a stage can run in: params.yaml and data/prepared."""
    (root / "data").mkdir(parents=True)
    (root / "data" / "prepared").symlink_to(prepared)
    (root / "params.yaml").write_text(yaml.safe_dump(project_params(**distributed)))
    return root


def environment() -> dict[str, str]:
    """One thread per process, for torch and its BLAS alike: MKL follows `OMP_NUM_THREADS` only where
    `MKL_NUM_THREADS` is unset, and tests/conftest.py sets it to the test process's share."""
    env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.pop("WORLD_SIZE", None)
    return env


def launch_command(stage: str, nproc: int, nnodes: int = 1, endpoint: str = "localhost:29400") -> list[str]:
    return [
        sys.executable,
        "-m",
        "ferbench.training.launch",
        "--nproc-per-node",
        str(nproc),
        "--nnodes",
        str(nnodes),
        "--rdzv-endpoint",
        endpoint,
        "--timeout",
        "120",
        f"stages.{stage}",
        "resnet18",
    ]


def launch(root: Path, stage: str, nproc: int, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        launch_command(stage, nproc), cwd=root, env=environment(), capture_output=True, text=True, timeout=timeout
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


def test_a_global_batch_is_shared_by_the_ranks_without_overlap():
    order = torch.randperm(70)
    shares = [
        [rank_share(batch, Group(rank, 3)) for batch in global_batches(order, 32, Group(rank, 3))] for rank in range(3)
    ]
    assert [len(batches) for batches in shares] == [3, 3, 3]  # 32 + 32 + 6: every rank takes part in every step
    covered = torch.cat([index for batches in shares for index in batches])
    assert sorted(covered.tolist()) == sorted(order.tolist())
    tiny = global_batches(torch.arange(65), 32, Group(0, 2))
    assert len(tiny) == 2  # the last batch (1 image) is smaller than the world: dropped
    assert [len(batch) for batch in global_batches(torch.arange(65), 32, SINGLE)] == [
        32,
        32,
        1,
    ]  # one process: as before
    blocks = [rank_slice(10, Group(rank, 3)) for rank in range(3)]
    assert [(block.start, block.stop) for block in blocks] == [(0, 4), (4, 8), (8, 10)]


def distributed(batch: str, lr_scaling: str = "none"):
    changes = {"nproc_per_node": 4, "batch": batch, "lr_scaling": lr_scaling}
    return loaded_params().distributed.model_copy(update=changes)


def test_the_global_batch_and_learning_rate_rule():
    config = recipe(epochs=1, batch_size=64, lr=0.001)
    assert scaled_recipe(config, distributed("global"), 4) == config
    per_process = scaled_recipe(config, distributed("per_process", "linear"), 4)
    assert per_process.batch_size == 256 and per_process.lr == pytest.approx(0.004)
    root = scaled_recipe(config, distributed("per_process", "sqrt"), 4)
    assert root.batch_size == 256 and root.lr == pytest.approx(0.002)
    assert scaled_recipe(config, distributed("per_process", "linear"), 1) == config
    assert scaled_recipe(config, None, 1) == config


@pytest.fixture(scope="module")
def one_process_finetune(prepared, tmp_path_factory):
    """The single-process fine-tune that the two-process one is held against, made by its own test below."""
    root = project(tmp_path_factory.mktemp("one"), prepared)
    spec = backbone_spec("resnet18", "torchvision", "resnet18", input_size=48)
    settings = RunSettings(list(FER2013_CLASSES), torch.device("cpu"), 42, prepared, False, tta())
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        return run_finetune(spec, recipe(**FINETUNE), settings)


def test_one_process_finetune_learns(one_process_finetune):
    assert one_process_finetune.processes == 1 and one_process_finetune.test.accuracy > 2 / 7  # chance: 1/7


def test_two_process_finetune_learns_like_one_and_writes_each_output_once(prepared, one_process_finetune, tmp_path):
    root = project(tmp_path / "two", prepared, nproc=2)
    done = launch(root, "finetune", 2)
    assert done.returncode == 0, done.stderr[-3000:]
    details = json.loads((root / "reports/details/finetune/resnet18.json").read_text())
    assert details["processes"] == 2 and details["identical_weights_across_processes"] is True
    curve = pd.read_csv(root / "dvclive/finetune/resnet18/plots/metrics/val/accuracy.tsv", sep="\t")
    assert list(curve["step"]) == list(range(EPOCHS))  # logged once per epoch, by rank 0 only
    assert done.stdout.count("finetune@resnet18: val") == 1  # one summary line, from rank 0
    assert (root / "models/finetune/resnet18.pt").is_file()
    assert details["test"]["accuracy"] > 2 / 7  # chance: 1/7
    assert abs(details["test"]["accuracy"] - one_process_finetune.test.accuracy) < 0.2  # the same kind of model


def test_two_nodes_on_localhost_embed_the_features_of_one_process_in_the_same_order(few_faces, tmp_path):
    """Two "machines" on localhost, one process each: the rendezvous, the split of every split and the
    gather, against the single-process features."""
    single = project(tmp_path / "one", few_faces)
    done = launch(single, "embed", 1)
    assert done.returncode == 0, done.stderr[-3000:]
    endpoint = f"localhost:{free_port()}"
    root = project(tmp_path / "nodes", few_faces, nproc=1, nnodes=2, endpoint=endpoint)
    nodes = []
    for _ in range(2):
        nodes.append(
            subprocess.Popen(
                launch_command("embed", 1, nnodes=2, endpoint=endpoint),
                cwd=root,
                env=environment(),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
        # Both "machines" are localhost, so both try to host the rendezvous store; started in the same instant,
        # the loser's fallback to a client can time out on a loaded CPU. The first starts first, as the machine
        # that runs `dvc repro` does.
        time.sleep(2)
    outputs = [node.communicate(timeout=300) for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], [err[-2000:] for _, err in outputs]
    assert all("run:\n  python -m ferbench.training.launch --nproc-per-node 1 --nnodes 2" in err for _, err in outputs)
    assert sum(out.count("embed@resnet18:") for out, _ in outputs) == 1  # one summary, from rank 0
    features = {}
    for name, folder in (("one", single), ("two", root)):
        with np.load(folder / "data/features/resnet18.npz") as arrays:
            features[name] = {key: arrays[key] for key in arrays.files if key != "metadata"}
    assert features["one"].keys() == features["two"].keys()
    for key, array in features["one"].items():
        assert array.shape == features["two"][key].shape, key
        np.testing.assert_allclose(
            array.astype(np.float32), features["two"][key].astype(np.float32), atol=2e-2, rtol=1e-2
        )


def worker_pids(launcher: int) -> dict[int, int]:
    """The stage processes under a launcher, by their RANK."""
    workers = {}
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
            environ = (status.parent / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        parent = int(next(line.split()[1] for line in text.splitlines() if line.startswith("PPid:")))
        ranks = [entry.split(b"=", 1)[1] for entry in environ if entry.startswith(b"RANK=")]
        if ranks and parent != os.getpid() and _descends_from(int(status.parent.name), launcher):
            workers[int(ranks[0])] = int(status.parent.name)
    return workers


def _descends_from(pid: int, ancestor: int) -> bool:
    while pid > 1:
        if pid == ancestor:
            return True
        try:
            text = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            return False
        pid = int(next(line.split()[1] for line in text.splitlines() if line.startswith("PPid:")))
    return False


def test_a_process_that_dies_fails_the_stage_with_one_line_and_no_hang(few_faces, tmp_path):
    params = project_params(nproc=2)
    params["finetune"]["epochs"] = 200  # long enough to be killed mid-run
    root = project(tmp_path / "dies", few_faces, nproc=2)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    run = subprocess.Popen(
        launch_command("finetune", 2),
        cwd=root,
        env=dict(environment(), TMPDIR=str(scratch)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        curve = root / "dvclive/finetune/resnet18/plots/metrics/val/accuracy.tsv"
        while time.monotonic() < deadline and not curve.is_file():
            time.sleep(0.5)
        assert curve.is_file(), "training did not start"
        os.kill(worker_pids(run.pid)[1], signal.SIGKILL)
        _, err = run.communicate(timeout=60)  # the launcher stops rank 0 too: no hang
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 1
    last = err.strip().splitlines()[-1]
    assert last == (
        "finetune resnet18: error: process rank 1 was killed by signal 9 (its output is above); "
        "the other processes were stopped"
    ), err[-2000:]
    assert not list(scratch.iterdir())  # the ranks' error files went with the launcher's scratch folder


def test_a_sweep_is_a_grid_of_queued_dvc_experiments_with_devices_in_turn(capsys):
    from ferbench.workflow.sweep import main as sweep

    assert sweep(["--devices", "cuda:0,cuda:1", "-S", "train.lr=0.001,0.0003", "-S", "seed=1,2,3", "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 7 and lines[-1] == "sweep: dry run, nothing queued"
    assert lines[0] == "dvc exp run --queue -S device=cuda:0 -S train.lr=0.001 -S seed=1"
    assert lines[5] == "dvc exp run --queue -S device=cuda:1 -S train.lr=0.0003 -S seed=3"
    assert sweep(["-S", "train.lr"]) == 2
    assert "write KEY=VALUE[,VALUE...]" in capsys.readouterr().err
    assert sweep(["-S", "device=cuda:0,cuda:1"]) == 2
    assert "use --devices" in capsys.readouterr().err


def test_the_launcher_explains_itself_and_refuses_zero_processes(capsys):
    from ferbench.training.launch import main as launch_main

    with pytest.raises(SystemExit) as exit_info:
        launch_main(["--help"])
    assert exit_info.value.code == 0 and "usage: python -m ferbench.training.launch" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        launch_main(["--nproc-per-node", "0", "stages.finetune", "resnet18"])
    assert exit_info.value.code == 2 and "at least 1" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (["-S", "train.lr=,"], "an empty value"),
        (["-S", "train.lr=0.1,,0.2"], "an empty value"),
        (["-S", " device=cuda:0"], "use --devices"),
        (["-S", "train lr=0.1"], "is not a params.yaml key"),
        (["-S", "a=" + ",".join(map(str, range(1000))), "-S", "b=" + ",".join(map(str, range(1000)))], "1,000,000"),
    ],
)
def test_a_sweep_that_would_queue_nothing_or_too_much_is_one_line(settings, message, capsys):
    from ferbench.workflow.sweep import main as sweep

    assert sweep([*settings, "--dry-run"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and message in err and len(err.strip().splitlines()) == 1, err[:500]


def deaf_listener() -> socket.socket:
    """A localhost port that accepts connections and never answers (a wrong service, a firewall)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    return listener


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("no second machine", "not all 2 machines joined at {endpoint} within 4 s"),
        ("an endpoint that never answers", "cannot reach the rendezvous at {endpoint} within 4 s"),
    ],
)
def test_the_rendezvous_gives_up_within_its_timeout_in_one_line(case, message, tmp_path):
    listener = deaf_listener() if case == "an endpoint that never answers" else None
    port = listener.getsockname()[1] if listener else free_port()
    endpoint = f"127.0.0.1:{port}"
    command = launch_command("embed", 1, nnodes=2, endpoint=endpoint)
    command[command.index("--timeout") + 1] = "4"
    try:  # the test's own bound: a launcher that waited for torch's defaults (10 minutes) would exceed it
        done = subprocess.run(command, cwd=tmp_path, env=environment(), capture_output=True, text=True, timeout=60)
    finally:
        if listener:
            listener.close()
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr[-2000:]
    assert lines[-1].startswith("launch: error: embed resnet18: ") and message.format(endpoint=endpoint) in lines[-1]
    assert len(lines) == 3 and "Traceback" not in done.stderr, done.stderr[-2000:]  # the join command, then why


def test_one_process_on_cuda_never_starts_nccl_and_cudnn_autotuning_is_cuda_only(monkeypatch):
    """What the CUDA path does differently, checked where a CPU can check it."""
    import torch.distributed as dist

    from ferbench.training.distributed import join_group
    from ferbench.training.settings import tune_for

    monkeypatch.setenv("WORLD_SIZE", "1")
    group, device = join_group(torch.device("cuda"), timeout_s=60)  # what `launch --nproc-per-node 1` gives
    assert group is SINGLE and device == torch.device("cuda") and not dist.is_initialized()
    saved = torch.backends.cudnn.benchmark
    try:
        torch.backends.cudnn.benchmark = False
        tune_for(torch.device("cpu"))
        assert torch.backends.cudnn.benchmark is False
        tune_for(torch.device("cuda"))
        assert torch.backends.cudnn.benchmark is True
    finally:
        torch.backends.cudnn.benchmark = saved
