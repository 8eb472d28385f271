"""The learning rate as a pure function of the iteration: step decay, or warm-up then constant, plus an
optional decay branch.

Why closed form: the rate of step `i` depends on the recipe and `i` alone, never on a scheduler's running
state, so a resumed run is exact without restoring any scheduler, a longer run just evaluates the same
function further, and a decay branch is one more term of the recipe rather than a surgery on the optimiser.

Kinds:
- "multistep": `lr`, multiplied by `gamma` at each of `milestones` (the paper's MultiStepLR);
- "constant": `lr` for ever, the schedule of an open-ended main run.
Both ramp linearly from lr / warmup to lr over the first `warmup` iterations (0: no warm-up).

A decay branch (`decay_start`, `decay_iters`) follows the main curve up to `decay_start`, then falls
linearly from the main rate at `decay_start` to 0 at `decay_start + decay_iters` (step `decay_start + j`
uses main * (1 - j / decay_iters)). Linear to zero is the simplest cool-down that ends fully decayed, and
short linear cool-downs are known to match a full cosine schedule.

A re-warm-up (`rewarm_start`, `rewarm`) multiplies every rate, branch included, by a linear ramp from
1 / rewarm to 1 over `rewarm` steps from `rewarm_start`: a run continued from its weights alone starts with
a fresh optimiser, whose first steps would otherwise be as large as the rate allows in every direction.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass

from mma.errors import ConfigError

KINDS = ("multistep", "constant")


@dataclass(frozen=True)
class Schedule:
    kind: str = "multistep"
    lr: float = 2e-4
    milestones: tuple[int, ...] = ()
    gamma: float = 0.5
    warmup: int = 0
    decay_start: int | None = None
    decay_iters: int = 0
    rewarm: int = 0
    rewarm_start: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"unknown schedule {self.kind!r}: choose one of {', '.join(KINDS)}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be positive, got {self.lr!r}")
        if list(self.milestones) != sorted(set(self.milestones)) or any(m < 1 for m in self.milestones):
            raise ConfigError(
                f"milestones must be increasing positive iterations, got {list(self.milestones)}"
            )
        if not 0 < self.gamma <= 1:
            raise ConfigError(f"need 0 < gamma <= 1, got gamma={self.gamma}")
        for name in ("warmup", "decay_iters", "rewarm"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"{name} must be a non-negative integer, got {value!r}")
        if (self.decay_start is None) != (self.decay_iters == 0):
            raise ConfigError("a decay branch needs both decay_start and decay_iters > 0 (or neither)")
        if self.decay_start is not None and (isinstance(self.decay_start, bool) or self.decay_start < 0):
            raise ConfigError(f"decay_start must be a non-negative iteration, got {self.decay_start!r}")
        if self.rewarm_start is not None and (isinstance(self.rewarm_start, bool) or self.rewarm_start < 0):
            raise ConfigError(f"rewarm_start must be a non-negative iteration, got {self.rewarm_start!r}")

    @property
    def decay_end(self) -> int | None:
        """The iteration at which the branch reaches 0 (None without a branch)."""
        return None if self.decay_start is None else self.decay_start + self.decay_iters

    def main_lr(self, iteration: int) -> float:
        """The rate of step `iteration` (0-based: the step that makes iteration + 1) on the main curve."""
        lr = self.lr
        if self.kind == "multistep":
            lr *= self.gamma ** bisect_right(self.milestones, iteration)
        if iteration < self.warmup:
            lr *= (iteration + 1) / self.warmup
        return lr

    def lr_at(self, iteration: int) -> float:
        """The rate of step `iteration`, the decay branch and a re-warm-up included."""
        if self.decay_start is None or iteration < self.decay_start:
            lr = self.main_lr(iteration)
        else:
            left = max(0, self.decay_start + self.decay_iters - iteration)
            lr = self.main_lr(self.decay_start) * left / self.decay_iters
        if self.rewarm_start is not None and self.rewarm_start <= iteration < self.rewarm_start + self.rewarm:
            lr *= (iteration - self.rewarm_start + 1) / self.rewarm
        return lr


def same_rates(a: Schedule, b: Schedule, iterations: int) -> bool:
    """True when the steps 0 .. iterations - 1 have the same rates under both (a resume is then exact)."""
    return all(a.lr_at(i) == b.lr_at(i) for i in range(iterations))
