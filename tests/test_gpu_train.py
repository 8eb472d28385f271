"""benchmarks/gpu_train.py: the rule that picks the GPU training configuration, and the branch length."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gpu_train(load_script):
    return load_script("benchmarks/gpu_train.py")


def sweep(gpu_train, seconds):
    """Measured results from {(batch, patch): seconds per step or None}."""
    return [gpu_train.Measured(b, p, s) for (b, p), s in seconds.items()]


def test_learning_rate_scales_with_the_batch_up_to_the_cap(gpu_train):
    assert gpu_train.scaled_lr(16) == pytest.approx(2.5e-4)
    assert gpu_train.scaled_lr(8) == pytest.approx(1.25e-4)
    assert gpu_train.scaled_lr(32) == pytest.approx(5e-4)
    assert gpu_train.scaled_lr(64) == pytest.approx(5e-4)  # capped


def test_picks_the_most_pixels_per_second_and_never_a_batch_above_64(gpu_train):
    measured = sweep(
        gpu_train,
        {
            (16, 48): 0.10,  # 160 patches/s, 90 64x64-equivalents/s
            (16, 64): 0.12,  # 133 patches/s, 133 equivalents/s
            (64, 48): 0.20,  # 320 patches/s, 180 equivalents/s
            (64, 64): 0.30,  # 213 patches/s, 213 equivalents/s: the pick
            (128, 64): 0.40,  # 320 equivalents/s, but batch 128 is never chosen
        },
    )
    choice = gpu_train.pick(measured)
    assert (choice.batch, choice.patch, choice.lr) == (64, 64, pytest.approx(5e-4))
    # More patches per second alone does not win: (64, 48) makes 320 patches/s of fewer pixels each.
    assert measured[2].patches_per_s > measured[3].patches_per_s


def test_a_near_tie_goes_to_the_smaller_batch_and_failures_are_skipped(gpu_train):
    measured = sweep(
        gpu_train,
        {
            (16, 64): 0.100,  # 160 equivalents/s
            (32, 64): 0.195,  # 164: within 5% of it
            (64, 64): None,  # out of memory, say
        },
    )
    choice = gpu_train.pick(measured)
    assert (choice.batch, choice.patch, choice.lr) == (16, 64, pytest.approx(2.5e-4))
    with pytest.raises(ValueError, match="no configuration"):
        gpu_train.pick(sweep(gpu_train, {(64, 64): None, (128, 64): 0.1}))


def test_branch_length_is_a_share_of_the_run_bounded_by_time(gpu_train):
    # 20% of 4000 iterations = 800 steps, with time for 2000.
    assert gpu_train.branch_length(4000, 250, 0.1, 25, 300) == 800
    # A short run still gets the minimum ...
    assert gpu_train.branch_length(500, 250, 0.1, 25, 300) == 300
    # ... unless time is shorter: (60 - 25) / (0.1 * 1.1) = 318 steps fit.
    assert gpu_train.branch_length(4000, 60, 0.1, 25, 300) == 318
    assert gpu_train.branch_length(4000, 10, 0.1, 25, 300) == 1


@pytest.mark.slow
@pytest.mark.parametrize("mode", [[], ["--parallel"]], ids=["one-after-another", "side-by-side"])
def test_rehearsal_runs_end_to_end_on_copies(tmp_path, mode):
    """The whole job on the CPU at tiny sizes, on a copy of a committed run (minutes)."""
    run = REPO / "weights" / "training" / "mma-t-x4"
    env = {**os.environ, "OUT": str(tmp_path), "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    before = (run / "state.ckpt").read_bytes()
    done = subprocess.run(
        [sys.executable, "benchmarks/gpu_train.py", "--rehearse", *mode, str(run)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (run / "state.ckpt").read_bytes() == before  # the committed run is never touched
    back = sorted(p.name for p in tmp_path.iterdir())
    assert back == ["gpu_train.json", "gpu_train.log", "mma-t-x4.state.ckpt", "mma-t-x4.tar"]
    assert "(unfinished)" not in done.stdout
