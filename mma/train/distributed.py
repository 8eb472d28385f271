"""Multi-process training under `torchrun`: process group from its environment variables, one device
per process, and the few collectives the loop needs.

Why environment-driven: `torchrun` (single or multi-node) sets RANK, WORLD_SIZE, LOCAL_RANK,
LOCAL_WORLD_SIZE and the rendezvous address; a plain `python`/`mma train` run sees none and stays a single
process with no process group at all.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from mma.runtime import resolve_device


@dataclass(frozen=True)
class Placement:
    """Where this process runs and which share of the work it owns. Rank 0 logs, validates and saves."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup(device: str) -> Placement:
    """Join the process group that `torchrun` describes (if any) and pick this process's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    placement = Placement(
        rank=int(os.environ.get("RANK", "0")),
        world_size=world_size,
        local_rank=local_rank,
        local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", str(world_size))),
        device=resolve_device(device, local_rank),
    )
    if placement.distributed and not dist.is_initialized():
        if placement.device.type == "cuda":
            torch.cuda.set_device(placement.device)
        dist.init_process_group("nccl" if placement.device.type == "cuda" else "gloo")
    return placement


def teardown(placement: Placement) -> None:
    """Leave the group together: a rank that destroys it while another still saves can abort in gloo."""
    if placement.distributed and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def barrier(placement: Placement) -> None:
    if placement.distributed:
        dist.barrier()


def mean(value: torch.Tensor, placement: Placement) -> torch.Tensor:
    """The mean of `value` over all processes (the value itself when single-process)."""
    if placement.distributed:
        value = value.clone()
        dist.all_reduce(value)
        value /= placement.world_size
    return value


def any_process(flag: bool, placement: Placement) -> bool:
    """True on every process when `flag` is true on at least one (so all stop at the same step)."""
    if not placement.distributed:
        return flag
    value = torch.tensor([int(flag)], device=placement.device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())
