"""Exponential moving average of a network's weights (the weights the paper evaluates and we export).

Why a separate copy: the averaged network smooths out the noise of the last optimiser steps and usually
scores a few hundredths of a dB higher than the raw weights; BasicSR keeps it as `params_ema`.

Why a warm-up: with a fixed decay of 0.999 the average still holds 0.999^n of the random initialisation
after n steps (39% after 928), so a short run's EMA is far worse than its weights. The decay used at update
n is min(decay, (1 + n) / (10 + n)): it follows the weights closely at first and reaches 0.999 after about
9,000 steps, when the full-length average is meaningful.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn


def warmed_decay(decay: float, updates: int) -> float:
    """The decay for the update that follows `updates` earlier ones."""
    return min(decay, (1.0 + updates) / (10.0 + updates))


class EMA:
    """`ema = d * ema + (1 - d) * weights` after every step, d = warmed_decay; buffers are copied as they are."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, updates: int) -> None:
        """Average in `model` after `updates` earlier updates (the training iteration, so resume is exact)."""
        decay = warmed_decay(self.decay, updates)
        ema_params = list(self.module.parameters())
        params = [p.detach() for p in model.parameters()]
        # lerp_(ema, p, 1 - decay) == decay * ema + (1 - decay) * p, in one pass per tensor group.
        torch._foreach_lerp_(ema_params, params, 1.0 - decay)
        for ema_buffer, buffer in zip(self.module.buffers(), model.buffers()):
            ema_buffer.copy_(buffer)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.module.load_state_dict(state)
