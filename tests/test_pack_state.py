"""benchmarks/pack_state.py carries training states to the GPU machine at half their size: the EMA weights
must come back exactly, the rest close enough for training to go on from the same point."""

from __future__ import annotations

import copy

import pytest
import torch

from mma import load_model
from mma.model import build_model
from mma.train.state import STATE_FILE, load_state, save_state


@pytest.fixture(scope="module")
def pack_state(load_script):
    return load_script("benchmarks/pack_state.py")


def _trained_state() -> dict:
    """A training state as `mma train` writes it, of a tiny network after a few Adam steps."""
    torch.manual_seed(0)
    model = build_model("mma-t", 2, num_block=1, num_feat=8)
    ema = copy.deepcopy(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(3):
        optimizer.zero_grad()
        model(torch.rand(1, 3, 8, 8)).square().mean().backward()
        optimizer.step()
    with torch.no_grad():
        for mine, average in zip(ema.parameters(), model.parameters()):
            mine.copy_(0.9 * mine + 0.1 * average)
    return {
        "iteration": 3,
        "config": {"scale": 2},
        "model_config": model.config.to_dict(),
        "model": model.state_dict(),
        "ema": ema.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": {},
        "best": None,
        "validated_at": 0,
        "validations": [],
    }


def test_round_trip_keeps_the_ema_exactly_and_the_rest_closely(pack_state, tmp_path):
    run = tmp_path / "runs" / "tiny-x2"
    run.mkdir(parents=True)
    state = _trained_state()
    save_state(run / STATE_FILE, state)

    pack_state.pack(tmp_path / "packed", [run])
    packed = tmp_path / "packed" / f"tiny-x2{pack_state.SUFFIX}"
    assert packed.stat().st_size < 0.75 * (run / STATE_FILE).stat().st_size
    pack_state.unpack(tmp_path / "packed", tmp_path / "there")

    back = load_state(tmp_path / "there" / "tiny-x2" / STATE_FILE)
    assert back["iteration"] == 3 and back["model_config"] == state["model_config"]
    for name, tensor in state["ema"].items():
        assert torch.equal(back["ema"][name], tensor), name
    for name, tensor in state["model"].items():  # rounded to bfloat16 as a difference from the EMA
        assert back["model"][name].dtype == tensor.dtype
        error = (back["model"][name] - tensor).abs()
        assert (error <= 2**-8 * (tensor - state["ema"][name]).abs() + 1e-12).all(), name
    for index, entry in state["optimizer"]["state"].items():
        got = back["optimizer"]["state"][index]
        assert torch.equal(got["step"], entry["step"])
        assert not got["exp_avg"].any()  # first moments restart at zero
        assert torch.allclose(got["exp_avg_sq"], entry["exp_avg_sq"], rtol=1e-2, atol=0)
        assert torch.isfinite(got["exp_avg_sq"]).all()
    assert back["optimizer"]["param_groups"] == state["optimizer"]["param_groups"]

    # the EMA weights are also written as a weights file that loads as the network it came from
    loaded = load_model(tmp_path / "there" / "tiny-x2" / "ema.safetensors")
    for name, tensor in state["ema"].items():
        assert torch.equal(loaded.network.state_dict()[name], tensor), name


def test_a_grown_state_resumes_in_an_optimizer(pack_state):
    state = pack_state.grow(pack_state.shrink(_trained_state()))
    model = build_model("mma-t", 2, num_block=1, num_feat=8)
    model.load_state_dict(state["model"])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    optimizer.load_state_dict(state["optimizer"])
    model(torch.rand(1, 3, 8, 8)).square().mean().backward()
    optimizer.step()
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_unpack_refuses_a_file_of_another_kind(pack_state, tmp_path):
    (tmp_path / "packed").mkdir()
    torch.save({"format": "something-else"}, tmp_path / "packed" / f"x{pack_state.SUFFIX}")
    with pytest.raises(SystemExit, match="not a packed training state"):
        pack_state.unpack(tmp_path / "packed", tmp_path / "there")
