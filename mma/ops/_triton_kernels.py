"""Triton kernels of the GPU selective scan (forward, and backward from the states forward kept).

One program per (batch item, block of `BLOCK_D` channels) walks the whole sequence, the block's
(BLOCK_D, N) states in registers, so the per-token (batch, D, L, N) tensors that the pure-PyTorch scan
builds never exist in memory. Inputs are read in place through their strides (the network's
channels-last views included) and in any float dtype; arithmetic is in `DTYPE` (float32, or float64 for
gradcheck). Each step loads the next step's inputs before it computes, so memory latency overlaps the
arithmetic of the step before.

`REVERSE` walks from the last token to the first: scan step s reads token s, or length - 1 - s.
The recurrence is the plain one (states only ever multiplied by decays exp(delta A) <= 1), so it cannot
overflow for any length.

Backward walks the steps in the opposite order with g = dLoss/dh_t:
    g_t = dy_t C_t + exp(delta_{t+1} A) g_{t+1}
    du_t = delta_t sum_n g_t B_t          ddelta_t = u_t sum_n g_t B_t + sum_n A g_t h_{t-1} exp(delta_t A)
    dA += delta_t g_t h_{t-1} exp(delta_t A)
    dB_t = sum_d g_t delta_t u_t          dC_t = sum_d dy_t h_t
The channel sums of dB and dC are per block; the caller adds the blocks (and dA over the batch).
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _token(step, length, REVERSE: tl.constexpr):
    """The token index that scan step `step` reads."""
    if REVERSE:
        token = length - 1 - step
    else:
        token = step
    return token


@triton.jit
def _in_range(mask, step, length):
    """`mask` where 0 <= step < length, else all False (a tensor even when step is a plain int)."""
    steps = tl.zeros_like(mask.to(tl.int32)) + step
    return mask & (steps >= 0) & (steps < length)


@triton.jit
def _load_step(
    u_row,
    dl_row,
    B_row,
    C_row,
    u_st,
    dl_st,
    B_st,
    C_st,
    d_ok,
    n_ok,
    step,
    length,
    DTYPE: tl.constexpr,
    REVERSE: tl.constexpr,
):
    """u, delta (BLOCK_D,) and B, C (BLOCK_N,) of scan step `step`, in DTYPE; zeros when step is outside."""
    t = _token(step, length, REVERSE)
    d_in, n_in = _in_range(d_ok, step, length), _in_range(n_ok, step, length)
    u = tl.load(u_row + t * u_st, mask=d_in, other=0.0).to(DTYPE)
    dl = tl.load(dl_row + t * dl_st, mask=d_in, other=0.0).to(DTYPE)
    Bt = tl.load(B_row + t * B_st, mask=n_in, other=0.0).to(DTYPE)
    Ct = tl.load(C_row + t * C_st, mask=n_in, other=0.0).to(DTYPE)
    return u, dl, Bt, Ct


@triton.jit
def scan_forward(
    u_ptr,
    delta_ptr,
    A_ptr,
    B_ptr,
    C_ptr,
    y_ptr,
    states_ptr,
    length,
    channels,
    nstate,
    u_sb,
    u_sd,
    u_st,
    dl_sb,
    dl_sd,
    dl_st,
    A_sd,
    A_sn,
    B_sb,
    B_sn,
    B_st,
    C_sb,
    C_sn,
    C_st,
    y_sb,
    y_sd,
    y_st,
    DTYPE: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_N: tl.constexpr,
    REVERSE: tl.constexpr,
    KEEP_STATES: tl.constexpr,
):
    """y[b, d, t] = sum_n C[b, n, t] h[d, n] with h = exp(delta A) h + delta u B; states[b, t, d, n] = h."""
    b = tl.program_id(0).to(tl.int64)
    d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    n = tl.arange(0, BLOCK_N)
    d_ok, n_ok = d < channels, n < nstate
    dn_ok = d_ok[:, None] & n_ok[None, :]
    A = tl.load(A_ptr + d[:, None] * A_sd + n[None, :] * A_sn, mask=dn_ok, other=0.0).to(DTYPE)
    u_row, dl_row = u_ptr + b * u_sb + d * u_sd, delta_ptr + b * dl_sb + d * dl_sd
    y_row = y_ptr + b * y_sb + d * y_sd
    B_row, C_row = B_ptr + b * B_sb + n * B_sn, C_ptr + b * C_sb + n * C_sn
    states_row = states_ptr + b * length * channels * nstate + d[:, None] * nstate + n[None, :]

    u, dl, Bt, Ct = _load_step(
        u_row, dl_row, B_row, C_row, u_st, dl_st, B_st, C_st, d_ok, n_ok, 0, length, DTYPE, REVERSE
    )
    h = tl.zeros((BLOCK_D, BLOCK_N), DTYPE)
    for step in range(length):
        t = _token(step, length, REVERSE)
        u_next, dl_next, B_next, C_next = _load_step(
            u_row, dl_row, B_row, C_row, u_st, dl_st, B_st, C_st, d_ok, n_ok, step + 1, length, DTYPE, REVERSE
        )

        h = tl.exp(dl[:, None] * A) * h + (dl * u)[:, None] * Bt[None, :]
        tl.store(y_row + t * y_st, tl.sum(h * Ct[None, :], axis=1), mask=d_ok)
        if KEEP_STATES:
            tl.store(states_row + t * channels * nstate, h, mask=dn_ok)
        u, dl, Bt, Ct = u_next, dl_next, B_next, C_next


@triton.jit
def scan_backward(
    u_ptr,
    delta_ptr,
    A_ptr,
    B_ptr,
    C_ptr,
    states_ptr,
    dy_ptr,
    du_ptr,
    ddelta_ptr,
    dA_ptr,
    dB_ptr,
    dC_ptr,
    length,
    channels,
    nstate,
    blocks,
    u_sb,
    u_sd,
    u_st,
    dl_sb,
    dl_sd,
    dl_st,
    A_sd,
    A_sn,
    B_sb,
    B_sn,
    B_st,
    C_sb,
    C_sn,
    C_st,
    dy_sb,
    dy_sd,
    dy_st,
    DTYPE: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_N: tl.constexpr,
    REVERSE: tl.constexpr,
):
    """Gradients: du, ddelta (batch, L, D); dA (batch, D, N); dB, dC per channel block (batch, blocks, L, N)."""
    b = tl.program_id(0).to(tl.int64)
    block = tl.program_id(1)
    d = block * BLOCK_D + tl.arange(0, BLOCK_D)
    n = tl.arange(0, BLOCK_N)
    d_ok, n_ok = d < channels, n < nstate
    dn_ok = d_ok[:, None] & n_ok[None, :]
    A = tl.load(A_ptr + d[:, None] * A_sd + n[None, :] * A_sn, mask=dn_ok, other=0.0).to(DTYPE)
    u_row, dl_row = u_ptr + b * u_sb + d * u_sd, delta_ptr + b * dl_sb + d * dl_sd
    dy_row = dy_ptr + b * dy_sb + d * dy_sd
    B_row, C_row = B_ptr + b * B_sb + n * B_sn, C_ptr + b * C_sb + n * C_sn
    state_stride = channels * nstate
    states_row = states_ptr + b * length * state_stride + d[:, None] * nstate + n[None, :]
    du_row, ddl_row = du_ptr + b * length * channels + d, ddelta_ptr + b * length * channels + d
    part = (b * blocks + block) * length * nstate + n
    dB_row, dC_row = dB_ptr + part, dC_ptr + part

    last = length - 1
    t = _token(last, length, REVERSE)
    u, dl, Bt, Ct = _load_step(
        u_row, dl_row, B_row, C_row, u_st, dl_st, B_st, C_st, d_ok, n_ok, last, length, DTYPE, REVERSE
    )
    dy = tl.load(dy_row + t * dy_st, mask=d_ok, other=0.0).to(DTYPE)
    h = tl.load(states_row + t * state_stride, mask=dn_ok, other=0.0)
    t_before = _token(last - 1, length, REVERSE)
    h_before = tl.load(
        states_row + t_before * state_stride, mask=_in_range(dn_ok, last - 1, length), other=0.0
    )
    g = tl.zeros((BLOCK_D, BLOCK_N), DTYPE)
    dA = tl.zeros((BLOCK_D, BLOCK_N), DTYPE)
    for i in range(length):
        step = last - i
        t = _token(step, length, REVERSE)
        # the next step (step - 1) needs its inputs and the state of step - 2
        u_next, dl_next, B_next, C_next = _load_step(
            u_row, dl_row, B_row, C_row, u_st, dl_st, B_st, C_st, d_ok, n_ok, step - 1, length, DTYPE, REVERSE
        )
        t_next = _token(step - 1, length, REVERSE)
        dy_next = tl.load(dy_row + t_next * dy_st, mask=_in_range(d_ok, step - 1, length), other=0.0).to(
            DTYPE
        )
        t_far = _token(step - 2, length, REVERSE)
        h_far = tl.load(states_row + t_far * state_stride, mask=_in_range(dn_ok, step - 2, length), other=0.0)

        g += dy[:, None] * Ct[None, :]
        decay = tl.exp(dl[:, None] * A)
        g_decay = g * h_before * decay
        dA += g_decay * dl[:, None]
        g_B = tl.sum(g * Bt[None, :], axis=1)
        tl.store(du_row + t * channels, g_B * dl, mask=d_ok)
        tl.store(ddl_row + t * channels, g_B * u + tl.sum(g_decay * A, axis=1), mask=d_ok)
        tl.store(dB_row + t * nstate, tl.sum(g * (dl * u)[:, None], axis=0), mask=n_ok)
        tl.store(dC_row + t * nstate, tl.sum(dy[:, None] * h, axis=0), mask=n_ok)
        g = g * decay
        u, dl, Bt, Ct, dy = u_next, dl_next, B_next, C_next, dy_next
        h, h_before = h_before, h_far
    tl.store(dA_ptr + b * channels * nstate + d[:, None] * nstate + n[None, :], dA, mask=dn_ok)
