"""Triton kernels of the chunked selective scan: parallel along the sequence, for few long sequences.

The sequential kernels (`mma.ops._triton_kernels`) give one program to each (batch item, channel block)
and walk all L tokens, so a single image runs D / 16 programs on a GPU with 100+ multiprocessors. Here the
sequence is cut into chunks of `CHUNK` scan steps and every (batch item, channel block, chunk) is a program.
Per (b, d, n) the recurrence h_s = a_s h_{s-1} + x_s, a_s = exp(delta_s A), x_s = delta_s u_s B_s, is a
scan of the pairs (a_s, x_s) under (a1, x1) o (a2, x2) = (a1 a2, a2 x1 + x2), which `tl.associative_scan`
runs over a (channels, states, steps) tile in registers. Three launches:

1. `chunk_ends`: each chunk scanned from a zero state gives its end state and its total decay;
2. `carry`: a scan over the chunks (blocks of `CARRY_CHUNKS` at a time) of those pairs gives every chunk
   its true initial state;
3. `chunk_output` / `chunk_gradients`: each chunk scanned again from its initial state (folded into its
   first pair), with the output or the gradients computed from the states in registers.

Backward runs the same machinery on g_s = dLoss/dh_s, the reverse recurrence g_s = dy_s C_s + a_{s+1} g_{s+1}
(a reverse `associative_scan` whose decay is the next step's), with the initial states forward kept per
chunk: (batch, chunks, D, N) values, where the sequential kernel keeps every state. The states before each
step, h_{s-1}, come from a scan of the previous step's pairs (the chunk's initial state as the first), so
nothing is ever divided by a decay: decays that underflow to 0 are harmless for any delta and length.

`REVERSE` maps scan step s to token length - 1 - s, as the sequential kernels do. Gradients of B and C are
summed over the channels of a block (the caller adds the blocks), dA over a chunk (the caller adds the
chunks and the batch).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from mma.ops._triton_kernels import _token


@triton.jit
def _combine(a_first, x_first, a_then, x_then):
    """Two consecutive steps of h = a h + x as one: first, then the other."""
    return a_first * a_then, a_then * x_first + x_then


@triton.jit
def _load_tile(row, stride, ok, steps, length, DTYPE: tl.constexpr, REVERSE: tl.constexpr):
    """(len(row), len(steps)) values of the scan steps `steps` in DTYPE; zeros outside [0, length)."""
    tokens = _token(steps, length, REVERSE)
    mask = ok[:, None] & ((steps >= 0) & (steps < length))[None, :]
    return tl.load(row[:, None] + tokens[None, :] * stride, mask=mask, other=0.0).to(DTYPE)


@triton.jit
def _pairs(u, dl, Bt, A):
    """Decays a and inputs x (BLOCK_D, BLOCK_N, steps) from u, delta (BLOCK_D, steps) and B (BLOCK_N, steps).

    Steps outside the sequence (zero delta, u and B) become the identity pair (1, 0)."""
    return tl.exp(dl[:, None, :] * A[:, :, None]), (dl * u)[:, None, :] * Bt[None, :, :]


@triton.jit
def _column(x, index, CHUNK: tl.constexpr):
    """x[:, :, index] of a (BLOCK_D, BLOCK_N, CHUNK) tile."""
    pick = (tl.arange(0, CHUNK) == index)[None, None, :]
    return tl.sum(tl.where(pick, x, 0.0), axis=2)


@triton.jit
def _block(
    A_ptr,
    A_sd,
    A_sn,
    channels,
    nstate,
    DTYPE: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_N: tl.constexpr,
    CHUNK: tl.constexpr,
):
    """This program's batch item, channels, states, their masks, the block of A and its chunk's steps.

    The grid is (chunks, channel blocks, batch): chunks first, as CUDA allows 2**31 - 1 programs along the
    first axis and 65,535 along the others."""
    b = tl.program_id(2).to(tl.int64)
    d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    n = tl.arange(0, BLOCK_N)
    d_ok, n_ok = d < channels, n < nstate
    dn_ok = d_ok[:, None] & n_ok[None, :]
    A = tl.load(A_ptr + d[:, None] * A_sd + n[None, :] * A_sn, mask=dn_ok, other=0.0).to(DTYPE)
    steps = tl.program_id(0) * CHUNK + tl.arange(0, CHUNK)
    return b, d, n, d_ok, n_ok, dn_ok, A, steps


@triton.jit
def _summary_offsets(b, chunk, d, n, chunks, channels, nstate):
    """Where (d, n) of one chunk sits in a (batch, chunks, channels, nstate) summary tensor."""
    return ((b * chunks + chunk) * channels + d[:, None]) * nstate + n[None, :]


@triton.jit
def chunk_ends(
    u_ptr,
    delta_ptr,
    A_ptr,
    B_ptr,
    C_ptr,
    dy_ptr,
    ends_ptr,
    decays_ptr,
    length,
    channels,
    nstate,
    chunks,
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
    CHUNK: tl.constexpr,
    REVERSE: tl.constexpr,
    GRADIENT: tl.constexpr,
):
    """Per chunk, from a zero state: the end state and the product of the decays (batch, chunks, D, N).

    Forward (GRADIENT False): h at the chunk's last step. Backward (GRADIENT True): g at its first step,
    the scan of (a_{s+1}, dy_s C_s) from the last step back. C and dy are read only for GRADIENT."""
    b, d, n, d_ok, n_ok, dn_ok, A, steps = _block(
        A_ptr, A_sd, A_sn, channels, nstate, DTYPE, BLOCK_D, BLOCK_N, CHUNK
    )
    dl_row = delta_ptr + b * dl_sb + d * dl_sd
    if GRADIENT:
        dy = _load_tile(dy_ptr + b * dy_sb + d * dy_sd, dy_st, d_ok, steps, length, DTYPE, REVERSE)
        Ct = _load_tile(C_ptr + b * C_sb + n * C_sn, C_st, n_ok, steps, length, DTYPE, REVERSE)
        dl_next = _load_tile(dl_row, dl_st, d_ok, steps + 1, length, DTYPE, REVERSE)
        decay, total = tl.associative_scan(
            (tl.exp(dl_next[:, None, :] * A[:, :, None]), dy[:, None, :] * Ct[None, :, :]),
            2,
            _combine,
            reverse=True,
        )
        index = 0
    else:
        u = _load_tile(u_ptr + b * u_sb + d * u_sd, u_st, d_ok, steps, length, DTYPE, REVERSE)
        dl = _load_tile(dl_row, dl_st, d_ok, steps, length, DTYPE, REVERSE)
        Bt = _load_tile(B_ptr + b * B_sb + n * B_sn, B_st, n_ok, steps, length, DTYPE, REVERSE)
        a, x = _pairs(u, dl, Bt, A)
        decay, total = tl.associative_scan((a, x), 2, _combine)
        index = CHUNK - 1
    where = _summary_offsets(b, tl.program_id(0), d, n, chunks, channels, nstate)
    tl.store(ends_ptr + where, _column(total, index, CHUNK), mask=dn_ok)
    tl.store(decays_ptr + where, _column(decay, index, CHUNK), mask=dn_ok)


@triton.jit
def carry(
    ends_ptr,
    decays_ptr,
    inits_ptr,
    chunks,
    lanes,
    DTYPE: tl.constexpr,
    BLOCK_LANES: tl.constexpr,
    CARRY_CHUNKS: tl.constexpr,
    BACKWARD: tl.constexpr,
):
    """inits[b, c] = the state entering chunk c: chunks walked first to last (BACKWARD: last to first).

    A lane is one (channel, state) pair; the walk handles CARRY_CHUNKS chunks per step with a scan, the
    state carried between steps in registers."""
    b = tl.program_id(0).to(tl.int64)
    lane = tl.program_id(1) * BLOCK_LANES + tl.arange(0, BLOCK_LANES)
    lane_ok = lane < lanes
    row = b * chunks * lanes + lane
    within = tl.arange(0, CARRY_CHUNKS)
    h = tl.zeros((BLOCK_LANES,), DTYPE)
    tl.store(inits_ptr + row + _token(0, chunks, BACKWARD) * lanes, h, mask=lane_ok)
    for start in range(0, chunks, CARRY_CHUNKS):
        walk = start + within
        where = row[:, None] + _token(walk, chunks, BACKWARD)[None, :] * lanes
        ok = lane_ok[:, None] & (walk < chunks)[None, :]
        decay = tl.load(decays_ptr + where, mask=ok, other=1.0).to(DTYPE)
        end = tl.load(ends_ptr + where, mask=ok, other=0.0).to(DTYPE)
        end += tl.where((within == 0)[None, :], decay * h[:, None], 0.0)
        decay, state = tl.associative_scan((decay, end), 1, _combine)
        # the state after walk step j enters walk step j + 1
        tl.store(
            inits_ptr + row[:, None] + _token(walk + 1, chunks, BACKWARD)[None, :] * lanes,
            state,
            mask=lane_ok[:, None] & (walk + 1 < chunks)[None, :],
        )
        h = tl.sum(tl.where((within == CARRY_CHUNKS - 1)[None, :], state, 0.0), axis=1)


@triton.jit
def chunk_output(
    u_ptr,
    delta_ptr,
    A_ptr,
    B_ptr,
    C_ptr,
    inits_ptr,
    y_ptr,
    length,
    channels,
    nstate,
    chunks,
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
    CHUNK: tl.constexpr,
    REVERSE: tl.constexpr,
):
    """y[b, d, t] = sum_n C[b, n, t] h[d, n, t] over one chunk, from the chunk's initial state."""
    b, d, n, d_ok, n_ok, dn_ok, A, steps = _block(
        A_ptr, A_sd, A_sn, channels, nstate, DTYPE, BLOCK_D, BLOCK_N, CHUNK
    )
    chunk = tl.program_id(0)
    u = _load_tile(u_ptr + b * u_sb + d * u_sd, u_st, d_ok, steps, length, DTYPE, REVERSE)
    dl = _load_tile(delta_ptr + b * dl_sb + d * dl_sd, dl_st, d_ok, steps, length, DTYPE, REVERSE)
    Bt = _load_tile(B_ptr + b * B_sb + n * B_sn, B_st, n_ok, steps, length, DTYPE, REVERSE)
    Ct = _load_tile(C_ptr + b * C_sb + n * C_sn, C_st, n_ok, steps, length, DTYPE, REVERSE)
    where = _summary_offsets(b, chunk, d, n, chunks, channels, nstate)
    init = tl.load(inits_ptr + where, mask=dn_ok, other=0.0)
    a, x = _pairs(u, dl, Bt, A)
    x += tl.where((tl.arange(0, CHUNK) == 0)[None, None, :], a * init[:, :, None], 0.0)
    _, h = tl.associative_scan((a, x), 2, _combine)
    y = tl.sum(h * Ct[None, :, :], axis=1)
    tokens = _token(steps, length, REVERSE)
    tl.store(
        y_ptr + b * y_sb + d[:, None] * y_sd + tokens[None, :] * y_st,
        y,
        mask=d_ok[:, None] & (steps < length)[None, :],
    )


