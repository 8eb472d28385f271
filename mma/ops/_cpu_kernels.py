"""numba kernels of the CPU selective scan (forward, and backward with recomputation).

Layout: every (batch, X, L) input arrives as a flat 1-D buffer plus its three element strides, so any
torch view (the model's channels-last transposes included) is read in place, and numba compiles one
variant per dtype only. The forward also reads bfloat16 inputs in place, passed as int16 buffers of their
bits and widened to float32 as they are loaded (`widen`): no float32 copy of the inputs is made. Work is split over (batch, block of `BLOCK` channels); the inner loops run over
the channels of a block with a constant trip count, which LLVM vectorises (at 16 it treats the loop as
too short to vectorise the backward, hence 32), with the N states of each channel in a local array.
The transcendental functions (exp of the decays, softplus of delta, SiLU of z) are written so that
LLVM can vectorise them too (libm's exp it cannot); in float64 they are the exact libm forms.

Backward recomputes the states chunk by chunk from the checkpoints that forward stores every `CHUNK`
steps, then walks each chunk backwards. Gradients of B and C sum over channels; each worker adds into
its own slice (`parts` axis) and the caller sums the slices.

The kernels are serial over a range of jobs and release the GIL; the caller runs ranges on Python
threads. numba's own parallel layer is avoided on purpose: its GNU OpenMP layer aborts a forked child
that uses it, and its fallback layer aborts on concurrent calls from several threads.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload

BLOCK = 32
CHUNK = 64

_LOG2E = np.float32(1.4426950408889634)
_LN2 = np.float32(0.6931471805599453)
_LO = np.float32(-87.0)  # below this exp() is < 2^-125: treated as that tiny value
_HI = np.float32(88.0)  # above this float32 exp() overflows: clamped to stay finite
_HALF = np.float32(0.5)
# Taylor coefficients 1/k! of exp(r) for |r| <= ln(2)/2; degree 6 leaves a relative error near 1e-7.
_P = tuple(np.float32(1.0 / math.factorial(k)) for k in range(7))
# 2/(2k+1): log1p(v) = 2 atanh(s) = sum_k 2 s^(2k+1)/(2k+1), s = v/(2+v) <= 1/3, error below 2e-9.
_Q = tuple(np.float32(2.0 / (2 * k + 1)) for k in range(9))
_TWO = np.float32(2.0)
_ZERO = np.float32(0.0)
_ONE = np.float32(1.0)  # typed constants: a Python literal would promote float32 arithmetic to float64
_SOFTPLUS_LINEAR = 20.0  # softplus(x) = x above this, as in torch and mamba


def _jit(**options):
    """njit with an on-disk cache when a writable cache location exists (site-packages or the user's)."""

    def wrap(fn):
        try:
            return numba.njit(cache=True, **options)(fn)
        except RuntimeError:  # numba found no writable cache directory: compile per process instead
            return numba.njit(cache=False, **options)(fn)

    return wrap


@intrinsic
def _float32_from_bits(typingctx, bits):
    """Reinterpret the low 32 bits of an integer as a float32 (LLVM trunc + bitcast: vectorisable)."""
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        low = builder.trunc(args[0], ir.IntType(32)) if bits.bitwidth > 32 else args[0]
        return builder.bitcast(low, ir.FloatType())

    return types.float32(bits), codegen


def fast_exp(x):
    """exp(x); float32: 2^k * p(r) with k from the exponent bits, vectorisable. float64: math.exp."""
    return math.exp(x)


@overload(fast_exp)
def _fast_exp_overload(x):
    if x != types.float32:
        return lambda x: math.exp(x)

    def exp32(x):
        x = min(max(x, _LO), _HI)
        k = np.floor(x * _LOG2E + _HALF)  # x = k ln2 + r, |r| <= ln2 / 2
        r = x - k * _LN2
        p = _P[6]
        p = p * r + _P[5]
        p = p * r + _P[4]
        p = p * r + _P[3]
        p = p * r + _P[2]
        p = p * r + _P[1]
        p = p * r + _P[0]
        return p * _float32_from_bits((np.int32(k) + 127) << 23)  # p * 2^k

    return exp32


def widen(x):
    """A stored value as arithmetic: float as it is; int16 as the bits of a bfloat16 (its float32 value)."""
    return x


@overload(widen)
def _widen_overload(x):
    if x == types.int16:
        # bfloat16 is the top half of a float32: shift its bits up and reinterpret (vectorisable)
        return lambda x: _float32_from_bits((np.int32(x) & 0xFFFF) << 16)
    return lambda x: x


def softplus(x):
    """log(1 + exp(x)) without overflow; float32 form vectorisable, float64 via libm."""
    return max(x, 0.0) + math.log1p(math.exp(-abs(x))) if x <= _SOFTPLUS_LINEAR else x


@overload(softplus)
def _softplus_overload(x):
    if x != types.float32:
        return lambda x: max(x, 0.0) + math.log1p(math.exp(-abs(x))) if x <= _SOFTPLUS_LINEAR else x

    def softplus32(x):
        v = fast_exp(-abs(x))
        s = v / (_TWO + v)
        s2 = s * s
        q = (
            ((((((_Q[8] * s2 + _Q[7]) * s2 + _Q[6]) * s2 + _Q[5]) * s2 + _Q[4]) * s2 + _Q[3]) * s2 + _Q[2])
            * s2
            + _Q[1]
        ) * s2 + _Q[0]
        y = max(x, _ZERO) + s * q
        return x if x > _SOFTPLUS_LINEAR else y

    return softplus32


_OPTS = {"nogil": True, "fastmath": {"contract", "reassoc", "arcp"}, "error_model": "numpy"}


@_jit(inline="always", **_OPTS)
def _load(flat, base, stride, c0, dch, dst):
    """dst[c] = channel c0 + c of one (batch, time) row; lanes past the last channel repeat it.

    Every lane stays finite and every loop keeps the constant trip count BLOCK; the unit-stride branch
    is the channels-last layout the model passes (plain vector loads instead of gathers).
    """
    if stride == 1 and c0 + BLOCK <= dch:
        for c in range(BLOCK):
            dst[c] = widen(flat[base + c0 + c])
    else:
        for c in range(BLOCK):
            dst[c] = widen(flat[base + min(c0 + c, dch - 1) * stride])


@_jit(inline="always", **_OPTS)
def _load_step(b, t, c0, dch, u, su, delta, sd, z, sz, bias, has_gate, delta_softplus, uu, pre, dt, zz, g):
    """Channels c0.. at (b, t): u, delta + bias, delta after softplus, z and the gate SiLU(z)."""
    _load(u, b * su[0] + t * su[2], su[1], c0, dch, uu)
    _load(delta, b * sd[0] + t * sd[2], sd[1], c0, dch, pre)
    for c in range(BLOCK):
        pre[c] += bias[c]
        dt[c] = softplus(pre[c]) if delta_softplus else pre[c]
    if has_gate:
        _load(z, b * sz[0] + t * sz[2], sz[1], c0, dch, zz)
        for c in range(BLOCK):
            g[c] = zz[c] / (_ONE + fast_exp(-zz[c]))


@_jit(**_OPTS)
def _forward_rows(
    b,
    k0,
    k1,
    u,
    su,
    delta,
    sd,
    z,
    sz,
    Bm,
    sb,
    Cm,
    sc,
    At,
    Dv,
    bias,
    has_gate,
    delta_softplus,
    reverse,
    out,
    ckpt,
):
    """The scan of channel blocks k0 .. k1-1 of batch item b (see `scan_forward`).

    Time is the outer loop and the blocks the inner one, so each step reads one run of adjacent channels of
    the channels-last rows (and B, C once for all blocks) instead of sweeping the whole sequence once per
    block (docs/benchmarks.md, "CPU pace").
    """
    length, dch = out.shape[1], out.shape[2]
    nstate = At.shape[0]
    nb = k1 - k0
    dtype = out.dtype
    h = np.zeros((nb, nstate, BLOCK), dtype)
    a_log = np.empty((nb, nstate, BLOCK), dtype)
    skip = np.empty((nb, BLOCK), dtype)
    bias_c = np.empty((nb, BLOCK), dtype)
    uu = np.empty(BLOCK, dtype)
    pre = np.empty(BLOCK, dtype)
    dt = np.empty(BLOCK, dtype)
    zz = np.empty(BLOCK, dtype)
    g = np.ones(BLOCK, dtype)
    du = np.empty(BLOCK, dtype)
    y = np.empty(BLOCK, dtype)
    bt = np.empty(nstate, dtype)
    ct = np.empty(nstate, dtype)
    for j in range(nb):
        c0 = (k0 + j) * BLOCK
        for n in range(nstate):
            _load(At[n], 0, 1, c0, dch, a_log[j, n])
        _load(Dv, 0, 1, c0, dch, skip[j])
        _load(bias, 0, 1, c0, dch, bias_c[j])
    for s in range(length):
        t = length - 1 - s if reverse else s
        for n in range(nstate):
            bt[n] = widen(Bm[b * sb[0] + n * sb[1] + t * sb[2]])
            ct[n] = widen(Cm[b * sc[0] + n * sc[1] + t * sc[2]])
        for j in range(nb):
            c0 = (k0 + j) * BLOCK
            w = min(BLOCK, dch - c0)
            if ckpt.size > 0 and s % CHUNK == 0:
                for n in range(nstate):
                    for c in range(w):
                        ckpt[b, s // CHUNK, n, c0 + c] = h[j, n, c]
            _load_step(
                b,
                t,
                c0,
                dch,
                u,
                su,
                delta,
                sd,
                z,
                sz,
                bias_c[j],
                has_gate,
                delta_softplus,
                uu,
                pre,
                dt,
                zz,
                g,
            )
            for c in range(BLOCK):
                du[c] = dt[c] * uu[c]
                y[c] = skip[j, c] * uu[c]
            for n in range(nstate):
                bn = bt[n]
                cn = ct[n]
                for c in range(BLOCK):
                    hn = fast_exp(dt[c] * a_log[j, n, c]) * h[j, n, c] + du[c] * bn
                    h[j, n, c] = hn
                    y[c] += hn * cn
            for c in range(w):
                out[b, t, c0 + c] = y[c] * g[c]


@_jit(**_OPTS)
def scan_forward(
    first_job,
    end_job,
    groups,
    u,
    su,
    delta,
    sd,
    z,
    sz,
    Bm,
    sb,
    Cm,
    sc,
    At,
    Dv,
    bias,
    has_gate,
    delta_softplus,
    reverse,
    out,
    ckpt,
):
    """out[b, t, c] = (<C_t, h_t> + D u_t) * SiLU(z_t); the states go to ckpt every CHUNK steps.

    u/delta/z: flat buffers with strides (batch, channel, time); Bm/Cm likewise (batch, state, time).
    At: A transposed (N, Dch); Dv, bias: (Dch,); delta_t = softplus(delta + bias) if delta_softplus.
    out: (batch, L, Dch); ckpt: (batch, chunks, N, Dch), or size 0 to keep none. Runs jobs
    first_job .. end_job - 1 of the batch x `groups` grid: a job is one batch item's share of the channel
    blocks, split into `groups` runs of adjacent blocks (as many as there are threads for one item).
    """
    nblocks = (out.shape[2] + BLOCK - 1) // BLOCK
    for job in range(first_job, end_job):
        group = job % groups
        _forward_rows(
            job // groups,
            nblocks * group // groups,
            nblocks * (group + 1) // groups,
            u,
            su,
            delta,
            sd,
            z,
            sz,
            Bm,
            sb,
            Cm,
            sc,
            At,
            Dv,
            bias,
            has_gate,
            delta_softplus,
            reverse,
            out,
            ckpt,
        )


@_jit(**_OPTS)
def _backward_block(
    b,
    c0,
    part,
    first,
    u,
    su,
    delta,
    sd,
    z,
    sz,
    Bm,
    sb,
    Cm,
    sc,
    At,
    Dv,
    bias,
    has_gate,
    delta_softplus,
    reverse,
    ckpt,
    grad,
    sgr,
    du_out,
    ddelta_out,
    dz_out,
    dB_parts,
    dC_parts,
    dA_parts,
    dD_parts,
    dbias_parts,
):
    """Gradients from channels c0 .. c0+BLOCK-1 of batch item b (see `scan_backward`)."""
    length, dch = du_out.shape[1], du_out.shape[2]
    nstate = At.shape[0]
    w = min(BLOCK, dch - c0)
    dtype = du_out.dtype
    hs = np.empty((CHUNK + 1, nstate, BLOCK), dtype)  # states of the chunk, hs[i + 1] after its step i
    decays = np.empty((CHUNK, nstate, BLOCK), dtype)
    us = np.empty((CHUNK, BLOCK), dtype)
    dts = np.empty((CHUNK, BLOCK), dtype)
    ys = np.empty((CHUNK, BLOCK), dtype)  # scan output before the gate
    pres = np.empty((CHUNK, BLOCK), dtype)  # delta + bias
    a_log = np.empty((nstate, BLOCK), dtype)
    skip = np.empty(BLOCK, dtype)
    bias_c = np.empty(BLOCK, dtype)
    dh = np.zeros((nstate, BLOCK), dtype)
    dA = np.zeros((nstate, BLOCK), dtype)
    dD = np.zeros(BLOCK, dtype)
    dbias = np.zeros(BLOCK, dtype)
    zz = np.empty(BLOCK, dtype)
    g = np.ones(BLOCK, dtype)
    gr = np.empty(BLOCK, dtype)
    gy = np.empty(BLOCK, dtype)
    dus = np.empty(BLOCK, dtype)
    ddt = np.empty(BLOCK, dtype)
    zero = np.zeros(1, dtype)[0]
    for n in range(nstate):
        _load(At[n], 0, 1, c0, dch, a_log[n])
    _load(Dv, 0, 1, c0, dch, skip)
    _load(bias, 0, 1, c0, dch, bias_c)
    for k in range((length + CHUNK - 1) // CHUNK - 1, -1, -1):
        s0 = k * CHUNK
        steps = min(CHUNK, length - s0)
        for n in range(nstate):
            for c in range(BLOCK):
                hs[0, n, c] = ckpt[b, k, n, min(c0 + c, dch - 1)]
        for i in range(steps):  # recompute the chunk as forward did
            t = length - 1 - (s0 + i) if reverse else s0 + i
            _load_step(
                b,
                t,
                c0,
                dch,
                u,
                su,
                delta,
                sd,
                z,
                sz,
                bias_c,
                False,
                delta_softplus,
                us[i],
                pres[i],
                dts[i],
                zz,
                g,
            )
            for c in range(BLOCK):
                ys[i, c] = skip[c] * us[i, c]
            for n in range(nstate):
                bn = Bm[b * sb[0] + n * sb[1] + t * sb[2]]
                cn = Cm[b * sc[0] + n * sc[1] + t * sc[2]]
                for c in range(BLOCK):
                    a = fast_exp(dts[i, c] * a_log[n, c])
                    decays[i, n, c] = a
                    hn = a * hs[i, n, c] + dts[i, c] * us[i, c] * bn
                    hs[i + 1, n, c] = hn
                    ys[i, c] += hn * cn
        for i in range(steps - 1, -1, -1):
            t = length - 1 - (s0 + i) if reverse else s0 + i
            if has_gate:
                _load(z, b * sz[0] + t * sz[2], sz[1], c0, dch, zz)
                for c in range(BLOCK):
                    g[c] = zz[c] / (_ONE + fast_exp(-zz[c]))
            _load(grad, b * sgr[0] + t * sgr[2], sgr[1], c0, dch, gr)
            for c in range(BLOCK):
                gy[c] = gr[c] * g[c] if c < w else zero  # lanes past the last channel carry no gradient
                dD[c] += gy[c] * us[i, c]
                dus[c] = gy[c] * skip[c]
                ddt[c] = zero
            for n in range(nstate):
                bn = Bm[b * sb[0] + n * sb[1] + t * sb[2]]
                cn = Cm[b * sc[0] + n * sc[1] + t * sc[2]]
                dBn = zero
                dCn = zero
                for c in range(BLOCK):
                    dCn += gy[c] * hs[i + 1, n, c]
                    d = dh[n, c] + gy[c] * cn  # dL/dh_t
                    dBn += d * dts[i, c] * us[i, c]
                    dus[c] += d * dts[i, c] * bn
                    da = d * hs[i, n, c] * decays[i, n, c]  # dL/d(delta_t A)
                    ddt[c] += d * bn * us[i, c] + da * a_log[n, c]
                    dA[n, c] += da * dts[i, c]
                    dh[n, c] = d * decays[i, n, c]
                if first:
                    dB_parts[part, b, t, n] = dBn
                    dC_parts[part, b, t, n] = dCn
                else:
                    dB_parts[part, b, t, n] += dBn
                    dC_parts[part, b, t, n] += dCn
            if delta_softplus:  # softplus'(x) = sigmoid(x)
                for c in range(BLOCK):
                    ddt[c] = ddt[c] / (_ONE + fast_exp(-pres[i, c]))
            for c in range(BLOCK):
                dbias[c] += ddt[c]
            for c in range(w):
                du_out[b, t, c0 + c] = dus[c]
                ddelta_out[b, t, c0 + c] = ddt[c]
            if has_gate:  # SiLU'(z) = s (1 + z (1 - s)), s = sigmoid(z) = SiLU(z) / z
                for c in range(BLOCK):
                    sig = _ONE / (_ONE + fast_exp(-zz[c]))
                    zz[c] = gr[c] * ys[i, c] * sig * (_ONE + zz[c] * (_ONE - sig))
                for c in range(w):
                    dz_out[b, t, c0 + c] = zz[c]
    for c in range(w):
        dD_parts[b, c0 + c] = dD[c]
        dbias_parts[b, c0 + c] = dbias[c]
        for n in range(nstate):
            dA_parts[b, n, c0 + c] = dA[n, c]


@_jit(**_OPTS)
def scan_backward(
    first_job,
    end_job,
    u,
    su,
    delta,
    sd,
    z,
    sz,
    Bm,
    sb,
    Cm,
    sc,
    At,
    Dv,
    bias,
    has_gate,
    delta_softplus,
    reverse,
    ckpt,
    grad,
    sgr,
    du_out,
    ddelta_out,
    dz_out,
    dB_parts,
    dC_parts,
    dA_parts,
    dD_parts,
    dbias_parts,
):
    """Gradients of `scan_forward` given dL/d(out) in `grad` (flat, strides as u's).

    Writes du/ddelta/dz (batch, L, Dch), ddelta w.r.t. delta before bias and softplus, and partial sums:
    dB_parts/dC_parts (parts, batch, L, N) over channels, one slice per worker of a batch item;
    dA_parts (batch, N, Dch), dD_parts and dbias_parts (batch, Dch) over time. Runs jobs first_job ..
    end_job - 1 of the batch x parts grid (one job = the blocks of one part of one batch item).
    """
    dch = du_out.shape[2]
    nblocks = (dch + BLOCK - 1) // BLOCK
    parts = dB_parts.shape[0]
    per_part = (nblocks + parts - 1) // parts
    for job in range(first_job, end_job):
        b = job // parts
        part = job % parts
        for blk in range(part * per_part, min(nblocks, (part + 1) * per_part)):
            _backward_block(
                b,
                blk * BLOCK,
                part,
                blk == part * per_part,
                u,
                su,
                delta,
                sd,
                z,
                sz,
                Bm,
                sb,
                Cm,
                sc,
                At,
                Dv,
                bias,
                has_gate,
                delta_softplus,
                reverse,
                ckpt,
                grad,
                sgr,
                du_out,
                ddelta_out,
                dz_out,
                dB_parts,
                dC_parts,
                dA_parts,
                dD_parts,
                dbias_parts,
            )
