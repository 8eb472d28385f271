"""Continuing a run from its weights alone: the float16 continuation file, the re-warm-up of the learning
rate, and `mma train --resume --from-weights` (also the automatic fallback when a run has no state.ckpt)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_training_images
from safetensors.torch import load, save_file
from typer.testing import CliRunner

from mma.cli import app
from mma.errors import CheckpointError, ConfigError
from mma.train import TrainConfig, build_config, saved_config, start_decay_branch, train
from mma.train.continuation import (
    CONTINUATION_FILE,
    continuation_from_state,
    load_continuation,
    save_continuation,
)
from mma.train.distributed import setup
from mma.train.loop import Trainer
from mma.train.schedule import Schedule
from mma.train.state import load_state

TINY = {"num_feat": 8, "num_block": 1}


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_training_images(tmp_path_factory.mktemp("hr"), count=5, seed=1)


def _config(images: Path, out: Path, **changes: object) -> TrainConfig:
    values = {
        "train": [str(images)],
        "model": TINY,
        "patch": 8,
        "batch": 2,
        "iters": 4,
        "schedule": "constant",
        "lr": 1e-3,
        "log_every": 1,
        "save_every": 2,
        "val_every": 100,
        "workers": 0,
        "out": str(out),
        **changes,
    }
    return build_config(overrides=values)


# ----- the file -------------------------------------------------------------------------------------------


def test_the_file_round_trips_weights_in_float16_with_iteration_and_config(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    reference = {  # float64 truth, with extreme but representable magnitudes
        "a": rng.normal(0, 1, (3, 4)),
        "b": np.array([6.9, -6.9, 1e-3, -3e-5, 0.0, 1e-7]),
    }
    model = {k: torch.from_numpy(v).float() for k, v in reference.items()}
    ema = {k: v * 0.5 for k, v in model.items()}
    path = save_continuation(tmp_path / "c.safetensors", model, ema, 1234, {"scale": 4})
    back = load_continuation(path)
    assert back["iteration"] == 1234 and back["config"] == {"scale": 4}
    for name, truth in reference.items():
        raw, averaged = back["model"][name], back["ema"][name]
        assert raw.dtype == torch.float32 and not torch.isnan(raw).any()
        # float16 keeps 11 significant bits; below its normal range (6.1e-5) the absolute error is < 3e-8.
        bound = np.maximum(np.abs(truth) * 2.0**-11, 3e-8)
        assert np.all(np.abs(raw.double().numpy() - truth) <= bound)
        assert np.all(np.abs(averaged.double().numpy() - truth * 0.5) <= bound)
    assert {value.dtype for value in load(path.read_bytes()).values()} == {torch.float16}


def test_other_files_are_refused_with_one_line(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no such continuation file"):
        load_continuation(tmp_path / "absent.safetensors")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(CheckpointError, match="unreadable"):
        load_continuation(garbage)
    weights = tmp_path / "weights.safetensors"
    save_file({"w": torch.zeros(2)}, str(weights), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="unreadable|not a continuation"):
        load_continuation(weights)


# ----- the schedule ---------------------------------------------------------------------------------------


def test_a_rewarm_ramps_every_rate_from_its_start_branch_included() -> None:
    main = Schedule("constant", 4e-4, rewarm=4, rewarm_start=10)
    assert main.lr_at(9) == 4e-4
    assert [main.lr_at(i) for i in range(10, 15)] == pytest.approx([1e-4, 2e-4, 3e-4, 4e-4, 4e-4])
    branch = Schedule("constant", 4e-4, decay_start=10, decay_iters=4, rewarm=2, rewarm_start=10)
    assert [branch.lr_at(i) for i in range(10, 14)] == pytest.approx([2e-4, 3e-4, 2e-4, 1e-4])
    assert Schedule("constant", 4e-4, rewarm=4).lr_at(0) == 4e-4  # never continued from weights: no ramp
    with pytest.raises(ConfigError, match="rewarm_start"):
        Schedule("constant", 4e-4, rewarm=4, rewarm_start=-1)
    with pytest.raises(ConfigError, match="rewarm"):
        Schedule("constant", 4e-4, rewarm=-1)


# ----- training -------------------------------------------------------------------------------------------


def test_every_checkpoint_writes_the_continuation_file_matching_the_state(
    images: Path, tmp_path: Path
) -> None:
    cfg = _config(images, tmp_path / "run")
    train(cfg)
    state = load_state(tmp_path / "run" / "state.ckpt")
    continued = load_continuation(tmp_path / "run" / CONTINUATION_FILE)
    assert continued["iteration"] == state["iteration"] == 4
    assert TrainConfig.from_dict(continued["config"]) == cfg
    for key in ("model", "ema"):
        for name, value in state[key].items():
            assert torch.equal(continued[key][name], value.half().float())


def test_a_run_continues_from_its_weights_with_a_fresh_optimiser(images: Path, tmp_path: Path) -> None:
    cfg = _config(images, tmp_path / "run")
    train(cfg)
    start = load_continuation(tmp_path / "run" / CONTINUATION_FILE)
    (tmp_path / "run" / "state.ckpt").unlink()  # what a clone of the repository has

    with pytest.raises(ConfigError, match="--resume"):
        train(cfg)
    assert saved_config(cfg.out) == cfg.replace(workers=None)  # the configuration comes from the file
    trainer = Trainer(cfg.replace(iters=8), setup("cpu"), resume=True)
    assert trainer.iteration == 4
    for key, module in (("model", trainer.model), ("ema", trainer.ema.module)):
        assert all(torch.equal(module.state_dict()[k], v) for k, v in start[key].items())
    seen: list[tuple[int, float]] = []
    result = train(
        cfg.replace(iters=8, rewarm=3),
        resume=True,
        progress=lambda e: seen.append((e.iteration, e.lr)) if e.kind == "log" else None,
    )
    assert result.iteration == 8 and not result.stopped
    state = load_state(tmp_path / "run" / "state.ckpt")
    assert state["config"]["rewarm_start"] == 4 and state["config"]["rewarm"] == 3
    # Adam restarted: its step count is the steps since the continuation, not since iteration 0.
    assert {int(s["step"]) for s in state["optimizer"]["state"].values()} == {4}
    # The rate of step i (logged after it as the rate of the next step) ramps up from the continuation.
    assert seen[:4] == [(5, pytest.approx(2e-3 / 3)), (6, pytest.approx(1e-3)), (7, 1e-3), (8, 1e-3)]


def test_from_weights_ignores_a_present_state(images: Path, tmp_path: Path) -> None:
    cfg = _config(images, tmp_path / "run")
    train(cfg)
    result = train(cfg.replace(iters=5), resume=True, from_weights=True)
    assert result.iteration == 5
    assert load_state(tmp_path / "run" / "state.ckpt")["config"]["rewarm_start"] == 4
    # Without the file there is nothing to continue from weights.
    (tmp_path / "run" / CONTINUATION_FILE).unlink()
    with pytest.raises(ConfigError, match="no continuation file"):
        train(cfg.replace(iters=6), resume=True, from_weights=True)


def test_continuing_from_weights_refuses_another_network(images: Path, tmp_path: Path) -> None:
    cfg = _config(images, tmp_path / "run", iters=2)
    train(cfg)
    (tmp_path / "run" / "state.ckpt").unlink()
    with pytest.raises(ConfigError, match="another network"):
        train(cfg.replace(scale=3, iters=3), resume=True)


def test_a_state_written_before_the_file_existed_can_be_converted(images: Path, tmp_path: Path) -> None:
    cfg = _config(images, tmp_path / "run", iters=2)
    train(cfg)
    (tmp_path / "run" / CONTINUATION_FILE).unlink()
    path = continuation_from_state(tmp_path / "run")
    assert load_continuation(path)["iteration"] == 2


def test_a_decay_branch_starts_from_a_run_that_has_only_its_weights(images: Path, tmp_path: Path) -> None:
    cfg = _config(images, tmp_path / "main", iters=4)
    train(cfg)
    (tmp_path / "main" / "state.ckpt").unlink()
    branched = start_decay_branch(tmp_path / "main", tmp_path / "branch", 2)
    assert (branched.decay_start, branched.iters) == (4, 6)
    result = train(branched, resume=True)
    assert result.iteration == 6
    assert load_state(tmp_path / "branch" / "state.ckpt")["config"]["rewarm_start"] == 4


def test_mma_train_cli_continues_from_weights(images: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "cli"
    first = runner.invoke(
        app,
        ["train", "--preset", "cpu-tiny", "--data", str(images), "--iters", "2", "--patch", "8"]
        + ["--batch", "2", "--out", str(out), "--val-split", "1", "--save-every", "2"],
    )
    assert first.exit_code == 0, first.output
    shutil.copy(out / CONTINUATION_FILE, tmp_path / "kept.safetensors")
    more = runner.invoke(
        app, ["train", "--resume", "--out", str(out), "--iters", "3", "--from-weights", "--rewarm", "5"]
    )
    assert more.exit_code == 0, more.output
    assert "done: 3 iterations" in more.output
    assert load_state(out / "state.ckpt")["config"]["rewarm"] == 5
    missing = runner.invoke(app, ["train", "--resume", "--out", str(tmp_path / "none"), "--from-weights"])
    assert missing.exit_code == 1 and "error:" in missing.output


def test_a_stale_state_does_not_undo_a_newer_continuation_file(images: Path, tmp_path: Path) -> None:
    cfg = _config(images, tmp_path / "run", iters=2)
    train(cfg)
    shutil.copy(tmp_path / "run" / "state.ckpt", tmp_path / "old.ckpt")
    train(cfg.replace(iters=4), resume=True)
    shutil.copy(tmp_path / "old.ckpt", tmp_path / "run" / "state.ckpt")  # an older checkout's state, at 2
    trainer = Trainer(cfg.replace(iters=6), setup("cpu"), resume=True)
    assert trainer.iteration == 4 and trainer.cfg.rewarm_start == 4
