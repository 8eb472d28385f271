"""The `numba` backend (formerly called `cpu`): the numba kernels of `mma.ops._cpu_kernels` behind a torch autograd Function.

Everything (softplus(delta + bias), the recurrence, the C contraction, the D skip, the SiLU(z) gate
and all their gradients) happens inside the kernels, which read every input in place whatever its
strides; torch only allocates outputs and sums the kernels' per-worker partial gradients. Forward
keeps just the states every CHUNK steps for backward, which recomputes the rest.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import cache

import numpy as np
import torch
from torch import Tensor

from mma.ops.protocol import ScanArgs
from mma.runtime import absent_reason, assumed_absent


def unavailable_reason() -> str | None:
    """None when numba imports and the kernels load (and $MMA_ASSUME_ABSENT does not name numba), else why not."""
    if assumed_absent("numba"):
        return absent_reason("numba")
    return _import_failure()


@cache
def _import_failure() -> str | None:
    """None when the kernels load, else why not. numba is a dependency of mma-sr, but an install can still
    be broken (a numba built for another numpy or llvmlite): then this says so and the dispatcher falls back
    to the torch backend instead of failing on import. numba itself is imported here, on first use."""
    try:
        from mma.ops import _cpu_kernels  # noqa: F401  (imports numba; compiles lazily, on first call)
    except Exception as exc:  # noqa: BLE001  (an incompatible numba raises more than ImportError)
        return f"numba does not work here ({exc}); reinstall it with `pip install --force-reinstall numba`"
    return None


def selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    *,
    reverse: bool = False,
) -> Tensor:
    """Same contract as `mma.ops.selective_scan`, on CPU tensors; float64 stays float64, else float32."""
    inputs = (u, delta, A, B, C, D, z, delta_bias)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in inputs):
        return _SelectiveScan.apply(*inputs, delta_softplus, reverse)
    out, _ = _forward(_Inputs(*inputs, delta_softplus, reverse, bf16_in_place=True), keep_states=False)
    return out.to(u.dtype)


def selective_scan_pair(first: ScanArgs, second: ScanArgs) -> tuple[Tensor, Tensor]:
    """Two scans at once: their channel blocks share the threads (see `mma.ops.selective_scan_pair`). With
    autograd they run in turn, as `selective_scan`."""
    scans = (first, second)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for s in scans for t in s[:8]):
        return selective_scan(*first[:9], reverse=first.reverse), selective_scan(
            *second[:9], reverse=second.reverse
        )
    inputs = [_Inputs(*s[:8], s.delta_softplus, s.reverse, bf16_in_place=True) for s in scans]
    planned = [_forward_part(x, keep_states=False, sharing=len(scans)) for x in inputs]
    _run_parts([part for part, _, _ in planned])
    return planned[0][1].to(first.u.dtype), planned[1][1].to(second.u.dtype)


class _Inputs:
    """The scan's inputs in one compute dtype, as the flat buffers + strides the kernels take.

    `bf16_in_place` (the forward kernel only): bfloat16 sequences go to the kernel as int16 views of their
    bits, which it widens to float32 as it loads them, instead of float32 copies made here first.
    """

    def __init__(
        self,
        u,
        delta,
        A,
        B,
        C,
        D,
        z,
        delta_bias,
        delta_softplus: bool,
        reverse: bool,
        *,
        bf16_in_place: bool = False,
    ) -> None:
        dtype = (
            torch.float64
            if torch.float64 in (u.dtype, delta.dtype, A.dtype, B.dtype, C.dtype)
            else torch.float32
        )
        self.dtype = dtype
        self.shape = (u.shape[0], u.shape[1], u.shape[2], A.shape[1])  # batch, Dch, L, N
        self.has_gate = z is not None
        zeros = u.new_zeros(u.shape[1], dtype=dtype)

        def sequence(t: Tensor) -> tuple[np.ndarray, tuple[int, int, int]]:
            if bf16_in_place and t.dtype == torch.bfloat16 and dtype == torch.float32:
                return _flat(t.view(torch.int16))
            return _flat(t.to(dtype))

        self.args = (
            *sequence(u),
            *sequence(delta),
            *(sequence(z) if z is not None else (zeros.numpy(), (0, 0, 0))),
            *sequence(B),
            *sequence(C),
            A.detach().to(dtype).t().contiguous().numpy(),
            _vector(D, dtype, zeros),
            _vector(delta_bias, dtype, zeros),
            z is not None,
            delta_softplus,
            reverse,
        )


def _flat(t: Tensor) -> tuple[np.ndarray, tuple[int, int, int]]:
    """A (batch, X, L) CPU tensor as a flat numpy view of its storage plus its element strides."""
    span = 1 + sum((size - 1) * stride for size, stride in zip(t.shape, t.stride())) if t.numel() else 1
    return torch.as_strided(t.detach(), (span,), (1,), t.storage_offset()).numpy(), tuple(t.stride())


def _vector(t: Tensor | None, dtype: torch.dtype, zeros: Tensor) -> np.ndarray:
    return t.detach().to(dtype).contiguous().numpy() if t is not None else zeros.numpy()


class _SelectiveScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse):
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias)
        ctx.flags = (delta_softplus, reverse)
        out, ctx.states = _forward(
            _Inputs(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse), keep_states=True
        )
        return out.to(u.dtype)

    @staticmethod
    def backward(ctx, grad):
        saved = ctx.saved_tensors  # u, delta, A, B, C, D, z, delta_bias
        grads = _backward(_Inputs(*saved, *ctx.flags), ctx.states, grad)
        return (*(g.to(t.dtype) if t is not None else None for g, t in zip(grads, saved)), None, None)


def _forward(x: _Inputs, keep_states: bool) -> tuple[Tensor, Tensor]:
    """Scan output (batch, Dch, L) in channels-last memory, and the checkpointed states (or empty)."""
    part, out, states = _forward_part(x, keep_states)
    _run_parts([part])
    return out, states


def _forward_part(x: _Inputs, keep_states: bool, sharing: int = 1) -> tuple[_Part, Tensor, Tensor]:
    """The forward kernel's part for `_run_parts`, with the output and states it will fill; `sharing`
    scans run at once and share the threads."""
    from mma.ops import _cpu_kernels as k

    batch, dch, length, nstate = x.shape
    out = torch.empty(batch, length, dch, dtype=x.dtype)
    chunks = (length + k.CHUNK - 1) // k.CHUNK if keep_states else 0
    states = torch.empty(batch, chunks, nstate, dch, dtype=x.dtype)
    groups = _channel_groups(batch * sharing, dch, k.BLOCK)
    part = (k.scan_forward, batch * groups, (groups, *x.args, out.numpy(), states.numpy()))
    return part, out.transpose(1, 2), states


def _channel_groups(batch: int, dch: int, block: int) -> int:
    """Runs of adjacent channel blocks per batch item: one unless the batch alone leaves threads idle. A
    run scans its blocks step by step together (one read of each row), so fewer, longer runs are faster as
    long as every thread has one."""
    return max(1, min(-(-dch // block), -(-torch.get_num_threads() // batch)))


def _backward(x: _Inputs, states: Tensor, grad: Tensor) -> tuple[Tensor, ...]:
    """Gradients of (u, delta, A, B, C, D, z, delta_bias) from the kernel and its partial sums."""
    from mma.ops import _cpu_kernels as k

    batch, dch, length, nstate = x.shape
    nblocks = (dch + k.BLOCK - 1) // k.BLOCK
    parts = min(nblocks, -(-torch.get_num_threads() // batch))  # enough jobs for every thread even at batch 1
    du, ddelta = (torch.empty(batch, length, dch, dtype=x.dtype) for _ in range(2))
    dz = torch.empty((batch, length, dch) if x.has_gate else (1, 1, 1), dtype=x.dtype)
    dB_parts, dC_parts = (torch.empty(parts, batch, length, nstate, dtype=x.dtype) for _ in range(2))
    dA_parts = torch.empty(batch, nstate, dch, dtype=x.dtype)
    dD_parts, dbias_parts = (torch.empty(batch, dch, dtype=x.dtype) for _ in range(2))
    _run_parts(
        [
            (
                k.scan_backward,
                batch * parts,
                (
                    *x.args,
                    states.numpy(),
                    *_flat(grad.to(x.dtype)),
                    du.numpy(),
                    ddelta.numpy(),
                    dz.numpy(),
                    dB_parts.numpy(),
                    dC_parts.numpy(),
                    dA_parts.numpy(),
                    dD_parts.numpy(),
                    dbias_parts.numpy(),
                ),
            )
        ]
    )
    return (
        du.transpose(1, 2),
        ddelta.transpose(1, 2),
        dA_parts.sum(0).t(),
        dB_parts.sum(0).transpose(1, 2),
        dC_parts.sum(0).transpose(1, 2),
        dD_parts.sum(0),
        dz.transpose(1, 2),
        dbias_parts.sum(0),
    )


_pools: dict[int, ThreadPoolExecutor] = {}  # helper threads by count; emptied in a forked child
_pools_lock = threading.Lock()


_Part = tuple[Callable[..., None], int, tuple]  # (kernel, jobs, args): kernel(first, end, *args) per share


def _run_parts(parts: list[_Part]) -> None:
    """kernel(first, end, *args) over jobs 0..jobs-1 of every (kernel, jobs, args) part, the parts' jobs laid
    end to end and split evenly over torch.get_num_threads() threads.

    The kernels release the GIL, so plain Python threads run them in parallel; the calling thread takes
    the first share. Thread pools do not survive fork(), so a forked child starts its own.
    """
    total = sum(jobs for _, jobs, _ in parts)
    workers = max(1, min(torch.get_num_threads(), total))
    bounds = [total * i // workers for i in range(workers + 1)]
    if workers == 1:
        _run_share(parts, 0, total)
        return
    with _pools_lock:
        pool = _pools.get(workers - 1)
        if pool is None:
            pool = _pools[workers - 1] = ThreadPoolExecutor(workers - 1, thread_name_prefix="mma-scan")
    futures = [pool.submit(_run_share, parts, bounds[i], bounds[i + 1]) for i in range(1, workers)]
    _run_share(parts, bounds[0], bounds[1])
    for future in futures:
        future.result()


def _run_share(parts: list[_Part], first: int, end: int) -> None:
    """Jobs first..end-1 of the parts laid end to end, each part's through its own kernel."""
    offset = 0
    for kernel, jobs, args in parts:
        low, high = max(first, offset), min(end, offset + jobs)
        if low < high:
            kernel(low - offset, high - offset, *args)
        offset += jobs


os.register_at_fork(after_in_child=_pools.clear)
