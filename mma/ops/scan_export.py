"""The `export` backend: the scan and the conv in plain tensor ops whose count does not depend on the length.

ONNX exporters trace the network once and replay the recorded ops for every input, so a Python loop over
tokens (the `torch` backend on CPU) or over chunks would be unrolled for the traced length only, and a
compiled kernel cannot be traced at all. Here the op sequence is the same for every length L:

1. pad L to a multiple of `CHUNK` with identity steps (delta = 0: decay 1, drive 0), which leave every real
   state unchanged in either direction;
2. inside each chunk, a doubling (Hillis-Steele) scan of log2(CHUNK) steps composes each token's
   (decay, drive) with the tokens before it (after it, in reverse), so that it maps the state entering
   the chunk to its own state;
3. the chunks' totals (total decay, state leaving the chunk from a zero start), a sequence CHUNK times
   shorter, get the same doubling scan with a fixed number of steps, `CHUNK_STEPS`, enough for `MAX_LENGTH`
   tokens; the shifted operands are gathered with computed indices (a step whose offset exceeds the number
   of chunks reads only identity steps and changes nothing), so no size is fixed at trace time;
4. the state entering each chunk (the state leaving the one before) is applied to all its tokens.

A recursive form (chunks of chunks, padded at each level) would do less work, but the exporter's symbolic
shape reasoning over its nested padding took more than ten minutes for a two-layer network. Only
products of decays exp(delta A) <= 1 appear, never their inverses or cumulative sums of their logs, so long
sequences and extreme delta*A underflow to 0 instead of overflowing or losing precision. The cost is memory:
the decays and drives are built for the whole sequence at once.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from mma.errors import ConfigError
from mma.ops.scan_torch import effective_delta, skip_and_gate

CHUNK = 16
MAX_LENGTH = 2**24  # a 4096 x 4096 feature map: more than its (batch, D, L, N) tensors fit in memory
CHUNK_STEPS = math.ceil(math.log2(MAX_LENGTH // CHUNK))


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
    """Same contract as `mma.ops.selective_scan`, for sequences of at most `MAX_LENGTH` tokens."""
    length = u.shape[-1]
    if isinstance(length, int) and length > MAX_LENGTH:  # a traced length is symbolic and not checked
        raise ConfigError(f"the export scan handles at most {MAX_LENGTH:,} tokens, got {length:,}")
    out_dtype = u.dtype
    compute = torch.promote_types(u.dtype, torch.float32)
    u, A, B, C = (t.to(compute) for t in (u, A, B, C))
    delta = effective_delta(delta, delta_bias, delta_softplus, compute)
    # padded with zeros: delta = 0 there, so the extra tokens are identity steps
    u_p, delta_p, B_p, C_p = (F.pad(t, (0, (-length) % CHUNK)) for t in (u, delta, B, C))
    decay = torch.exp(delta_p[..., None] * A[:, None, :])  # (batch, D, padded L, N)
    drive = (delta_p * u_p)[..., None] * B_p.transpose(1, 2)[:, None]
    batch, channels, _, n = decay.shape
    decay, drive = (t.reshape(batch, channels, -1, CHUNK, n) for t in (decay, drive))
    decay, drive = _scan_within_chunks(decay, drive, reverse)
    end = 0 if reverse else CHUNK - 1  # the token whose (decay, drive) covers its whole chunk
    entering = _carry_across_chunks(decay.select(3, end), drive.select(3, end), reverse)
    states = torch.addcmul(drive, decay, entering[:, :, :, None]).reshape(batch, channels, -1, n)
    y = (states * C_p.transpose(1, 2)[:, None]).sum(-1)[..., :length]
    return skip_and_gate(y, u, D, z).to(out_dtype)


def _scan_within_chunks(decay: Tensor, drive: Tensor, reverse: bool) -> tuple[Tensor, Tensor]:
    """(decay, drive) of each token composed with those before it in its chunk (after it when reversed),
    along axis 3: afterwards token t maps the state entering its chunk to its own, h_t = decay_t h_in + drive_t.
    """
    dim, offset = 3, 1
    while offset < CHUNK:
        keep = CHUNK - offset
        near, far = (
            (0, offset) if reverse else (offset, 0)
        )  # token t absorbs the segment ending at t -+ offset
        near_decay, near_drive = decay.narrow(dim, near, keep), drive.narrow(dim, near, keep)
        far_decay, far_drive = decay.narrow(dim, far, keep), drive.narrow(dim, far, keep)
        new_decay, new_drive = near_decay * far_decay, torch.addcmul(near_drive, near_decay, far_drive)
        # the `offset` tokens nearest the chunk's entry have nothing left to absorb
        if reverse:
            decay = torch.cat([new_decay, decay.narrow(dim, keep, offset)], dim)
            drive = torch.cat([new_drive, drive.narrow(dim, keep, offset)], dim)
        else:
            decay = torch.cat([decay.narrow(dim, 0, offset), new_decay], dim)
            drive = torch.cat([drive.narrow(dim, 0, offset), new_drive], dim)
        offset *= 2
    return decay, drive


def _carry_across_chunks(decay: Tensor, drive: Tensor, reverse: bool) -> Tensor:
    """The state entering each chunk, from the chunks' total decays and leaving states (batch, D, chunks, N).

    A doubling scan over the chunk axis with `CHUNK_STEPS` steps whatever the number of chunks; positions
    before the first chunk (after the last, reversed) read the identity step (decay 1, drive 0).
    """
    index = torch.arange(decay.shape[2], device=decay.device)
    direction = 1 if reverse else -1
    for step in range(CHUNK_STEPS):
        far_decay, far_drive = _shifted(decay, drive, index, direction * 2**step)
        drive = torch.addcmul(drive, decay, far_drive)
        decay = decay * far_decay
    return _shifted(decay, drive, index, direction)[1]  # the state leaving the chunk before, 0 for the first


def _shifted(decay: Tensor, drive: Tensor, index: Tensor, shift: int) -> tuple[Tensor, Tensor]:
    """decay[c + shift], drive[c + shift] along axis 2; the identity step (1, 0) where c + shift is outside."""
    source = index + shift
    inside = ((source >= 0) & (source < index.shape[0]))[:, None]
    source = source.clamp(0, index.shape[0] - 1)
    far_decay = torch.where(inside, decay.index_select(2, source), torch.ones_like(decay))
    far_drive = torch.where(inside, drive.index_select(2, source), torch.zeros_like(drive))
    return far_decay, far_drive


def causal_conv1d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    activation: str | None = None,
    *,
    reverse: bool = False,
) -> Tensor:
    """Same contract as `mma.ops.causal_conv1d`, as one padded F.conv1d (exporters know it; `conv.py`'s
    custom autograd Function and channels-last trick are for training speed)."""
    if activation not in (None, "silu"):
        raise ValueError(f"activation must be None or 'silu', not {activation!r}")
    width = weight.shape[1]
    if reverse:  # the anti-causal conv: pad on the right, taps mirrored
        weight = weight.flip(1)
    padded = F.pad(x, (0, width - 1) if reverse else (width - 1, 0))
    y = F.conv1d(
        padded,
        weight[:, None, :].to(x.dtype),
        bias.to(x.dtype) if bias is not None else None,
        groups=weight.shape[0],
    )
    return F.silu(y) if activation == "silu" else y
