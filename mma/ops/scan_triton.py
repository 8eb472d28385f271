"""The `triton` backend: our fused Triton scans behind a torch autograd Function.

It is the fast GPU scan where mamba-ssm is not installed: Triton ships with CUDA builds of torch, so it
needs no compiler and no extra package. The kernels do the recurrence and the C contraction (and their
gradients) without building per-token (batch, D, L, N) tensors; softplus(delta + delta_bias), the D skip
and the SiLU(z) gate are elementwise and stay in torch, whose autograd differentiates them.

Two kernel families, chosen per call by `choose_method`:
- `sequential` (`mma.ops._triton_kernels`): one program per (batch item, 16 channels) walks all L tokens.
  Forward keeps every state when gradients are needed (batch x L x D x N values: 0.2 GB per scan for a
  batch of 16 48x48 MMA-T patches), so backward needs no recomputation.
- `chunked` (`mma.ops._triton_chunked`): the sequence cut into chunks scanned in parallel, so that one
  long sequence still fills the GPU; forward keeps one state per chunk and backward recomputes the rest.
"""

from __future__ import annotations

import os
from functools import cache

import torch
from torch import Tensor

from mma.ops.scan_torch import effective_delta, skip_and_gate
from mma.runtime import absent_reason, assumed_absent

# Channels per program and warps per program. Each program walks L steps one after another, so the
# time is latency, not arithmetic: small blocks give more programs to run side by side.
BLOCK_D = 16
NUM_WARPS = 1

# The chunked kernels' rule (first guesses, to be tuned on a GPU with benchmarks/gpu_check.py, which times
# both kernels): the sequential walk is kept for short sequences (under 512 steps it takes under 0.25 ms
# at the 0.48 us a step measured on an H200, little for three launches to win back), and where it already
# has enough programs to fill the GPU: about 8 one-warp programs on each of an H200's 132 multiprocessors.
CHUNKED_MIN_LENGTH = 512
SEQUENTIAL_MIN_PROGRAMS = 1024
METHODS = ("sequential", "chunked")
METHOD_ENV_VAR = "MMA_TRITON_METHOD"  # "sequential" or "chunked" for every call; unset or "auto": the rule


def unavailable_reason() -> str | None:
    """None when the backend can run here (a CUDA device and an importable triton, which $MMA_ASSUME_ABSENT
    does not name), else why not."""
    if assumed_absent("triton"):
        return absent_reason("triton")
    return _import_failure()


@cache
def _import_failure() -> str | None:
    if not torch.cuda.is_available():
        return "no CUDA device is available to PyTorch (it needs an NVIDIA GPU and a CUDA build of torch)"
    try:
        import triton  # noqa: F401
    except Exception as exc:  # noqa: BLE001  (a broken install raises more than ImportError)
        return f"triton does not import ({exc}); it comes with CUDA builds of torch, or `pip install triton`"
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
    method: str | None = None,
) -> Tensor:
    """Same contract as `mma.ops.selective_scan`; float64 stays float64, other dtypes compute in float32.

    `method` ("sequential" / "chunked") picks the kernels; by default `choose_method` does, by shape."""
    if method is None:
        method = choose_method(*u.shape)
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    compute = (
        torch.float64 if torch.float64 in (u.dtype, delta.dtype, A.dtype, B.dtype, C.dtype) else torch.float32
    )
    delta = effective_delta(delta, delta_bias, delta_softplus, compute)
    if torch.is_grad_enabled() and any(t.requires_grad for t in (u, delta, A, B, C)):
        y = _SelectiveScan.apply(u, delta, A, B, C, reverse, method)
    elif method == "chunked":
        y, _ = _chunked().forward(u, delta, A, B, C, reverse)
    else:
        y, _ = _forward(u, delta, A, B, C, reverse, keep_states=False)
    return skip_and_gate(y, u, D, z).to(u.dtype)


