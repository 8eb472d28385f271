"""Pure-PyTorch selective scan: runs on any device, differentiable by plain autograd.

Two evaluation orders of the same recurrence, both free of overflow for any length (only products of
per-step decays appear, never their inverses, so long sequences and large delta*A underflow to 0
instead of producing inf/NaN):
- `loop`: one step per token over tensors unbound once. Fastest pure-PyTorch form on CPU, where
  kernel launches are cheap; indexing inside the loop would make backward quadratic.
- `chunked`: a doubling (Hillis-Steele) scan inside chunks of `CHUNK` tokens, then a short loop over
  chunks carrying the state. Far fewer kernel launches, which is what a GPU needs.
Either way the per-token (batch, D, N) decays and inputs are built `SEGMENT` tokens at a time, the state
carried between segments, so a forward without autograd needs memory for one segment, not for all of L.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

CHUNK = 64
SEGMENT = 512


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
    """Same contract as `mma.ops.selective_scan`; `method` ("loop"/"chunked") defaults by device."""
    if method is None:
        method = "loop" if u.device.type == "cpu" else "chunked"
    if method not in ("loop", "chunked"):
        raise ValueError(f"unknown method {method!r}")
    scan = _scan_loop if method == "loop" else _scan_chunked
    out_dtype = u.dtype
    compute = torch.promote_types(u.dtype, torch.float32)
    u, A, B, C = (t.to(compute) for t in (u, A, B, C))
    delta = effective_delta(delta, delta_bias, delta_softplus, compute)
    # time-major views, (L, batch, ...), so that a segment is a contiguous run of slabs
    u_t, delta_t, B_t, C_t = (t.permute(2, 0, 1) for t in (u, delta, B, C))
    starts = range(0, u.shape[-1], SEGMENT)
    h = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])
    ys = {}
    for start in reversed(starts) if reverse else starts:
        seg = slice(start, start + SEGMENT)
        decay = torch.exp(delta_t[seg, ..., None] * A)
        drive = (delta_t[seg] * u_t[seg])[..., None] * B_t[seg, :, None, :]
        states = scan(decay, drive, h, reverse)
        h = states[0] if reverse else states[-1]
        ys[start] = torch.einsum("lbdn,lbn->lbd", states, C_t[seg])
    y = torch.cat([ys[start] for start in starts]).permute(1, 2, 0)
    return skip_and_gate(y, u, D, z).to(out_dtype)


def effective_delta(
    delta: Tensor, delta_bias: Tensor | None, delta_softplus: bool, dtype: torch.dtype
) -> Tensor:
    """softplus(delta + delta_bias) in `dtype`, each part only when asked for (shared with `triton`)."""
    delta = delta.to(dtype)
    if delta_bias is not None:
        delta = delta + delta_bias.to(dtype)[:, None]
    return F.softplus(delta) if delta_softplus else delta


def skip_and_gate(y: Tensor, u: Tensor, D: Tensor | None, z: Tensor | None) -> Tensor:
    """y + D u, then times SiLU(z), in y's dtype: the elementwise end of the scan (shared with `triton`)."""
    if D is not None:
        y = y + D.to(y.dtype)[:, None] * u
    if z is not None:
        y = y * F.silu(z.to(y.dtype))
    return y


def _scan_loop(decay: Tensor, drive: Tensor, h: Tensor, reverse: bool) -> Tensor:
    """h_t = decay_t * h_{t-1} + drive_t over axis 0 from state h, one step per token."""
    steps = range(decay.shape[0] - 1, -1, -1) if reverse else range(decay.shape[0])
    decays, drives = decay.unbind(0), drive.unbind(0)
    states: list[Tensor] = [h] * decay.shape[0]
    for t in steps:
        h = torch.addcmul(drives[t], decays[t], h)
        states[t] = h
    return torch.stack(states)


def _scan_chunked(decay: Tensor, drive: Tensor, h: Tensor, reverse: bool) -> Tensor:
    """Same recurrence: doubling scan within chunks, then carry the state across chunks."""
    if reverse:
        return _scan_chunked(decay.flip(0), drive.flip(0), h, False).flip(0)
    length = decay.shape[0]
    pad = (-length) % CHUNK
    if pad:  # identity steps (decay 1, drive 0) at the end do not change earlier states
        decay = torch.cat([decay, decay.new_ones((pad, *decay.shape[1:]))])
        drive = torch.cat([drive, drive.new_zeros((pad, *drive.shape[1:]))])
    rest = decay.shape[1:]
    a = decay.reshape(-1, CHUNK, *rest)
    b = drive.reshape(-1, CHUNK, *rest)
    offset = 1
    while offset < CHUNK:
        # compose step t with the segment ending at t - offset: (a, b) <- (a a', a b' + b)
        b = torch.cat([b[:, :offset], torch.addcmul(b[:, offset:], a[:, offset:], b[:, :-offset])], 1)
        a = torch.cat([a[:, :offset], a[:, offset:] * a[:, :-offset]], 1)
        offset *= 2
    # a[:, i], b[:, i] now map the state before the chunk to the state after its step i.
    chunk_states = []
    for a_c, b_c in zip(a.unbind(0), b.unbind(0)):
        h_c = torch.addcmul(b_c, a_c, h)
        chunk_states.append(h_c)
        h = h_c[-1]
    return torch.cat(chunk_states)[:length]
