"""The convolutional pieces of an MMA block: channel LayerNorm, channel-attention branch, gated-dconv FFN.

Attribute names follow the authors' checkpoints (e.g. `norm1.body.weight`, `cab.3.attention.1.weight`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def may_overwrite() -> bool:
    """True when no autograd graph is recorded and no exporter traces the forward: a layer may then write into
    the fresh tensors it made (one memory pass and no new allocation instead of two) and take the
    shape-dependent shortcuts of eager inference. Training, gradients of the input (LAM) and ONNX export
    keep the plain out-of-place graph."""
    return not torch.is_grad_enabled() and not exporting()


def exporting() -> bool:
    """True while TorchScript, torch.compile/torch.export or the ONNX exporter traces the forward."""
    if torch.jit.is_tracing() or torch.jit.is_scripting():
        return True
    return torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export()


class _BiasedLayerNorm(nn.Module):
    """LayerNorm over the last axis (biased variance, eps 1e-5); holds `weight` and `bias`."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, eps=1e-5)


class ChannelLayerNorm(nn.Module):
    """LayerNorm across channels at every pixel of a (B, C, H, W) map."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = _BiasedLayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation: global pool, bottleneck, sigmoid weights per channel."""

    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        hidden = max(channels // squeeze, 1)
        self.attention = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.attention(x)


class ChannelAttentionBranch(nn.Module):
    """conv 3x3 (C -> C/compress), exact GELU, conv 3x3 back to C, channel attention."""

    def __init__(self, channels: int, compress: int, squeeze: int) -> None:
        super().__init__()
        hidden = channels // compress
        self.cab = nn.Sequential(
            nn.Conv2d(channels, hidden, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(hidden, channels, 3, padding=1),
            ChannelAttention(channels, squeeze),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not may_overwrite():
            return self.cab(x)
        squeeze_in, gelu, squeeze_out, attention = self.cab
        y = squeeze_out(gelu(squeeze_in(x)))
        return y.mul_(attention.attention(y))  # ChannelAttention's product, into the conv's fresh output


class GatedDConvFFN(nn.Module):
    """1x1 expand to 2H, depthwise 3x3, GELU(x1) * x2, 1x1 back to C."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.project_in = nn.Conv2d(channels, hidden * 2, 1)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, 3, padding=1, groups=hidden * 2)
        self.project_out = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if may_overwrite():
            return self.project_out(self._gate_in_halves(x))
        x1, x2 = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(x1) * x2)

    def _gate_in_halves(self, x: torch.Tensor) -> torch.Tensor:
        """GELU(x1) * x2 with each half computed by its own convs (the same sums: every output channel of a
        1x1 or depthwise conv depends on its own weights only). A half cut from the joint channels-last
        output strides over the other half, and GELU on it took 4x as long as on a tensor of its own
        (docs/benchmarks.md, "CPU pace"); here both halves are dense and the gate is made in place."""
        hidden = self.dwconv.out_channels // 2
        halves = []
        for part in (slice(0, hidden), slice(hidden, 2 * hidden)):
            projected = F.conv2d(x, self.project_in.weight[part], _part(self.project_in.bias, part))
            halves.append(
                F.conv2d(
                    projected,
                    self.dwconv.weight[part],
                    _part(self.dwconv.bias, part),
                    padding=self.dwconv.padding,
                    groups=hidden,
                )
            )
        x1, x2 = halves
        return F.gelu(x1).mul_(x2)


def _part(bias: torch.Tensor | None, part: slice) -> torch.Tensor | None:
    return bias[part] if bias is not None else None


class ResidualConvBlock(nn.Module):
    """conv 3x3, ReLU, conv 3x3, plus the input: the 'w/ CNN' ablation's stand-in for the Vim branch."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)
