"""The bidirectional Mamba layer of Vision Mamba ("v2"), over a raster-flattened feature map.

The arithmetic of the selective scan and the causal conv lives in `mma.ops`; this module only holds the
parameters (named as in the authors' checkpoints) and wires the two scan directions together.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mma import ops
from mma.model.blocks import may_overwrite


def _init_dt_proj(
    dt_proj: nn.Linear, dt_rank: int, dt_min: float = 1e-3, dt_max: float = 0.1, dt_floor: float = 1e-4
) -> None:
    """Mamba's initialisation: softplus(bias) log-uniform in [dt_min, dt_max], weight uniform in +-R^-0.5."""
    nn.init.uniform_(dt_proj.weight, -(dt_rank**-0.5), dt_rank**-0.5)
    d_inner = dt_proj.bias.shape[0]
    dt = torch.exp(torch.rand(d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
    dt = dt.clamp(min=dt_floor)
    with torch.no_grad():
        dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse of softplus


def _at_least_fp32(t: torch.Tensor) -> torch.Tensor:
    """Scan parameters stay in fp32 (or fp64) when the activations are fp16/bf16, as in mamba-ssm."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def _a_log_init(d_inner: int, d_state: int) -> torch.Tensor:
    return torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(d_inner, 1)


class BiMamba(nn.Module):
    """Bidirectional selective-scan layer: (B, L, C) -> (B, L, C); the two directions are summed."""

    def __init__(
        self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2, dt_rank: int | None = None
    ) -> None:
        super().__init__()
        d_inner = expand * d_model
        self.d_inner = d_inner
        self.d_state = d_state
        self.dt_rank = dt_rank or math.ceil(d_model / 16)
        self.scan_backend: str | None = None  # None = automatic choice in mma.ops

        self.A_log = nn.Parameter(_a_log_init(d_inner, d_state))
        self.D = nn.Parameter(torch.ones(d_inner))
        self.A_b_log = nn.Parameter(_a_log_init(d_inner, d_state))
        self.D_b = nn.Parameter(torch.ones(d_inner))

        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=False)
        self.conv1d = nn.Conv1d(d_inner, d_inner, d_conv, groups=d_inner, padding=d_conv - 1)
        self.x_proj = nn.Linear(d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, d_inner, bias=True)
        self.conv1d_b = nn.Conv1d(d_inner, d_inner, d_conv, groups=d_inner, padding=d_conv - 1)
        self.x_proj_b = nn.Linear(d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj_b = nn.Linear(self.dt_rank, d_inner, bias=True)
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)
        _init_dt_proj(self.dt_proj, self.dt_rank)
        _init_dt_proj(self.dt_proj_b, self.dt_rank)

    def _scan_args(
        self,
        x: torch.Tensor,
        z: torch.Tensor,
        conv: nn.Conv1d,
        x_proj: nn.Linear,
        dt_proj: nn.Linear,
        a_log: torch.Tensor,
        d_skip: torch.Tensor,
        reverse: bool,
    ) -> ops.ScanArgs:
        """One scan direction's inputs from x, z (B, Di, L): causal conv, then delta, B, C from x_proj."""
        u = ops.causal_conv1d(
            x,
            conv.weight.squeeze(1),
            conv.bias,
            activation="silu",
            reverse=reverse,
            backend=self.scan_backend,
        )
        dt, b, c = x_proj(u.transpose(1, 2)).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = (dt @ dt_proj.weight.t()).transpose(1, 2)
        return ops.ScanArgs(
            u,
            delta,
            -torch.exp(_at_least_fp32(a_log)),
            b.transpose(1, 2),
            c.transpose(1, 2),
            _at_least_fp32(d_skip),
            z=z,
            delta_bias=_at_least_fp32(dt_proj.bias),
            delta_softplus=True,
            reverse=reverse,
        )

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if may_overwrite():
            # x and z as two products with halves of in_proj's weight: each (B, L, Di) result is contiguous, so
            # its transpose is already the channels-last sequence the causal conv takes (a chunk of the joint
            # product would be copied there), and the two directions' sum goes into the first one's output.
            x_weight, z_weight = self.in_proj.weight.chunk(2, dim=0)
            x = F.linear(tokens, x_weight).transpose(1, 2)
            z = F.linear(tokens, z_weight).transpose(1, 2)
        else:
            x, z = self.in_proj(tokens).transpose(1, 2).chunk(2, dim=1)
        forward_args = self._scan_args(
            x, z, self.conv1d, self.x_proj, self.dt_proj, self.A_log, self.D, reverse=False
        )
        flip = may_overwrite() and x.device.type == "cpu"
        if flip:
            # The backward direction as a forward scan of the time-flipped sequence (the same sums): a CPU
            # walks memory upwards about twice as fast as downwards, and three flips cost less than the
            # difference (docs/benchmarks.md, "CPU pace").
            backward_args = self._scan_args(
                x.flip(-1),
                z.flip(-1),
                self.conv1d_b,
                self.x_proj_b,
                self.dt_proj_b,
                self.A_b_log,
                self.D_b,
                reverse=False,
            )
        else:
            backward_args = self._scan_args(
                x, z, self.conv1d_b, self.x_proj_b, self.dt_proj_b, self.A_b_log, self.D_b, reverse=True
            )
        # the two directions as one pair: a CPU backend runs them side by side on its threads
        y, y_b = ops.selective_scan_pair(forward_args, backward_args, backend=self.scan_backend)
        if flip:
            y_b = y_b.flip(-1)
        both = y.add_(y_b) if may_overwrite() else y + y_b
        return self.out_proj(both.transpose(1, 2))


class VimBranch(nn.Module):
    """Flattens (B, C, H, W) in raster order to L = H*W tokens, runs BiMamba, folds back."""

    def __init__(self, channels: int, d_state: int, d_conv: int, expand: int) -> None:
        super().__init__()
        self.mamba = BiMamba(channels, d_state=d_state, d_conv=d_conv, expand=expand)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)
        return self.mamba(tokens).transpose(1, 2).reshape(b, c, h, w)
