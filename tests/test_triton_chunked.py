"""The chunked Triton scan (`mma.ops._triton_chunked`) against the float64 reference; the rule that picks it.

Without a GPU the kernels run in Triton's interpreter on CPU tensors (TRITON_INTERPRET=1), with small chunks
and channel blocks so that short sequences still span several chunks, several blocks of the carry walk, a
partial last chunk and a partial channel block. With a GPU the same tests run the compiled kernels.
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest
import torch
from test_ops import _inputs, _rel_err

from mma.ops import reference, scan_triton
from mma.runtime import assumed_absent

HAS_TRITON = importlib.util.find_spec("triton") is not None and not assumed_absent("triton")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if HAS_TRITON and DEVICE == "cpu":
    os.environ["TRITON_INTERPRET"] = "1"  # read when the kernel modules are first imported

pytestmark = pytest.mark.skipif(
    not HAS_TRITON, reason="triton is not installed (or MMA_ASSUME_ABSENT names it)"
)


@pytest.fixture(scope="module", autouse=True)
def fast_interpreter():
    """Triton's interpreter runs `tl.associative_scan` with a user combine one tile element at a time (about
    0.5 ms each); here it runs one step along the scanned axis at a time, the combine applied to whole slices.
    Same order of combination, so the kernels compute the same values, a hundred times sooner."""
    if DEVICE != "cpu":
        yield
        return
    from triton.runtime import interpreter

    def scan_by_slices(self, inputs):
        data = [np.moveaxis(t.handle.data, self.axis, 0) for t in inputs]
        outputs = [np.empty_like(d) for d in data]
        carried = [d[0] for d in data]
        for out, value in zip(outputs, carried):
            out[0] = value
        for i in range(1, data[0].shape[0]):
            pairs = [self.to_tensor(c, t.dtype) for c, t in zip(carried, inputs)]
            pairs += [self.to_tensor(d[i], t.dtype) for d, t in zip(data, inputs)]
            combined = self.combine_fn.fn(*pairs)
            combined = combined if isinstance(combined, tuple) else (combined,)
            carried = [np.reshape(c.handle.data, out[i].shape) for c, out in zip(combined, outputs)]
            for out, value in zip(outputs, carried):
                out[i] = value
        return [self.to_tensor(np.moveaxis(out, 0, self.axis), t.dtype) for out, t in zip(outputs, inputs)]

    with pytest.MonkeyPatch.context() as patch:
        if hasattr(interpreter, "ScanOps") and hasattr(interpreter.ScanOps, "generic_scan"):
            patch.setattr(interpreter.ScanOps, "generic_scan", scan_by_slices)
        yield


@pytest.fixture
def small_chunks(monkeypatch):
    """8-step chunks, 4-channel blocks and a carry walk of 2 chunks a step: every boundary in a few tokens."""
    from mma.ops import _triton_chunked

    sizes = {"CHUNK": 8, "BLOCK_D": 4, "GRAD_BLOCK_D": 4, "CARRY_CHUNKS": 2, "CARRY_LANES": 8}
    for name, value in sizes.items():
        monkeypatch.setattr(_triton_chunked, name, value)


def _on_device(x: dict) -> dict:
    return {k: v.detach().to(DEVICE).requires_grad_(v.requires_grad) for k, v in x.items()}


def _check_against_reference(x: dict, reverse: bool, out_tol: float = 1e-5, grad_tol: float = 1e-4) -> None:
    """Forward and the gradients of all eight inputs, chunked kernels against the float64 reference."""
    x = {k: v.detach().requires_grad_(True) for k, v in x.items()}
    x_dev = _on_device(x)
    out = scan_triton.selective_scan(**x_dev, delta_softplus=True, reverse=reverse, method="chunked")
    ref = reference.selective_scan(**x, delta_softplus=True, reverse=reverse)
    assert out.shape == ref.shape and out.dtype == x["u"].dtype
    assert _rel_err(out.cpu(), ref) <= out_tol
    weight = torch.randn(ref.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    grads = torch.autograd.grad((out.double() * weight.to(DEVICE)).sum(), list(x_dev.values()))
    ref_grads = torch.autograd.grad((ref.double() * weight).sum(), list(x.values()))
    for name, g, r in zip(x, grads, ref_grads):
        assert g.dtype == x[name].dtype, name
        if r.abs().max() == 0:  # dA of a single token: no earlier state for the decay to act on
            assert torch.isfinite(g).all() and g.abs().max() == 0, name
        else:
            assert _rel_err(g.cpu(), r) <= grad_tol, name


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("batch", [1, 2])
def test_chunked_matches_reference(small_chunks, batch, reverse):
    # 5 channels (a partial block), 3 states (padded to 4), 21 tokens (2 full chunks and a partial one)
    _check_against_reference(_inputs(batch=batch, dch=5, n=3, length=21), reverse)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("length", [1, 8, 16])
def test_chunked_short_sequences(small_chunks, length, reverse):
    """One token, exactly one chunk, exactly two chunks."""
    _check_against_reference(_inputs(batch=2, dch=3, n=2, length=length, seed=length), reverse)


@pytest.mark.parametrize("reverse", [False, True])
def test_chunked_extreme_delta(small_chunks, reverse):
    x = _inputs(batch=1, dch=4, n=4, length=24)
    x["delta"] = x["delta"] * 10.0  # softplus inputs from about -40 to +40: both tails of softplus
    x["A"] = x["A"] * 20.0  # decays down to exp(-1000): underflow, never NaN
    _check_against_reference(x, reverse)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_chunked_half_inputs_keep_their_dtype(small_chunks, dtype):
    x = {k: v.to(dtype) for k, v in _inputs(batch=1, dch=5, n=4, length=20).items()}
    _check_against_reference(x, reverse=True, out_tol=1e-2, grad_tol=3e-2)


def test_chunked_reads_any_strides(small_chunks):
    x = _inputs(batch=2, dch=5, n=4, length=20)
    x["u"] = torch.randn(2, 5, 40)[..., ::2]  # every other token
    x["B"] = torch.randn(1, 4, 20).expand(2, 4, 20)  # stride 0 over the batch
    x["C"] = torch.randn(4, 20, 2).permute(2, 0, 1)  # batch innermost
    x_dev = _on_device(x)
    out = scan_triton.selective_scan(**x_dev, delta_softplus=True, method="chunked")
    assert _rel_err(out.cpu(), reference.selective_scan(**x, delta_softplus=True)) <= 1e-5


def test_chunked_with_the_shipped_launch_shapes():
    """The real chunk length and block sizes (two chunks of 64, 16 states), forward and backward."""
    _check_against_reference(_inputs(batch=1, dch=9, n=16, length=70), reverse=True)


def test_chunked_without_autograd_matches_with_it(small_chunks):
    x = _on_device(_inputs(batch=2, dch=5, n=3, length=21))
    with torch.no_grad():
        plain = scan_triton.selective_scan(**x, delta_softplus=True, method="chunked")
    x = {k: v.requires_grad_(True) for k, v in x.items()}
    assert torch.equal(plain, scan_triton.selective_scan(**x, delta_softplus=True, method="chunked").detach())


@pytest.mark.slow  # about half a minute each in the interpreter
@pytest.mark.parametrize("reverse", [False, True])
def test_chunked_gradcheck_float64(small_chunks, reverse):
    x = _on_device(_inputs(batch=1, dch=3, n=2, length=9, dtype=torch.float64, grad=True))  # 2 chunks
    names = list(x)

    def f(*tensors):
        return scan_triton.selective_scan(
            **dict(zip(names, tensors)), delta_softplus=True, reverse=reverse, method="chunked"
        )

    assert torch.autograd.gradcheck(f, tuple(x.values()))


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ((1, 96, 65_536), "chunked"),
        ((16, 96, 4096), "chunked"),
        ((1, 96, 100), "sequential"),
        ((1024, 96, 4096), "sequential"),
    ],
)
def test_method_rule_by_shape(shape, expected):
    assert scan_triton.choose_method(*shape) == expected


def test_method_rule_follows_its_constants(monkeypatch):
    monkeypatch.setattr(scan_triton, "CHUNKED_MIN_LENGTH", 50)
    assert scan_triton.choose_method(1, 96, 100) == "chunked"
    monkeypatch.setattr(scan_triton, "SEQUENTIAL_MIN_PROGRAMS", 6)
    assert scan_triton.choose_method(1, 96, 100) == "sequential"


@pytest.mark.parametrize("forced", ["sequential", "chunked", " Chunked "])
def test_method_from_the_environment_overrides_the_rule(monkeypatch, forced):
    monkeypatch.setenv(scan_triton.METHOD_ENV_VAR, forced)
    for shape in ((1, 96, 65_536), (1, 96, 100), (1024, 96, 4096)):
        assert scan_triton.choose_method(*shape) == forced.strip().lower()


def test_method_auto_in_the_environment_keeps_the_rule(monkeypatch):
    monkeypatch.setenv(scan_triton.METHOD_ENV_VAR, "auto")
    assert scan_triton.choose_method(1, 96, 65_536) == "chunked"
    assert scan_triton.choose_method(1, 96, 100) == "sequential"


def test_unknown_method_in_the_environment_is_refused(monkeypatch):
    monkeypatch.setenv(scan_triton.METHOD_ENV_VAR, "parallel")
    with pytest.raises(ValueError, match="MMA_TRITON_METHOD='parallel' is not a method"):
        scan_triton.choose_method(1, 96, 100)


def test_unknown_method_is_refused():
    x = _inputs(batch=1, dch=2, n=2, length=3)
    with pytest.raises(ValueError, match="unknown method 'parallel'"):
        scan_triton.selective_scan(**x, method="parallel")
