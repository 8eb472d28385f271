"""The MMA super-resolution network: shallow conv, a body of MetaFormer blocks, pixel-shuffle upsampler."""

from __future__ import annotations

import torch
from torch import nn

from mma.model.blocks import ChannelAttentionBranch, ChannelLayerNorm, GatedDConvFFN, ResidualConvBlock
from mma.model.config import MMAConfig
from mma.model.vim import VimBranch


class TokenMixer(nn.Module):
    """Sum of a spatial branch (Vim, or a residual CNN block in the ablation) and, unless ablated, the
    channel-attention branch, on the same normalised input."""

    def __init__(self, config: MMAConfig) -> None:
        super().__init__()
        c = config.num_feat
        spatial, _, attention = config.mixer.partition("+")
        if spatial == "vim":
            self.mamba = VimBranch(c, config.d_state, config.d_conv, config.expand)
        else:
            self.cnn = ResidualConvBlock(c)
        if attention:
            self.channel_attention = ChannelAttentionBranch(c, config.ca_compress, config.ca_squeeze)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.mamba(x) if hasattr(self, "mamba") else self.cnn(x)
        if hasattr(self, "channel_attention"):
            out = out + self.channel_attention(x)
        return out


class MMABlock(nn.Module):
    """x + mixer(norm1(x)), then x + ffn(norm2(x))."""

    def __init__(self, config: MMAConfig) -> None:
        super().__init__()
        self.norm1 = ChannelLayerNorm(config.num_feat)
        self.attn = TokenMixer(config)
        self.norm2 = ChannelLayerNorm(config.num_feat)
        self.ffn = GatedDConvFFN(config.num_feat, config.ffn_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


def _upsampler(scale: int, channels: int) -> nn.Sequential:
    """x2/x4: [conv C->4C, PixelShuffle(2)] per factor 2; x3: conv C->9C, PixelShuffle(3)."""
    if scale == 3:
        return nn.Sequential(nn.Conv2d(channels, 9 * channels, 3, padding=1), nn.PixelShuffle(3))
    layers: list[nn.Module] = []
    for _ in range(scale.bit_length() - 1):
        layers += [nn.Conv2d(channels, 4 * channels, 3, padding=1), nn.PixelShuffle(2)]
    return nn.Sequential(*layers)


class MMA(nn.Module):
    """(B, 3, H, W) in [0, 1] -> (B, 3, scale*H, scale*W); any H, W >= 1."""

    def __init__(self, config: MMAConfig) -> None:
        super().__init__()
        self.config = config
        c = config.num_feat
        self.conv_first = nn.Conv2d(3, c, 3, padding=1)
        self.body = nn.Sequential(*(MMABlock(config) for _ in range(config.num_block)))
        self.conv_after_body = nn.Conv2d(c, c, 3, padding=1)
        self.upsample = _upsampler(config.scale, c)
        self.conv_last = nn.Conv2d(c, 3, 3, padding=1)

    @property
    def scale(self) -> int:
        return self.config.scale

    def set_scan_backend(self, backend: str | None) -> MMA:
        """Force a selective-scan backend ("numba", "torch", "mamba-ssm", "triton", "export") for every layer; None = automatic."""
        for module in self.modules():
            if hasattr(module, "scan_backend"):
                module.scan_backend = backend
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        img_range = self.config.img_range
        # Channels-last activations throughout: oneDNN's convs run faster in that layout (docs/benchmarks.md,
        # "Whole network"), LayerNorm over channels needs no copy, and the Vim branch's (B, L, C) tokens are a plain
        # view of the feature map.
        x = x.contiguous(memory_format=torch.channels_last)
        # Built per call in the input's dtype: a float32 buffer would round the mean for float64 runs.
        mean = torch.tensor(self.config.rgb_mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        shallow = self.conv_first((x - mean) * img_range)
        deep = self.conv_after_body(self.body(shallow)) + shallow
        return self.conv_last(self.upsample(deep)) / img_range + mean
