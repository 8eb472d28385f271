"""Exponential moving average of a network's weights (the weights the paper evaluates and we export).

Why a separate copy: the averaged network smooths out the noise of the last optimiser steps and usually
scores a few hundredths of a dB higher than the raw weights; BasicSR keeps it as `params_ema`.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn


class EMA:
    """`ema = decay * ema + (1 - decay) * weights` after every step; buffers are copied as they are."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        ema_params = list(self.module.parameters())
        params = [p.detach() for p in model.parameters()]
        # lerp_(ema, p, 1 - decay) == decay * ema + (1 - decay) * p, in one pass per tensor group.
        torch._foreach_lerp_(ema_params, params, 1.0 - self.decay)
        for ema_buffer, buffer in zip(self.module.buffers(), model.buffers()):
            ema_buffer.copy_(buffer)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.module.load_state_dict(state)
