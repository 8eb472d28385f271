"""The inference path (in-place tails, split in_proj, upsampler in bands) computes
what the plain autograd path computes, up to float32 rounding; the plain path is the reference
(tests/test_model.py checks it against an independent float64 implementation)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mma.model import build_model, network
from mma.model.blocks import may_overwrite
from mma.model.network import float32_output


def _reference(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.enable_grad():  # autograd on: every layer takes its out-of-place path
        assert not may_overwrite()
        return model(x).detach()


def _inference(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        assert may_overwrite()
        return model(x)


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("mixer", ["vim+ca", "vim", "cnn+ca"])
def test_inference_path_equals_the_reference_path(monkeypatch, scale, mixer):
    monkeypatch.setattr(network, "UPSAMPLE_BAND_PIXELS", 150)  # several bands, uneven last one
    torch.manual_seed(scale)
    model = build_model("mma-t", scale, num_block=2, mixer=mixer).eval()
    x = torch.rand(2, 3, 23, 31)
    before = x.clone()
    expected = _reference(model, x)
    got = _inference(model, x)
    assert torch.equal(x, before)  # the caller's input is never written
    assert got.shape == expected.shape == (2, 3, 23 * scale, 31 * scale)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_bands_need_their_halo(monkeypatch):
    """Without the halo the band edges differ: the test above would notice a halo that is too small."""
    monkeypatch.setattr(network, "UPSAMPLE_BAND_PIXELS", 150)
    monkeypatch.setattr(network, "UPSAMPLE_HALO", 0)
    torch.manual_seed(0)
    model = build_model("mma-t", 2, num_block=1).eval()
    x = torch.rand(1, 3, 20, 30)
    assert not torch.allclose(_inference(model, x), _reference(model, x), atol=1e-4)


def test_small_inputs_skip_the_bands(monkeypatch):
    calls = []
    model = build_model("mma-t", 2, num_block=1).eval()
    monkeypatch.setattr(model, "_tail_in_bands", lambda *args: calls.append(args))
    _inference(model, torch.rand(1, 3, 8, 8))
    assert calls == []


def test_state_dict_names_are_unchanged():
    names = list(build_model("mma-t", 4).state_dict())
    assert "upsample.0.weight" in names and "upsample.2.weight" in names
    assert not any(name.startswith(("upsample.1", "upsample.3")) for name in names)


def test_half_precision_output_leaves_in_float32_when_asked():
    """The last conv and the mean run in float32 after a bf16 body: no bf16 rounding of the output itself
    where the engine asks for it; a plain module call gets the dtype it put in."""
    torch.manual_seed(0)
    model = build_model("mma-t", 2, num_block=1).eval()
    x = torch.rand(1, 3, 12, 10)
    exact = _inference(model, x)
    half = model.to(torch.bfloat16)
    assert _inference(half, x.to(torch.bfloat16)).dtype == torch.bfloat16
    with float32_output():
        got = _inference(half, x.to(torch.bfloat16))
    assert got.dtype == torch.float32
    rounded_output = _reference(half, x.to(torch.bfloat16)).float()
    assert (got - exact).abs().mean() < (rounded_output - exact).abs().mean()
