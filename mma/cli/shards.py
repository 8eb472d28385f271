"""Batch commands under `torchrun`: each process takes its share of the files, and one merged report.

Why a module of its own: `mma upscale` and `mma eval` split their work the same way. The process group is
the one `mma.train.distributed` joins from torchrun's environment variables (a plain run has none, and every
helper here is then a no-op). What is decided once, such as which outputs exist, is decided by rank 0 and
broadcast, so no process plans against files another one is already writing; a message that concerns the
whole command is printed once, by rank 0; a message about one file is printed by the process that handled it,
which is the only one that did.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

import typer

from mma.errors import MMAError
from mma.runtime import THREADS_ENV, parse_threads, usable_cpus
from mma.train.distributed import Placement, setup, teardown

T = TypeVar("T")


@contextlib.contextmanager
def processes(device: str) -> Iterator[Placement]:
    """This process's place among the ones torchrun started (alone outside torchrun), and its device.

    The group is left together when the command ends normally or on a coordinated exit (`typer.Exit`, or an
    `MMAError` that every process saw); any other exception is a bug, and torchrun stops the other processes.
    """
    placement = setup(device)
    try:
        yield placement
    except (typer.Exit, MMAError):
        teardown(placement)
        raise
    else:
        teardown(placement)


def share(items: Sequence[T], placement: Placement) -> list[T]:
    """This process's items: every `world_size`-th from its rank on, so each item has exactly one owner and
    long runs of large files are spread rather than given to one process."""
    return list(items[placement.rank :: placement.world_size])


def gather(value: T, placement: Placement) -> list[T]:
    """`value` from every process, in rank order, on every process (so all agree on the exit status)."""
    if not placement.distributed:
        return [value]
    import torch.distributed as dist

    values: list[T | None] = [None] * placement.world_size
    dist.all_gather_object(values, value)
    return values  # type: ignore[return-value]


def on_main(step: Callable[[], T], placement: Placement) -> T:
    """Run `step` on rank 0 only and hand its result to every process.

    An `MMAError` from `step` is raised again on rank 0 (printed once by the command) and becomes a silent
    exit 1 on the others, so all stop together instead of waiting for a broadcast that never comes.
    """
    if not placement.distributed:
        return step()
    import torch.distributed as dist

    box: list[object] = [None]
    error: MMAError | None = None
    if placement.main:
        try:
            box[0] = ("ok", step())
        except MMAError as exc:
            error = exc
            box[0] = ("error", None)
    dist.broadcast_object_list(box, src=0)
    kind, result = box[0]  # type: ignore[misc]
    if error is not None:
        raise error
    if kind == "error":
        raise typer.Exit(1)
    return result  # type: ignore[no-any-return]


def together(step: Callable[[], T], placement: Placement) -> T:
    """Run `step` on every process (loading the model, say); if it fails anywhere, every process stops and
    rank 0 prints each different message once instead of N copies of the same line."""
    if not placement.distributed:
        return step()
    try:
        result, message = step(), None
    except MMAError as exc:
        result, message = None, str(exc)
    messages = gather(message, placement)
    if not any(messages):
        return result  # type: ignore[return-value]
    if placement.main:
        for text in dict.fromkeys(m for m in messages if m):
            typer.echo(f"error: {text}", err=True)
    raise typer.Exit(1)


def threads_for(threads: str | None, placement: Placement) -> str | int | None:
    """The CPU threads of one process: as given, else $MMA_NUM_THREADS, else an equal share of this machine's
    CPUs among its processes.

    Why not the usual policy: every process would see the same idle CPUs at the same moment and take them all,
    and torchrun's own default (OMP_NUM_THREADS=1 for every process) leaves most of a large machine idle.
    """
    if parse_threads(threads) or parse_threads(os.environ.get(THREADS_ENV)) or placement.local_world_size < 2:
        return threads
    if placement.device.type != "cpu":
        return threads
    return max(1, usable_cpus() // placement.local_world_size)
