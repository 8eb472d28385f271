"""The `export` backend's scan and conv (mma.ops.scan_export) against the float64 reference.

tests/test_ops.py runs every usable backend, this one included, through its general cases (gradients,
strides, half precision, L = 65,536); here are the cases its chunked formulation could get wrong: lengths
around the chunk size and the doubling offsets, one token, many chunks, both directions at extreme delta.
"""

from __future__ import annotations

import pytest
import torch

from mma.errors import ConfigError
from mma.model import build_model
from mma.ops import causal_conv1d, reference, resolve_backend, scan_export, selective_scan
from mma.ops.testing import scan_inputs

CHUNK = scan_export.CHUNK


def _inputs(batch=2, dch=5, n=4, length=50, delta_scale=1.0, a_scale=1.0, seed=0):
    return scan_inputs(batch, dch, length, n, delta_scale=delta_scale, a_scale=a_scale, seed=seed)


def _rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    assert torch.isfinite(out).all(), "non-finite output"
    return ((out.double() - ref.double()).abs().max() / ref.double().abs().max()).item()


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("length", [1, 2, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 5, 33 * CHUNK - 7])
def test_scan_matches_reference_at_any_length(length, reverse):
    x = _inputs(length=length, seed=length)
    out = scan_export.selective_scan(**x, delta_softplus=True, reverse=reverse)
    ref = reference.selective_scan(**x, delta_softplus=True, reverse=reverse)
    assert out.shape == ref.shape and out.dtype == torch.float32
    assert _rel_err(out, ref) <= 1e-5


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize(("delta_scale", "a_scale"), [(10.0, 20.0), (30.0, 1.0), (1e-3, 1e-3)])
def test_scan_extreme_delta_in_both_directions(delta_scale, a_scale, reverse):
    """Decays from exp(-1000) (underflow to 0, never NaN) to 1 - 1e-6 (states that barely decay)."""
    x = _inputs(length=5 * CHUNK + 3, delta_scale=delta_scale, a_scale=a_scale)
    out = scan_export.selective_scan(**x, delta_softplus=True, reverse=reverse)
    ref = reference.selective_scan(**x, delta_softplus=True, reverse=reverse)
    assert _rel_err(out, ref) <= 1e-5


@pytest.mark.parametrize("reverse", [False, True])
def test_state_crosses_many_chunks(reverse):
    """Tiny decays carry one token's input through every chunk: the cross-chunk doubling must compose them."""
    length = 70 * CHUNK + 9
    x = _inputs(batch=1, dch=2, n=2, length=length, delta_scale=0.0)
    x["u"].zero_()
    x["u"][..., length - 1 if reverse else 0] = 1.0
    x["delta_bias"] = torch.full((2,), -6.0)  # delta = softplus(-6) = 2.5e-3, decay over L about 0.5
    x["A"] = -torch.ones(2, 2) * 0.3
    out = scan_export.selective_scan(**x, delta_softplus=True, reverse=reverse)
    ref = reference.selective_scan(**x, delta_softplus=True, reverse=reverse)
    far_end = out[..., 0 if reverse else -1]
    assert far_end.abs().min() > 0 and _rel_err(out, ref) <= 1e-5


def test_scan_without_optional_inputs_and_in_float64():
    x = _inputs(length=40)
    x["delta"] = x["delta"].abs()
    plain = {k: x[k].double() for k in ("u", "delta", "A", "B", "C")}
    out = scan_export.selective_scan(**plain)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, reference.selective_scan(**plain), rtol=1e-12, atol=1e-12)


def test_too_long_a_sequence_is_refused(monkeypatch):
    monkeypatch.setattr(scan_export, "MAX_LENGTH", 100)
    with pytest.raises(ConfigError, match="at most 100 tokens"):
        scan_export.selective_scan(**_inputs(length=101))


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("length", [1, 3, 30])
def test_conv_matches_reference(length, reverse):
    g = torch.Generator().manual_seed(3)
    x, weight, bias = torch.randn(2, 6, length, generator=g), torch.randn(6, 4, generator=g), torch.randn(6)
    out = scan_export.causal_conv1d(x, weight, bias, "silu", reverse=reverse)
    ref = reference.causal_conv1d(x, weight, bias, "silu", reverse=reverse)
    assert out.shape == (2, 6, length) and _rel_err(out, ref) <= 1e-6


def test_chosen_by_name_and_by_environment(monkeypatch):
    x = _inputs(length=20)
    expected = scan_export.selective_scan(**x, delta_softplus=True)
    assert resolve_backend("export", "cpu") == "export"
    assert torch.equal(selective_scan(**x, delta_softplus=True, backend="export"), expected)
    monkeypatch.setenv("MMA_SCAN_BACKEND", "export")
    assert torch.equal(selective_scan(**x, delta_softplus=True), expected)
    conv_input, weight = torch.randn(1, 5, 9), torch.randn(5, 4)
    assert torch.equal(causal_conv1d(conv_input, weight), scan_export.causal_conv1d(conv_input, weight))


def test_network_output_equals_the_default_backend():
    model = build_model("mma-t", 2, num_feat=8, num_block=1).eval()
    image = torch.rand(1, 3, 9, 11, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected = model(image)
        out = model.set_scan_backend("export")(image)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