@triton.jit
def chunk_gradients(
    u_ptr,
    delta_ptr,
    A_ptr,
    B_ptr,
    C_ptr,
    dy_ptr,
    h_inits_ptr,
    g_inits_ptr,
    du_ptr,
    ddelta_ptr,
    dA_ptr,
    dB_ptr,
    dC_ptr,
    length,
    channels,
    nstate,
    chunks,
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
    CHUNK: tl.constexpr,
    REVERSE: tl.constexpr,
):
    """One chunk's gradients: du, ddelta (batch, L, D); dA per chunk (batch, chunks, D, N); dB, dC per
    channel block (batch, blocks, L, N). With g = dLoss/dh and h_before = h_{s-1}:
        du = delta sum_n g B        ddelta = u sum_n g B + sum_n A g a h_before
        dA = sum_s delta g a h_before        dB = sum_d g delta u        dC = sum_d dy h"""
    b, d, n, d_ok, n_ok, dn_ok, A, steps = _block(
        A_ptr, A_sd, A_sn, channels, nstate, DTYPE, BLOCK_D, BLOCK_N, CHUNK
    )
    chunk, block = tl.program_id(0), tl.program_id(1)
    u_row, dl_row = u_ptr + b * u_sb + d * u_sd, delta_ptr + b * dl_sb + d * dl_sd
    B_row = B_ptr + b * B_sb + n * B_sn
    column = tl.arange(0, CHUNK)[None, None, :]
    summary = _summary_offsets(b, chunk, d, n, chunks, channels, nstate)

    # h_before: the scan of the previous steps' pairs, whose first is (0, the chunk's initial state)
    a_prev, x_prev = _pairs(
        _load_tile(u_row, u_st, d_ok, steps - 1, length, DTYPE, REVERSE),
        _load_tile(dl_row, dl_st, d_ok, steps - 1, length, DTYPE, REVERSE),
        _load_tile(B_row, B_st, n_ok, steps - 1, length, DTYPE, REVERSE),
        A,
    )
    h_init = tl.load(h_inits_ptr + summary, mask=dn_ok, other=0.0)
    x_prev = tl.where(column == 0, h_init[:, :, None], x_prev)
    a_prev = tl.where(column == 0, 0.0, a_prev)
    _, h_before = tl.associative_scan((a_prev, x_prev), 2, _combine)

    u = _load_tile(u_row, u_st, d_ok, steps, length, DTYPE, REVERSE)
    dl = _load_tile(dl_row, dl_st, d_ok, steps, length, DTYPE, REVERSE)
    Bt = _load_tile(B_row, B_st, n_ok, steps, length, DTYPE, REVERSE)
    a, x = _pairs(u, dl, Bt, A)
    h = a * h_before + x

    # g: the reverse scan of (a_{s+1}, dy_s C_s), whose last input also takes the state entering from after
    dy = _load_tile(dy_ptr + b * dy_sb + d * dy_sd, dy_st, d_ok, steps, length, DTYPE, REVERSE)
    Ct = _load_tile(C_ptr + b * C_sb + n * C_sn, C_st, n_ok, steps, length, DTYPE, REVERSE)
    dl_next = _load_tile(dl_row, dl_st, d_ok, steps + 1, length, DTYPE, REVERSE)
    a_next = tl.exp(dl_next[:, None, :] * A[:, :, None])
    g_init = tl.load(g_inits_ptr + summary, mask=dn_ok, other=0.0)
    g_in = dy[:, None, :] * Ct[None, :, :] + tl.where(column == CHUNK - 1, a_next * g_init[:, :, None], 0.0)
    _, g = tl.associative_scan((a_next, g_in), 2, _combine, reverse=True)

    g_B = tl.sum(g * Bt[None, :, :], axis=1)
    g_decay = g * a * h_before
    tokens = _token(steps, length, REVERSE)
    in_seq = (steps < length)[None, :]
    per_token = b * length * channels + tokens[None, :] * channels + d[:, None]
    tl.store(du_ptr + per_token, g_B * dl, mask=d_ok[:, None] & in_seq)
    d_in_seq = d_ok[:, None] & in_seq
    tl.store(ddelta_ptr + per_token, g_B * u + tl.sum(g_decay * A[:, :, None], axis=1), mask=d_in_seq)
    tl.store(dA_ptr + summary, tl.sum(g_decay * dl[:, None, :], axis=2), mask=dn_ok)
    per_block = ((b * blocks + block) * length + tokens[None, :]) * nstate + n[:, None]
    tl.store(dB_ptr + per_block, tl.sum(g * (dl * u)[:, None, :], axis=0), mask=n_ok[:, None] & in_seq)
    tl.store(dC_ptr + per_block, tl.sum(dy[:, None, :] * h, axis=0), mask=n_ok[:, None] & in_seq)


