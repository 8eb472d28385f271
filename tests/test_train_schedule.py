"""The learning-rate schedule as a function of the iteration: step decay against torch's MultiStepLR,
warm-up, constant, decay branches, and when a changed schedule still resumes exactly."""

from __future__ import annotations

import pytest
import torch

from mma.errors import ConfigError
from mma.train.schedule import Schedule, same_rates


def _torch_multistep(lr: float, milestones: list[int], gamma: float, steps: int) -> list[float]:
    """The rate of each step as torch's MultiStepLR sets it (the reference for the closed form)."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma)
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


@pytest.mark.parametrize("gamma", [0.5, 0.3])
def test_multistep_matches_torch_multisteplr(gamma: float) -> None:
    schedule = Schedule("multistep", 5e-4, (3, 7, 8), gamma)
    expected = _torch_multistep(5e-4, [3, 7, 8], gamma, 12)
    assert [schedule.lr_at(i) for i in range(12)] == pytest.approx(expected, rel=1e-12)
    assert schedule.lr_at(10**6) == pytest.approx(5e-4 * gamma**3)


def test_constant_warms_up_linearly_then_stays() -> None:
    schedule = Schedule("constant", 2e-4, milestones=(2, 3), warmup=4)  # milestones: multistep only
    assert [schedule.lr_at(i) for i in range(6)] == pytest.approx([5e-5, 1e-4, 1.5e-4, 2e-4, 2e-4, 2e-4])
    assert schedule.lr_at(10**7) == 2e-4
    assert Schedule("constant", 2e-4).lr_at(0) == 2e-4  # no warm-up


def test_a_decay_branch_falls_linearly_from_the_main_rate_to_zero() -> None:
    branch = Schedule("constant", 4e-4, warmup=10, decay_start=100, decay_iters=4)
    assert branch.decay_end == 104
    assert branch.lr_at(99) == 4e-4
    assert [branch.lr_at(i) for i in range(100, 106)] == pytest.approx([4e-4, 3e-4, 2e-4, 1e-4, 0, 0])
    # From a step-decayed main curve, the branch starts at that curve's rate at decay_start.
    stepped = Schedule("multistep", 4e-4, (50,), 0.5, decay_start=60, decay_iters=2)
    assert [stepped.lr_at(i) for i in (49, 50, 60, 61, 62)] == pytest.approx([4e-4, 2e-4, 2e-4, 1e-4, 0])
    # A branch inside the warm-up decays from the warmed-up rate reached there.
    early = Schedule("constant", 4e-4, warmup=10, decay_start=4, decay_iters=5)
    assert early.lr_at(4) == pytest.approx(2e-4) and early.lr_at(9) == 0


def test_same_rates_tells_whether_a_resume_stays_exact() -> None:
    main = Schedule("constant", 1e-3, warmup=3)
    assert same_rates(main, Schedule("constant", 1e-3, warmup=3, decay_start=20, decay_iters=5), 20)
    assert not same_rates(main, Schedule("constant", 1e-3, warmup=3, decay_start=18, decay_iters=5), 20)
    assert not same_rates(main, Schedule("constant", 2e-3, warmup=3), 1)
    steps = Schedule("multistep", 1e-3, (10, 20))
    assert same_rates(steps, Schedule("multistep", 1e-3, (10, 30)), 20)  # the changed milestone is ahead
    assert not same_rates(steps, Schedule("multistep", 1e-3, (15, 30)), 20)  # rescaled: steps 10..14 differ


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"kind": "cosine"}, "unknown schedule"),
        ({"lr": 0.0}, "lr must be positive"),
        ({"milestones": (5, 3)}, "milestones"),
        ({"gamma": 0.0}, "gamma"),
        ({"warmup": -1}, "warmup"),
        ({"decay_start": 10}, "both decay_start and decay_iters"),
        ({"decay_iters": 10}, "both decay_start and decay_iters"),
        ({"decay_start": -1, "decay_iters": 3}, "decay_start"),
    ],
)
def test_invalid_schedules_are_config_errors(bad: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Schedule(**bad)
