"""hubconf.py through torch.hub itself (source="local": the checkout, nothing downloaded)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mma.errors import ConfigError, WeightsNotFoundError
from mma.model import MMA
from mma.weights.checkpoint import load_checkpoint
from mma.weights.registry import BUNDLED_DIR

REPO = Path(__file__).resolve().parents[1]


def hub_load(entry: str, **kwargs: object) -> torch.nn.Module:
    return torch.hub.load(str(REPO), entry, source="local", **kwargs)


def test_pretrained_mma_t_holds_the_bundled_weights() -> None:
    model = hub_load("mma_t")  # defaults: x4, pretrained
    assert isinstance(model, MMA) and not model.training
    assert model.scale == 4
    bundled, _ = load_checkpoint(BUNDLED_DIR / "mma-t-x4" / "model.safetensors")
    state = model.state_dict()
    assert state.keys() == bundled.keys()
    assert all(torch.equal(state[key], bundled[key]) for key in bundled)


def test_pretrained_model_upscales_and_is_a_private_copy() -> None:
    first, second = hub_load("mma_t", scale=2), hub_load("mma_t", scale=2)
    assert first is not second  # fine-tuning one must not change the other (or mma.upscale's cache)
    with torch.no_grad():
        next(first.parameters()).add_(1.0)
        assert not torch.equal(next(first.parameters()), next(second.parameters()))
        out = second(torch.rand(1, 3, 5, 6))
    assert out.shape == (1, 3, 10, 12) and torch.isfinite(out).all()


def test_fresh_networks_take_architecture_overrides(host) -> None:
    host.native(fp16=False, bf16=True)  # a CPU without native bf16 would keep fp32 (with a warning)
    model = hub_load("mma_b", scale=3, num_block=1)
    assert isinstance(model, MMA) and not model.training
    assert (model.config.variant, model.scale, model.config.num_feat, model.config.num_block) == (
        "mma-b",
        3,
        192,
        1,
    )
    fresh = hub_load("mma_t", scale=2, pretrained=False, num_block=1, dtype="bf16")
    assert next(fresh.parameters()).dtype == torch.bfloat16


def test_pretrained_mma_b_says_there_are_no_weights() -> None:
    with pytest.raises(WeightsNotFoundError, match="no weights for mma-b x4"):
        hub_load("mma_b", pretrained=True)


def test_pretrained_rejects_architecture_overrides() -> None:
    with pytest.raises(ConfigError, match="num_block can only be changed with pretrained=False"):
        hub_load("mma_t", num_block=2)