# Launch shapes, read at each call (benchmarks/gpu_check.py sweeps some of them). A (BLOCK_D, N, CHUNK)
# tile is 8 x 16 x 64 values, 32 a thread with 8 warps. Compiled for sm_90 (Triton 3.9, N = 16) these use
# 80-101 registers a thread in the forward kernels and 149 in `chunk_gradients`, with no spills; 8
# channels there would need 255 registers and spill.
CHUNK = 64  # scan steps per chunk (a power of two); shorter sequences use the next power of two >= L
BLOCK_D = 8  # channels per program in `chunk_ends` and `chunk_output`
GRAD_BLOCK_D = 4  # channels per program in `chunk_gradients`, which holds about twice as many tiles
NUM_WARPS = 8
CARRY_LANES = 32  # (channel, state) lanes per `carry` program
CARRY_CHUNKS = 32  # chunks per step of the `carry` walk


def forward(
    u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, reverse: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scan output (batch, D, L) in channels-last memory, and each chunk's initial state (for backward)."""
    batch, channels, length = u.shape
    chunk, chunks = _chunking(length)
    y = u.new_empty(batch, length, channels, dtype=delta.dtype).transpose(1, 2)
    h_inits = u.new_empty(batch, chunks, channels, A.shape[1], dtype=delta.dtype)  # `carry` writes them all
    if not y.numel():
        return y, h_inits
    grid, constants = _launch(delta, A, chunk, chunks, BLOCK_D)
    common = (
        length,
        channels,
        A.shape[1],
        chunks,
        *u.stride(),
        *delta.stride(),
        *A.stride(),
        *B.stride(),
        *C.stride(),
    )
    ends, decays = torch.empty_like(h_inits), torch.empty_like(h_inits)
    # y stands in for dy, which this pass does not read
    chunk_ends[grid](
        u, delta, A, B, C, y, ends, decays, *common, *y.stride(), REVERSE=reverse, GRADIENT=False, **constants
    )
    _carry(ends, decays, h_inits, backward=False)
    chunk_output[grid](u, delta, A, B, C, h_inits, y, *common, *y.stride(), REVERSE=reverse, **constants)
    return y, h_inits


def backward(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    h_inits: torch.Tensor,
    dy: torch.Tensor,
    reverse: bool,
) -> tuple[torch.Tensor, ...]:
    """Gradients of (u, delta, A, B, C) from the chunk states `forward` returned."""
    batch, channels, length = u.shape
    nstate = A.shape[1]
    chunk, chunks = _chunking(length)
    dtype = delta.dtype
    # every element of these is written by `chunk_gradients` (or there are none)
    du, ddelta = (u.new_empty(batch, length, channels, dtype=dtype) for _ in range(2))
    grid, constants = _launch(delta, A, chunk, chunks, GRAD_BLOCK_D)
    blocks = grid[1]
    dA = u.new_empty(batch, chunks, channels, nstate, dtype=dtype)
    dB, dC = (u.new_empty(batch, blocks, length, nstate, dtype=dtype) for _ in range(2))
    if u.numel():
        common = (
            length,
            channels,
            nstate,
            chunks,
            *u.stride(),
            *delta.stride(),
            *A.stride(),
            *B.stride(),
            *C.stride(),
            *dy.stride(),
        )
        ends, decays, g_inits = (torch.empty_like(h_inits) for _ in range(3))
        ends_grid, ends_constants = _launch(delta, A, chunk, chunks, BLOCK_D)
        chunk_ends[ends_grid](
            u, delta, A, B, C, dy, ends, decays, *common, REVERSE=reverse, GRADIENT=True, **ends_constants
        )
        _carry(ends, decays, g_inits, backward=True)
        chunk_gradients[grid](
            u,
            delta,
            A,
            B,
            C,
            dy,
            h_inits,
            g_inits,
            du,
            ddelta,
            dA,
            dB,
            dC,
            *common[:4],
            blocks,
            *common[4:],
            REVERSE=reverse,
            **constants,
        )
    return (
        du.transpose(1, 2),
        ddelta.transpose(1, 2),
        dA.sum((0, 1)),
        dB.sum(1).transpose(1, 2),
        dC.sum(1).transpose(1, 2),
    )


def _chunking(length: int) -> tuple[int, int]:
    """(steps per chunk, number of chunks) of a sequence."""
    chunk = min(CHUNK, triton.next_power_of_2(max(length, 1)))
    return chunk, triton.cdiv(length, chunk)


def _launch(
    delta: torch.Tensor, A: torch.Tensor, chunk: int, chunks: int, block_d: int
) -> tuple[tuple, dict]:
    """The (chunks, channel blocks, batch) grid and the compile-time constants of the per-chunk kernels."""
    batch, channels, _ = delta.shape
    constants = {
        "DTYPE": _dtype(delta),
        "BLOCK_D": block_d,
        "BLOCK_N": triton.next_power_of_2(A.shape[1]),
        "CHUNK": chunk,
        "num_warps": NUM_WARPS,
    }
    return (chunks, triton.cdiv(channels, block_d), batch), constants


def _carry(ends: torch.Tensor, decays: torch.Tensor, inits: torch.Tensor, backward: bool) -> None:
    """Fill `inits` (batch, chunks, D, N) with the state entering each chunk (from after it, backward)."""
    batch, chunks, channels, nstate = ends.shape
    lanes = channels * nstate
    carry[(batch, triton.cdiv(lanes, CARRY_LANES))](
        ends,
        decays,
        inits,
        chunks,
        lanes,
        DTYPE=_dtype(ends),
        BLOCK_LANES=CARRY_LANES,
        CARRY_CHUNKS=min(CARRY_CHUNKS, triton.next_power_of_2(chunks)),
        BACKWARD=backward,
        num_warps=NUM_WARPS,
    )


def _dtype(t: torch.Tensor) -> tl.dtype:
    return tl.float64 if t.dtype == torch.float64 else tl.float32
