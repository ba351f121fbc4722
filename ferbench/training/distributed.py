"""Data-parallel training across processes and machines with torch.distributed.

`ferbench.training.launch` starts one process per device (through torch's elastic launcher, the engine
behind `torchrun`); each process calls `join_group`, which joins the process group that the launcher's
environment describes (NCCL on CUDA, gloo on the CPU). A single process (the default) never
touches torch.distributed: `join_group` returns `SINGLE` and every helper here is then a no-op.

Each rank holds the whole split on its device and trains on its share of every global batch
(the epoch's random order is the same on every rank, each takes every world-size-th index of a
batch); gradients are averaged by DistributedDataParallel. Only rank 0 writes files.
"""

from __future__ import annotations

import ctypes
import hashlib
import math
import os
import signal
import sys
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from ferbench.errors import FerbenchError


@dataclass(frozen=True)
class Group:
    """This process's place in the process group (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = Group()


def join_group(device: torch.device, timeout_s: int) -> tuple[Group, torch.device]:
    """Join the process group the launcher's environment (RANK, WORLD_SIZE, LOCAL_RANK) describes, on
    this process's device (cuda:LOCAL_RANK on CUDA); without that environment, the single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return SINGLE, device
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    _die_with_launcher()
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise FerbenchError(
                f"distributed: local rank {local_rank} has no GPU (this node has {torch.cuda.device_count()}); "
                "set distributed.nproc_per_node to at most the GPU count"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    return Group(rank, world_size), device


def _die_with_launcher() -> None:
    """The launcher starts each process in a session of its own; should the launcher be killed
    outright (SIGKILL, no chance to stop them), its processes die with it instead of training on."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:  # the launcher was gone before the line above
        os._exit(1)


PR_SET_PDEATHSIG = 1


def leave_group(group: Group) -> None:
    if group.enabled and dist.is_initialized():
        dist.destroy_process_group()


def rank_share(index: torch.Tensor, group: Group) -> torch.Tensor:
    """This rank's part of a global batch: every world-size-th index, starting at its rank."""
    return index[group.rank :: group.world_size] if group.enabled else index


def epoch_order(
    count: int, seed: int, epoch: int, device: torch.device, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """The same epoch order on every rank, from a generator seeded by the seed and the epoch: a
    permutation, or `count` draws with replacement by `weights` (the class-balanced sampler)."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    if weights is None:
        order = torch.randperm(count, generator=generator)
    else:
        order = torch.multinomial(weights.cpu(), count, replacement=True, generator=generator)
    return order.to(device)


def global_batches(order: torch.Tensor, batch_size: int, group: Group) -> list[torch.Tensor]:
    """The epoch's global batches, each split across ranks (`rank_share`); a last batch smaller than
    the world size is dropped, so that every rank takes part in every step."""
    batches = list(order.split(batch_size))
    if group.enabled and batches and len(batches[-1]) < group.world_size:
        batches.pop()
    return batches


def wrap(model: nn.Module, group: Group, sync_batchnorm: bool) -> nn.Module:
    """DistributedDataParallel around the model (BatchNorm synced on CUDA when asked)."""
    if not group.enabled:
        return model
    device = next(model.parameters()).device
    if sync_batchnorm and device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)


def all_sum(tensor: torch.Tensor, group: Group) -> torch.Tensor:
    """The sum over ranks (a copy; the tensor itself when not distributed)."""
    if not group.enabled:
        return tensor
    total = tensor.clone()
    dist.all_reduce(total)
    return total


def broadcast(value: Any, group: Group) -> Any:
    """Rank 0's value on every rank (any picklable object)."""
    if not group.enabled:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def sync_buffers(model: nn.Module, group: Group) -> None:
    """Rank 0's buffers (BatchNorm running statistics) on every rank. DDP broadcasts them before each
    forward, but each rank's last forward then updates them from its own share of the batch; synced
    before every evaluation, all ranks evaluate (and schedule on) the same model."""
    if not group.enabled:
        return
    for buffer in model.buffers():
        dist.broadcast(buffer.data, src=0)


def weights_digest(model: nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def identical_across_ranks(model: nn.Module, group: Group) -> bool:
    """Whether every rank ends with the same weights (what data-parallel training must guarantee)."""
    if not group.enabled:
        return True
    digests: list[Any] = [None] * group.world_size
    dist.all_gather_object(digests, weights_digest(model))
    return len(set(digests)) == 1


def gather_rows(rows: torch.Tensor, group: Group) -> torch.Tensor:
    """Every rank's rows concatenated in rank order (rows may differ in count between ranks)."""
    if not group.enabled:
        return rows
    counts: list[Any] = [None] * group.world_size
    dist.all_gather_object(counts, rows.shape[0])
    width = max(counts)
    padded = torch.zeros((width, *rows.shape[1:]), dtype=rows.dtype, device=rows.device)
    padded[: rows.shape[0]] = rows
    parts = [torch.empty_like(padded) for _ in range(group.world_size)]
    dist.all_gather(parts, padded)
    return torch.cat([part[:count] for part, count in zip(parts, counts, strict=True)])


def rank_slice(count: int, group: Group) -> slice:
    """This rank's contiguous block of `count` items (the blocks in rank order cover them all)."""
    if not group.enabled:
        return slice(0, count)
    block = math.ceil(count / group.world_size)
    return slice(min(count, group.rank * block), min(count, (group.rank + 1) * block))
