"""Training for a wall-clock budget: stop early enough that the last validation and save still fit.

Why planned rather than killed: a batch job with a time limit (Slurm's `--time`, a cloud instance, a timer)
kills what is still running at its end, and whatever was trained after the last checkpoint is lost. The
trainer knows what its steps, validations and saves cost (it measures them), so it can end the run itself
while the work that must come last still fits: after every step it compares the time left with what the
next step(s), a validation and a save take, with a margin.
"""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from mma.errors import ConfigError

MARGIN = 1.25  # on every measured cost: steps and saves vary, and the end must not be missed
SLACK_S = 2.0  # seconds kept besides, for the process's own exit
RECENT_STEPS = 20  # the step time planned with is the slowest of these

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """Seconds in '840', '90s', '14m', '1h30m' or '1.5h'; a ConfigError names anything else."""
    spec = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d*)?", spec):
        seconds = float(spec)
    else:
        parts = re.findall(r"(\d+(?:\.\d*)?)([smhd])", spec)
        if not parts or "".join(n + u for n, u in parts) != spec:
            raise ConfigError(f"not a duration: {text!r} (examples: 840, 90s, 14m, 1h30m)")
        seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if not seconds > 0:
        raise ConfigError(f"a time limit must be positive, got {text!r}")
    return seconds


@dataclass
class Budget:
    """The clock of one run: its deadline, and the measured costs of a step, a validation and a save."""

    seconds: float
    clock: Callable[[], float] = time.monotonic
    start: float = field(init=False)
    steps: deque[float] = field(init=False, default_factory=lambda: deque(maxlen=RECENT_STEPS))
    validation_s: float = 0.0
    save_s: float = 0.0

    def __post_init__(self) -> None:
        self.start = self.clock()

    def elapsed(self) -> float:
        return self.clock() - self.start

    def left(self) -> float:
        return self.seconds - self.elapsed()

    def step_s(self) -> float | None:
        """The slowest recent step (None before the first)."""
        return max(self.steps) if self.steps else None

    def must_end(self, steps_ahead: int, validate_now: bool, save_now: bool) -> bool:
        """True when, after `steps_ahead` more steps (and this iteration's validation and save, if due),
        a final validation and save would no longer fit."""
        step = self.step_s() or 0.0
        need = steps_ahead * step + self.validation_s * (1 + validate_now) + self.save_s * (1 + save_now)
        return self.left() < MARGIN * need + SLACK_S