def choose_method(batch: int, channels: int, length: int) -> str:
    """ "chunked" where the sequential kernel would leave the GPU idle: L >= CHUNKED_MIN_LENGTH and fewer
    than SEQUENTIAL_MIN_PROGRAMS sequential programs (batch x ceil(D / BLOCK_D)); else "sequential".
    $MMA_TRITON_METHOD, when set to a method, overrides the rule (to compare kernels, or to keep one that
    works on a GPU where the other fails)."""
    forced = os.environ.get(METHOD_ENV_VAR, "auto").strip().lower()
    if forced in METHODS:
        return forced
    if forced not in ("", "auto"):
        raise ValueError(
            f"{METHOD_ENV_VAR}={forced!r} is not a method; choose one of {', '.join(METHODS)} or auto"
        )
    programs = batch * -(-channels // BLOCK_D)
    return "chunked" if length >= CHUNKED_MIN_LENGTH and programs < SEQUENTIAL_MIN_PROGRAMS else "sequential"


class _SelectiveScan(torch.autograd.Function):
    """The recurrence and C contraction: (u, delta, A, B, C) -> y, delta already softplus-ed."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, reverse, method):
        if method == "chunked":  # kept: the state entering each chunk
            y, kept = _chunked().forward(u, delta, A, B, C, reverse)
        else:  # kept: every state
            y, kept = _forward(u, delta, A, B, C, reverse, keep_states=True)
        ctx.save_for_backward(u, delta, A, B, C, kept)
        ctx.reverse, ctx.method = reverse, method
        return y

    @staticmethod
    def backward(ctx, dy):
        u, delta, A, B, C, kept = ctx.saved_tensors
        backward = _chunked().backward if ctx.method == "chunked" else _backward
        grads = backward(u, delta, A, B, C, kept, dy, ctx.reverse)
        return (*(g.to(t.dtype) for g, t in zip(grads, (u, delta, A, B, C))), None, None)


def _chunked():
    """The chunked kernels' module, imported on first use (importing triton is slow, and may fail)."""
    from mma.ops import _triton_chunked

    return _triton_chunked


def _launch_shape(delta: Tensor, A: Tensor) -> tuple[tuple[int, int], dict]:
    """The program grid and the compile-time constants shared by both kernels (delta is in the compute dtype)."""
    import triton
    import triton.language as tl

    batch, channels, _ = delta.shape
    dtype = tl.float64 if delta.dtype == torch.float64 else tl.float32
    constants = {
        "DTYPE": dtype,
        "BLOCK_D": BLOCK_D,
        "BLOCK_N": triton.next_power_of_2(A.shape[1]),
        "num_warps": NUM_WARPS,
    }
    return (batch, triton.cdiv(channels, BLOCK_D)), constants


def _forward(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, reverse: bool, keep_states: bool
) -> tuple[Tensor, Tensor]:
    """Scan output (batch, D, L) in channels-last memory, and every state (or an empty tensor)."""
    from mma.ops import _triton_kernels as k

    batch, channels, length = u.shape
    nstate = A.shape[1]
    dtype = delta.dtype
    y = u.new_empty(batch, length, channels, dtype=dtype).transpose(1, 2)
    states = u.new_empty((batch, length, channels, nstate) if keep_states else (0,), dtype=dtype)
    if y.numel():
        grid, constants = _launch_shape(delta, A)
        k.scan_forward[grid](  # without states the kernel never writes them: y stands in for the pointer
            u,
            delta,
            A,
            B,
            C,
            y,
            states if keep_states else y,
            length,
            channels,
            nstate,
            *u.stride(),
            *delta.stride(),
            *A.stride(),
            *B.stride(),
            *C.stride(),
            *y.stride(),
            REVERSE=reverse,
            KEEP_STATES=keep_states,
            **constants,
        )
    return y, states


def _backward(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, states: Tensor, dy: Tensor, reverse: bool
) -> tuple[Tensor, ...]:
    """Gradients of (u, delta, A, B, C), the kernel's per-block and per-item partial sums added up."""
    from mma.ops import _triton_kernels as k

    batch, channels, length = u.shape
    nstate = A.shape[1]
    grid, constants = _launch_shape(delta, A)
    blocks = grid[1]
    dtype = delta.dtype
    du, ddelta = (u.new_empty(batch, length, channels, dtype=dtype) for _ in range(2))
    dA = u.new_empty(batch, channels, nstate, dtype=dtype)
    dB, dC = (u.new_empty(batch, blocks, length, nstate, dtype=dtype) for _ in range(2))
    if u.numel():
        k.scan_backward[grid](
            u,
            delta,
            A,
            B,
            C,
            states,
            dy,
            du,
            ddelta,
            dA,
            dB,
            dC,
            length,
            channels,
            nstate,
            blocks,
            *u.stride(),
            *delta.stride(),
            *A.stride(),
            *B.stride(),
            *C.stride(),
            *dy.stride(),
            REVERSE=reverse,
            **constants,
        )
    else:
        for t in (dA, dB, dC):
            t.zero_()
    return (
        du.transpose(1, 2),
        ddelta.transpose(1, 2),
        dA.sum(0),
        dB.sum(1).transpose(1, 2),
        dC.sum(1).transpose(1, 2),
    )
