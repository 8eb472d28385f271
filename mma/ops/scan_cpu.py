"""The `cpu` backend: the numba kernels of `mma.ops._cpu_kernels` behind a torch autograd Function.

softplus(delta + bias) and SiLU(z) are elementwise over (batch, Dch, L), a 1/N share of the work, so
they run as vectorised torch ops here and are recomputed in backward; the kernels do the (.., N)
part: the recurrence, the C contraction, the D skip and the gate multiply, reading every input in place
whatever its strides.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


@lru_cache(maxsize=None)
def unavailable_reason() -> str | None:
    """None when numba imports and the kernels load, else why not."""
    try:
        from mma.ops import _cpu_kernels  # noqa: F401  (compiles lazily, on first call)
    except Exception as exc:  # numba missing, or incompatible with this numpy/llvmlite
        return f"numba does not work here ({exc}); install it with `pip install numba`"
    return None


def _flat(t: Tensor) -> tuple[np.ndarray, tuple[int, int, int]]:
    """A (batch, X, L) CPU tensor as a flat numpy view of its storage plus its element strides."""
    span = 1 + sum((size - 1) * stride for size, stride in zip(t.shape, t.stride())) if t.numel() else 1
    flat = torch.as_strided(t.detach(), (span,), (1,), t.storage_offset())
    return flat.numpy(), tuple(t.stride())


def _prepare(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
    """Common-dtype inputs and the elementwise parts: (u, delta after softplus, gate or None, B, C, A, D)."""
    dtype = torch.float64 if torch.float64 in (u.dtype, delta.dtype, A.dtype, B.dtype, C.dtype) else torch.float32
    u, delta, B, C, A = (t.to(dtype) for t in (u, delta, B, C, A))
    if delta_bias is not None:
        delta = delta + delta_bias.to(dtype)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    gate = F.silu(z.to(dtype)) if z is not None else None
    D = D.to(dtype) if D is not None else u.new_zeros(u.shape[1])
    return u, delta, gate, B, C, A, D


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
    out, _ = _forward(*_prepare(*inputs, delta_softplus), reverse, keep_states=False)
    return out.to(u.dtype)


class _SelectiveScan(torch.autograd.Function):
    """Forward keeps only the inputs and the states every CHUNK steps; backward recomputes the rest."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse):
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias)
        ctx.flags = (delta_softplus, reverse)
        out, ctx.states = _forward(*_prepare(u, delta, A, B, C, D, z, delta_bias, delta_softplus), reverse,
                                   keep_states=True)
        return out.to(u.dtype)

    @staticmethod
    def backward(ctx, grad):
        u, delta, A, B, C, D, z, delta_bias = ctx.saved_tensors
        delta_softplus, reverse = ctx.flags
        prepared = _prepare(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
        du, ddelta, dgate, dB, dC, dA, dD = _backward(*prepared, reverse, ctx.states, grad.to(prepared[0].dtype))
        if delta_softplus:  # d softplus(x)/dx = sigmoid(x), x = delta + bias
            pre = delta.to(ddelta.dtype)
            if delta_bias is not None:
                pre = pre + delta_bias.to(ddelta.dtype)[:, None]
            ddelta = ddelta * torch.sigmoid(pre)
        dz = None
        if z is not None:  # d silu(z)/dz = s (1 + z (1 - s)), s = sigmoid(z)
            zz = z.to(dgate.dtype)
            sig = torch.sigmoid(zz)
            dz = (dgate * sig * (1 + zz * (1 - sig))).to(z.dtype)
        return (
            du.to(u.dtype), ddelta.to(delta.dtype), dA.to(A.dtype), dB.to(B.dtype), dC.to(C.dtype),
            dD.to(D.dtype) if D is not None else None, dz,
            ddelta.sum((0, 2)).to(delta_bias.dtype) if delta_bias is not None else None, None, None,
        )


def _forward(u, delta, gate, B, C, A, D, reverse: bool, keep_states: bool) -> tuple[Tensor, Tensor]:
    """Scan output (batch, Dch, L) in channels-last memory, and the checkpointed states (or empty)."""
    from mma.ops import _cpu_kernels as k

    batch, dch, length = u.shape
    out = u.new_empty(batch, length, dch)
    chunks = (length + k.CHUNK - 1) // k.CHUNK if keep_states else 0
    states = u.new_empty(batch, chunks, A.shape[1], dch)
    k.scan_forward(
        *_flat(u), *_flat(delta), *_gate_arg(gate, u), *_flat(B), *_flat(C), A.t().contiguous().numpy(),
        D.contiguous().numpy(), gate is not None, reverse, out.numpy(), states.numpy(),
    )
    return out.transpose(1, 2), states


def _backward(u, delta, gate, B, C, A, D, reverse: bool, states: Tensor, grad: Tensor):
    """(du, d delta_eff, d gate or None, dB, dC, dA, dD) from the kernel's outputs and partial sums."""
    import numba

    from mma.ops import _cpu_kernels as k

    batch, dch, length = u.shape
    nstate = A.shape[1]
    nblocks = (dch + k.BLOCK - 1) // k.BLOCK
    parts = min(nblocks, -(-numba.get_num_threads() // batch))  # enough workers even at batch 1
    du, ddelta = u.new_empty(batch, length, dch), u.new_empty(batch, length, dch)
    dgate = u.new_empty(batch, length, dch) if gate is not None else u.new_empty(1, 1, 1)
    dB_parts, dC_parts = u.new_zeros(parts, batch, length, nstate), u.new_zeros(parts, batch, length, nstate)
    dA_parts, dD_parts = u.new_empty(batch, nstate, dch), u.new_empty(batch, dch)
    k.scan_backward(
        *_flat(u), *_flat(delta), *_gate_arg(gate, u), *_flat(B), *_flat(C), A.t().contiguous().numpy(),
        D.contiguous().numpy(), gate is not None, reverse, states.numpy(), *_flat(grad), du.numpy(),
        ddelta.numpy(), dgate.numpy(), dB_parts.numpy(), dC_parts.numpy(), dA_parts.numpy(), dD_parts.numpy(),
    )
    return (
        du.transpose(1, 2), ddelta.transpose(1, 2), dgate.transpose(1, 2) if gate is not None else None,
        dB_parts.sum(0).transpose(1, 2), dC_parts.sum(0).transpose(1, 2), dA_parts.sum(0).t(), dD_parts.sum(0),
    )


def _gate_arg(gate: Tensor | None, like: Tensor) -> tuple[np.ndarray, tuple[int, int, int]]:
    """The gate's flat view, or a one-element stand-in the kernels never read when there is no gate."""
    return _flat(gate) if gate is not None else (like.new_zeros(1).numpy(), (0, 0, 0))
