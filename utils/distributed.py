"""Data-parallel training over the processes that torchrun starts (README, "Several GPUs").

    torchrun --standalone --nproc_per_node=K train.py with ...

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE; without them everything here is a no-op and
training runs in one process. With them, each step's `batch_size` episodes are split over the K
ranks: rank r takes every K-th episode of the step's global batch, which it builds itself
(episodes depend only on (seed, epoch, index)); DistributedDataParallel averages the gradients;
only rank 0 writes (tensorboard, checkpoints, validation, the Sacred record). Backends: nccl on
CUDA (one GPU per rank: cuda:<local rank>), gloo on CPU.

BatchNorm: the encoder's BatchNorm layers normalise with the statistics of the images on their
own rank (the supports and queries of its B / K episodes). A K-rank step therefore equals one
process that runs the K shares of the global batch one after another and averages their
gradients, not one forward pass over all B episodes (whose statistics would mix the episodes of
every rank). Synchronised BatchNorm would remove the difference, but torch has it only on GPUs
and it was not tested here. DDP broadcasts rank 0's running statistics before each forward pass,
so the checkpoint holds those of rank 0's episodes.
"""
from __future__ import annotations

import atexit
import contextlib
import datetime
import os
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

# rank 0 validates alone while the others wait at the next gradient exchange; validation of the
# paper's configuration takes minutes, not an hour
PROCESS_GROUP_TIMEOUT = datetime.timedelta(hours=1)


@dataclass(frozen=True)
class Ranks:
    """This process's place among the training processes (one process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def share_of(self, batch_size: int) -> int:
        """Episodes per step on each rank; the global batch must split evenly."""
        if batch_size % self.world_size:
            raise ValueError(f"batch_size={batch_size} does not split over {self.world_size} processes: "
                             f"use a multiple of --nproc_per_node")
        return batch_size // self.world_size


def launched_ranks() -> Ranks:
    """The ranks torchrun set in the environment (Ranks() without torchrun)."""
    return Ranks(rank=int(os.environ.get("RANK", 0)), world_size=int(os.environ.get("WORLD_SIZE", 1)),
                 local_rank=int(os.environ.get("LOCAL_RANK", 0)))


def join_process_group(ranks: Ranks, device: torch.device) -> torch.device:
    """Join the other ranks (nccl on CUDA, gloo on CPU; left at exit); this rank's device."""
    if not ranks.distributed:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", ranks.local_rank)
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=PROCESS_GROUP_TIMEOUT)
    atexit.register(dist.destroy_process_group)
    return device


def data_parallel(model: torch.nn.Module, ranks: Ranks, device: torch.device) -> torch.nn.Module:
    """The model wrapped in DistributedDataParallel (the model itself in one process).

    Call, train and step the wrapper; validate and save the model itself (rank 0 alone must not
    call the wrapper, whose forward pass talks to the other ranks)."""
    if not ranks.distributed:
        return model
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def mean_over_ranks(values: dict[str, torch.Tensor], ranks: Ranks) -> dict[str, float]:
    """{name: scalar} -> {name: its mean over the ranks} (one exchange), as plain floats."""
    stacked = torch.stack([value.detach().float() for value in values.values()])
    if ranks.distributed:
        dist.all_reduce(stacked)
        stacked /= ranks.world_size
    return dict(zip(values, stacked.tolist()))


def any_over_ranks(flag: torch.Tensor, ranks: Ranks) -> bool:
    """Whether a scalar bool tensor is True on any rank (one exchange; the tensor's device must be
    the process group's: this rank's GPU under nccl)."""
    value = flag.detach().to(torch.float32)
    if ranks.distributed:
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


@contextlib.contextmanager
def main_rank_first(ranks: Ranks) -> Iterator[None]:
    """Rank 0 runs the block first (e.g. writing derived files), the other ranks after it."""
    if ranks.distributed and not ranks.is_main:
        dist.barrier()
    yield
    if ranks.distributed and ranks.is_main:
        dist.barrier()
