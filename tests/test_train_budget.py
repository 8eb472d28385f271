"""Training for a wall-clock budget: durations, the planning rule, a run that ends itself in time for its last
validation and save, and a timed release (main run, then a decay branch sized from the measured step). The
clock is injected and advanced by the run's own events, so nothing depends on this machine's speed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from mma.cli import app
from mma.errors import ConfigError
from mma.train import TrainConfig, TrainEvent, build_config, train
from mma.train.branch import train_then_branch
from mma.train.budget import MARGIN, SLACK_S, Budget, parse_duration
from mma.train.state import load_state


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("hr")
    rng = np.random.default_rng(2)
    for i in range(5):
        image = rng.integers(0, 256, (32 + 2 * i, 36, 3), dtype=np.uint8)
        Image.fromarray(image).save(folder / f"img{i}.png")
    return folder


def _config(images: Path, out: Path, **changes: object) -> TrainConfig:
    values = {
        "train": [str(images)],
        "model": {"num_feat": 8, "num_block": 1},
        "patch": 8,
        "batch": 2,
        "iters": 100,
        "schedule": "constant",
        "lr": 1e-3,
        "val_split": 1,
        "log_every": 1,
        "save_every": 1000,
        "val_every": 1000,
        "workers": 0,
        "out": str(out),
        **changes,
    }
    return build_config(overrides=values)


class FakeClock:
    """Seconds that pass only when the run reports a step (or a validation), by the amounts given."""

    def __init__(self, step_s: float, validation_s: float = 0.0) -> None:
        self.now, self.step_s, self.validation_s = 0.0, step_s, validation_s

    def __call__(self) -> float:
        return self.now

    def progress(self, event: TrainEvent) -> None:
        if event.kind == "step":
            self.now += self.step_s
        elif event.kind == "val":
            self.now += self.validation_s


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("840", 840), ("90s", 90), ("14m", 840), ("1h30m", 5400), ("1.5h", 5400), (" 2M ", 120)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "m", "14 m", "14x", "1h-3m", "0", "0s", "ten"])
def test_bad_durations_are_one_line_errors(text: str) -> None:
    with pytest.raises(ConfigError, match="duration|positive"):
        parse_duration(text)


def test_the_budget_keeps_a_step_a_validation_and_a_save_with_a_margin() -> None:
    clock = FakeClock(0)
    budget = Budget(100.0, clock)
    budget.steps.extend([3.0, 5.0, 4.0])  # the slowest recent step is planned with
    budget.validation_s, budget.save_s = 10.0, 2.0
    need = MARGIN * (5.0 + 10.0 + 2.0) + SLACK_S
    clock.now = 100.0 - need
    assert not budget.must_end(1, validate_now=False, save_now=False)
    clock.now += 0.01
    assert budget.must_end(1, validate_now=False, save_now=False)
    clock.now = 100.0 - need - 0.01 * MARGIN
    assert not budget.must_end(1, validate_now=False, save_now=False)
    assert budget.must_end(1, validate_now=True, save_now=False)  # a validation due now costs twice


def test_a_run_ends_itself_in_time_for_its_last_validation_and_save(images: Path, tmp_path: Path) -> None:
    clock = FakeClock(step_s=10.0, validation_s=20.0)
    result = train(_config(images, tmp_path / "run"), time_limit=100.0, clock=clock, progress=clock.progress)
    # Start: a timed validation (20 s) and save. Each step needs 1.25 * (10 + 20) + 2 = 39.5 s kept:
    # after step 4 (60 s) 40 s are left, after step 5 only 30, so the run ends there, validates, saves.
    assert result.out_of_time and not result.stopped
    assert (result.iteration, result.trained, result.step_seconds) == (5, 5, 10.0)
    assert clock.now == 90.0  # within the limit of 100
    assert load_state(tmp_path / "run" / "state.ckpt")["iteration"] == 5
    assert [v.name for v in result.validations] == ["held-out"]
    assert load_state(tmp_path / "run" / "state.ckpt")["validated_at"] == 5


def test_a_run_that_finishes_first_is_not_out_of_time(images: Path, tmp_path: Path) -> None:
    clock = FakeClock(step_s=1.0)
    result = train(_config(images, tmp_path / "run", iters=3), time_limit=1000.0, clock=clock)
    assert result.iteration == 3 and not result.out_of_time


def test_a_timed_release_sizes_its_branch_from_the_measured_step(images: Path, tmp_path: Path) -> None:
    clock = FakeClock(step_s=10.0)
    cfg = _config(images, tmp_path / "main")
    main, branch = train_then_branch(
        cfg, tmp_path / "branch", 100.0, share=0.35, clock=clock, progress=clock.progress
    )
    # The main run has 65 s: 14.5 s are kept after each 10-s step, so it ends after step 6 (60 s).
    assert (main.iteration, main.out_of_time) == (6, True)
    # 40 s left: floor((40 - 2) / (1.25 * 10)) = 3 steps of decay, 6 -> 9, which end by 90 s.
    assert branch is not None and branch.iteration == 9 and not branch.out_of_time
    saved = load_state(tmp_path / "branch" / "state.ckpt")["config"]
    assert (saved["decay_start"], saved["decay_iters"]) == (6, 3)
    assert clock.now == 90.0
    assert load_state(tmp_path / "main" / "state.ckpt")["iteration"] == 6  # the main run stays as it was


def test_no_branch_when_the_time_left_holds_no_step(images: Path, tmp_path: Path) -> None:
    clock = FakeClock(step_s=10.0)
    main, branch = train_then_branch(
        _config(images, tmp_path / "main"),
        tmp_path / "branch",
        40.0,
        share=0.1,
        clock=clock,
        progress=clock.progress,
    )
    assert branch is None and main.iteration >= 1
    with pytest.raises(ConfigError, match="share"):
        train_then_branch(_config(images, tmp_path / "x"), tmp_path / "y", 40.0, share=1.0)


def test_mma_train_cli_takes_a_time_limit(images: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "cli"
    args = [
        "train",
        "--preset",
        "cpu-tiny",
        "--data",
        str(images),
        "--iters",
        "2",
        "--patch",
        "8",
        "--batch",
        "2",
    ]
    result = runner.invoke(app, [*args, "--out", str(out), "--val-split", "1", "--time-limit", "10m"])
    assert result.exit_code == 0, result.output
    assert "done: 2 iterations in" in result.output
    bad = runner.invoke(app, [*args, "--out", str(tmp_path / "bad"), "--time-limit", "soon"])
    assert bad.exit_code == 1 and "error: not a duration" in bad.output
    release = runner.invoke(
        app,
        ["train", "--resume", "--out", str(out), "--decay-branch", str(tmp_path / "b"), "--time-limit", "1s"],
    )
    assert release.exit_code == 0, release.output
